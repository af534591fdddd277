package redisstore_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/redisstore"
)

// TestWaitKeepsAcknowledgedCommitsThroughFailover makes Redis's
// asynchronous replication lose a write on purpose: the replica of the
// document's master is paused (SIGSTOP) and its replication link cut, so
// the master holds the next commit alone; then the master is killed (the
// commit's only copy goes with it), the replica resumed and promoted.
// Without WAIT that commit was acknowledged and is gone after the
// failover. With WAIT 1 the same commit is not acknowledged (the writer
// gets an error, and a client retries it), and a commit WAIT did
// acknowledge survives the failover. No flusher runs, so Redis holds the
// only copy.
func TestWaitKeepsAcknowledgedCommitsThroughFailover(t *testing.T) {
	e := newClusterEnv(t)
	ctx := testCtx(t)
	for i, tc := range []struct {
		name         string
		waitReplicas int // -1: no WAIT
		cut          bool
		wantAcked    bool
		wantKept     bool
	}{
		{"no WAIT, replication cut: acknowledged, then lost", -1, true, true, false},
		{"WAIT 1, replication cut: not acknowledged", 1, true, false, false},
		{"WAIT 1: acknowledged and kept", 1, false, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := fmt.Sprintf("wait%d", i)
			key := "tandem:{doc:" + doc + "}:meta"
			w := e.replica(redisstore.Options{NoFlusher: true, WaitReplicas: tc.waitReplicas, WaitTimeout: time.Second})
			entry := func(rev int64, s string) []store.Entry {
				return []store.Entry{{Rev: rev, Op: ot.Op{{Retain: int(rev - 1)}, {Insert: s}}.Normalize(), Client: "c", Seq: rev, User: "u"}}
			}
			// Revision 1 reaches the replica in every case, so the document
			// exists on both nodes and only revision 2 is at stake.
			if err := w.store.Log.Append(ctx, doc, 0, entry(1, "a")); err != nil {
				t.Fatalf("append rev 1: %v", err)
			}
			master := e.cluster.MasterOf(key)
			replica := e.cluster.ReplicaOf(master)
			e.cluster.WaitReplicated(master, replica)
			if tc.cut {
				replica.Pause()
				e.cluster.CutReplication(master)
			}
			err := w.store.Log.Append(ctx, doc, 1, entry(2, "b"))
			if acked := err == nil; acked != tc.wantAcked {
				t.Fatalf("append rev 2: acknowledged %v (%v), want %v", acked, err, tc.wantAcked)
			}
			t.Logf("append rev 2: %v", err)
			master.Kill()
			if tc.cut {
				replica.Resume()
			}
			e.cluster.WaitPromoted(key, master)
			if now := e.cluster.MasterOf(key); now != replica {
				t.Fatalf("master of %s is %s, want the replica %s", doc, now.Addr(), replica.Addr())
			}

			r := e.replica(redisstore.Options{NoFlusher: true})
			var head int64
			deadline := time.Now().Add(30 * time.Second)
			for {
				head, err = r.store.Log.Head(ctx, doc)
				if err == nil || time.Now().After(deadline) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				t.Fatalf("head after the failover: %v", err)
			}
			if kept := head == 2; kept != tc.wantKept || head < 1 {
				t.Fatalf("head after the failover = %d; want revision 2 kept: %v (revision 1 always)", head, tc.wantKept)
			}
			t.Logf("head after the failover: %d", head)
			// The old master rejoins as a replica of the promoted one.
			master.Start()
			if err := e.cluster.WaitHealthy(ctx); err != nil {
				t.Fatalf("cluster after the old master came back: %v", err)
			}
		})
	}
}
