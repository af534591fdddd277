package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/runtime/client"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/store/sqlite"
)

// In embedded mode an acknowledgement means the operation is in SQLite: a
// SIGKILL right after acks (no shutdown flush) loses none of them. The
// flush interval is far beyond the test, so only the commit before each
// ack can have stored them.
func TestSIGKILLLosesNoAcknowledgedOperation(t *testing.T) {
	bin := buildBinary(t)
	dataDir := t.TempDir()
	args := []string{"--addr", "127.0.0.1:0", "--data-dir", dataDir, "--auth", "jwt",
		"--flush-interval", "1h", "--flush-batch", "100000", "--ops-per-second", "100000"}
	p := start(t, bin, args...)
	docs := []string{"crash-a", "crash-b"}
	token := mint(t, bin, "--sub", "alice", "--doc", "crash-*", "--perm", "write", "--ttl", "1h")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const writers = 8
	cs := make([]*client.Client, writers)
	ids := make([]string, writers)
	for i := range cs {
		ids[i] = fmt.Sprintf("w%d", i)
		url := "ws" + strings.TrimPrefix(p.base, "http") + "/v1/docs/" + docs[i%len(docs)] + "/ws"
		cs[i] = client.New(client.Options{URL: url, Token: token, ClientID: ids[i]})
		t.Cleanup(cs[i].Close)
		if err := cs[i].Connect(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Every writer types as fast as acks come back (one operation in
	// flight, the rest buffered), until the process dies under it.
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; c.Connected(); n++ {
				err := c.EditFunc(func(text string) ot.Op {
					return ot.Op{{Insert: fmt.Sprintf("%d.%d ", i, n)}}
				})
				if err != nil {
					return
				}
				if n%4 == 3 {
					wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
					_ = c.WaitFor(wctx, func() bool { return c.Synced() || !c.Connected() })
					wcancel()
				}
			}
		}()
	}
	// Let a few hundred acks arrive, then kill it in the middle of the flow.
	deadline := time.Now().Add(30 * time.Second)
	for {
		acked := 0
		for _, c := range cs {
			acked += len(c.Acks())
		}
		if acked >= 400 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d acks in 30 s", acked)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	wg.Wait()
	for _, c := range cs {
		c.Close()
	}
	// Every ack any client received was sent before the process died.
	type key struct {
		doc, client string
		seq         int64
	}
	acked := map[key]int64{}
	for i, c := range cs {
		for _, a := range c.Acks() {
			acked[key{docs[i%len(docs)], ids[i], a.Seq}] = a.Rev
		}
	}
	t.Logf("%d operations acknowledged before SIGKILL", len(acked))

	// Restart on the same data: the documents are at least at every
	// acknowledged revision.
	p = start(t, bin, args...)
	maxRev := map[string]int64{}
	for k, rev := range acked {
		maxRev[k.doc] = max(maxRev[k.doc], rev)
	}
	for _, doc := range docs {
		if rev, _ := getDoc(t, p.base, doc, token); rev < maxRev[doc] {
			t.Errorf("%s restarted at rev %d; revision %d was acknowledged", doc, rev, maxRev[doc])
		}
	}
	p.stop(t)

	// And each acknowledged operation is stored at its revision.
	st, err := sqlite.Open(ctx, dataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	stored := map[key]int64{}
	for _, doc := range docs {
		ops, err := st.Ops(ctx, doc, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ops {
			stored[key{doc, e.Client, e.Seq}] = e.Rev
		}
	}
	lost := 0
	for k, rev := range acked {
		if got, ok := stored[k]; !ok || got != rev {
			lost++
			if lost <= 5 {
				t.Errorf("%s: operation %d of %s acknowledged as rev %d, stored: %v at %d", k.doc, k.seq, k.client, rev, ok, got)
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged operations lost to SIGKILL", lost, len(acked))
	}
}
