package server_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tandem-dev/tandem/runtime/client"
	"github.com/tandem-dev/tandem/runtime/ot"
)

// randomEdit returns an insert or delete at a random place in text.
func randomEdit(rng *rand.Rand, text string) ot.Op {
	n := utf8.RuneCountInString(text)
	pieces := []string{"a", "bc", "xyz", " ", "é", "😀", "👩‍💻", "\n", "日本", "🇫🇷"}
	if n == 0 || rng.IntN(3) > 0 {
		pos := rng.IntN(n + 1)
		op := ot.Op{}
		if pos > 0 {
			op = append(op, ot.Component{Retain: pos})
		}
		op = append(op, ot.Component{Insert: pieces[rng.IntN(len(pieces))]})
		if rest := n - pos; rest > 0 && rng.IntN(2) == 0 {
			op = append(op, ot.Component{Retain: rest}) // sometimes explicit, sometimes omitted
		}
		return op
	}
	pos := rng.IntN(n)
	del := 1 + rng.IntN(min(3, n-pos))
	op := ot.Op{}
	if pos > 0 {
		op = append(op, ot.Component{Retain: pos})
	}
	return append(op, ot.Component{Delete: del})
}

func TestConvergence(t *testing.T) {
	const (
		clients   = 24
		perClient = 130 // 3120 operations in all
	)
	s := newStack(t, stackOptions{jwt: true, limits: highLimits()})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	docID := "converge"

	cs := make([]*client.Client, clients)
	for i := range cs {
		cs[i] = s.client(ctx, docID, fmt.Sprintf("c%02d", i))
	}
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	var reconnects sync.Map
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 42))
			for n := 0; n < perClient; n++ {
				if !c.Connected() {
					if err := c.Connect(ctx); err != nil {
						errs <- fmt.Errorf("client %d reconnect: %w", i, err)
						return
					}
				}
				if err := c.EditFunc(func(text string) ot.Op { return randomEdit(rng, text) }); err != nil {
					errs <- fmt.Errorf("client %d edit: %w", i, err)
					return
				}
				time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
				if rng.IntN(4) > 0 {
					// Mostly wait for the ack, so most edits become their
					// own revision; the rest pile up in the buffer and are
					// composed, which exercises that path too.
					wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
					_ = c.WaitFor(wctx, func() bool { return c.Synced() || !c.Connected() })
					wcancel()
				}
				if rng.IntN(40) == 0 {
					// Drop the connection with whatever is in flight; the
					// next Connect resumes and resubmits it.
					c.Disconnect()
					v, _ := reconnects.LoadOrStore(i, new(int))
					*(v.(*int))++
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, c := range cs {
		if !c.Connected() {
			if err := c.Connect(ctx); err != nil {
				t.Fatalf("client %d final connect: %v", i, err)
			}
		}
		if err := c.WaitSynced(ctx, -1); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	head := s.doc(docID).Rev
	for i, c := range cs {
		if err := c.WaitSynced(ctx, head); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	server := s.doc(docID)
	if server.Rev != head {
		t.Fatalf("document moved after all clients were synced: %d -> %d", head, server.Rev)
	}
	for i, c := range cs {
		if got := c.Text(); got != server.Text {
			t.Fatalf("client %d diverged at rev %d:\nclient %q\nserver %q", i, c.Rev(), got, server.Text)
		}
	}

	// Every acknowledged operation is in the history exactly once, at the
	// acknowledged revision, and the history replays to the text.
	hist := s.history(docID)
	if int64(len(hist)) != server.Rev {
		t.Fatalf("history has %d entries, document is at rev %d", len(hist), server.Rev)
	}
	type key struct {
		client string
		seq    int64
	}
	seen := map[key]int64{}
	text := ""
	for i, e := range hist {
		if e.Rev != int64(i+1) {
			t.Fatalf("history entry %d has rev %d", i, e.Rev)
		}
		k := key{e.Client, e.Seq}
		if prev, dup := seen[k]; dup {
			t.Fatalf("operation %v committed twice: revs %d and %d", k, prev, e.Rev)
		}
		seen[k] = e.Rev
		var err error
		if text, err = ot.Apply(text, e.Op); err != nil {
			t.Fatalf("replay rev %d: %v", e.Rev, err)
		}
	}
	if text != server.Text {
		t.Fatalf("history replays to %q, document is %q", text, server.Text)
	}
	acked := 0
	for i, c := range cs {
		for _, a := range c.Acks() {
			acked++
			rev, ok := seen[key{fmt.Sprintf("c%02d", i), a.Seq}]
			if !ok || rev != a.Rev {
				t.Fatalf("client %d op %d acked as rev %d, history has rev %d (present %v)", i, a.Seq, a.Rev, rev, ok)
			}
		}
	}
	total := 0
	reconnects.Range(func(_, v any) bool { total += *(v.(*int)); return true })
	t.Logf("%d clients, %d revisions, %d acks, %d reconnects, %d chars", clients, server.Rev, acked, total, utf8.RuneCountInString(server.Text))
	if server.Rev < 2000 {
		t.Fatalf("only %d revisions for %d edits: want a few thousand committed operations", server.Rev, clients*perClient)
	}
	if total == 0 {
		t.Fatal("no reconnects happened; the test did not exercise resubmission")
	}
}
