package doc_test

import (
	"context"
	"testing"

	"github.com/tandem-dev/tandem/runtime/doc"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/protocol"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/memory"
)

// gatedLog holds every append until the test lets it through, so that
// submissions queue up behind it and are prepared as one batch.
type gatedLog struct {
	*memory.Log
	entered chan struct{}
	gate    chan struct{}
}

func (g *gatedLog) Append(ctx context.Context, doc string, expected int64, entries []store.Entry) error {
	g.entered <- struct{}{}
	<-g.gate
	return g.Log.Append(ctx, doc, expected, entries)
}

// TestSeqGoingBackInOneBatchIsRefused queues seq 5 and then seq 3 of one
// client behind an append in progress, so both land in the same batch:
// seqs only grow, so 3 is refused even though 5 is not committed yet.
func TestSeqGoingBackInOneBatchIsRefused(t *testing.T) {
	ctx := context.Background()
	inner := memory.NewLog(memory.LogOptions{})
	t.Cleanup(func() { _ = inner.Close(ctx) })
	g := &gatedLog{Log: inner, entered: make(chan struct{}, 10), gate: make(chan struct{})}
	m := newManager(t, doc.Options{Log: g})
	s := newSink()
	sess, err := m.Join(ctx, "back", member("k", "me", s), nil)
	if err != nil {
		t.Fatal(err)
	}
	next[protocol.Welcome](t, s)
	if err := sess.Submit(ctx, 1, 0, ot.Op{{Insert: "a"}}); err != nil {
		t.Fatal(err)
	}
	<-g.entered // the actor is appending seq 1
	for _, seq := range []int64{5, 3} {
		if err := sess.Submit(ctx, seq, 0, ot.Op{{Insert: "x"}}); err != nil {
			t.Fatal(err)
		}
	}
	close(g.gate)
	if ack := next[protocol.Ack](t, s); ack.Seq != 1 || ack.Rev != 1 {
		t.Fatalf("first ack %+v, want seq 1 rev 1", ack)
	}
	// Seq 5 and 3 are one batch: 5 is committed (and acked as it
	// commits), 3 refused.
	if ack := next[protocol.Ack](t, s); ack.Seq != 5 || ack.Rev != 2 {
		t.Fatalf("ack %+v, want seq 5 as rev 2", ack)
	}
	e := next[protocol.Error](t, s)
	if e.Code != protocol.CodeBadMessage || e.Seq == nil || *e.Seq != 3 {
		t.Fatalf("error %+v, want bad_message for seq 3", e)
	}
	snap, err := m.Snapshot(ctx, "back")
	if err != nil {
		t.Fatal(err)
	}
	if snap.Rev != 2 || snap.Text != "xa" {
		t.Fatalf("document %q at %d, want \"xa\" at 2 (seq 3 never applied)", snap.Text, snap.Rev)
	}
}

// TestAuthorIsUserAndClientID has two users share one client id: each
// one's operations are acked to it alone, and neither one's seqs affect
// the other's.
func TestAuthorIsUserAndClientID(t *testing.T) {
	ctx := context.Background()
	l := memory.NewLog(memory.LogOptions{})
	t.Cleanup(func() { _ = l.Close(ctx) })
	m := newManager(t, doc.Options{Log: l})
	sa, sb := newSink(), newSink()
	alice, err := m.Join(ctx, "shared", doc.Member{Conn: "ka", Client: "same", User: store.User{ID: "alice"}, Perm: "write", Send: sa.send, Flush: sa.flush}, nil)
	if err != nil {
		t.Fatal(err)
	}
	next[protocol.Welcome](t, sa)
	bob, err := m.Join(ctx, "shared", doc.Member{Conn: "kb", Client: "same", User: store.User{ID: "bob"}, Perm: "write", Send: sb.send, Flush: sb.flush}, nil)
	if err != nil {
		t.Fatal(err)
	}
	next[protocol.Welcome](t, sb)

	if err := bob.Submit(ctx, 1_000_000_000, 0, ot.Op{{Insert: "b"}}); err != nil {
		t.Fatal(err)
	}
	if ack := next[protocol.Ack](t, sb); ack.Seq != 1_000_000_000 || ack.Rev != 1 {
		t.Fatalf("bob's ack %+v", ack)
	}
	if op := next[protocol.Op](t, sa); op.Rev != 1 || op.User != "bob" {
		t.Fatalf("alice got %+v, want bob's operation as rev 1", op)
	}
	// Alice's seq 1 is neither "already committed" nor bob's.
	if err := alice.Submit(ctx, 1, 1, ot.Op{{Retain: 1}, {Insert: "a"}}); err != nil {
		t.Fatal(err)
	}
	if ack := next[protocol.Ack](t, sa); ack.Seq != 1 || ack.Rev != 2 {
		t.Fatalf("alice's ack %+v, want seq 1 as rev 2", ack)
	}
	if op := next[protocol.Op](t, sb); op.Rev != 2 || op.User != "alice" {
		t.Fatalf("bob got %+v, want alice's operation as rev 2", op)
	}
	// Bob resubmitting alice's seq 1 under the same client id is a new
	// operation of bob's that goes back in seq: refused, not acked as
	// alice's revision 2.
	if err := bob.Submit(ctx, 1, 2, ot.Op{{Insert: "z"}}); err != nil {
		t.Fatal(err)
	}
	if e := next[protocol.Error](t, sb); e.Code != protocol.CodeBadMessage {
		t.Fatalf("bob's copy of seq 1: %+v, want bad_message", e)
	}
	snap, err := m.Snapshot(ctx, "shared")
	if err != nil {
		t.Fatal(err)
	}
	if snap.Text != "ba" || snap.Rev != 2 {
		t.Fatalf("document %q at %d, want \"ba\" at 2", snap.Text, snap.Rev)
	}
}

// TestBaseOlderThanWindow: an operation based further back than the window
// is refused with bad_revision without reading history, except the
// resubmission of its author's latest operation, which is acked.
func TestBaseOlderThanWindow(t *testing.T) {
	ctx := context.Background()
	l := memory.NewLog(memory.LogOptions{})
	t.Cleanup(func() { _ = l.Close(ctx) })
	m := newManager(t, doc.Options{Log: l, Window: 3})
	s := newSink()
	sess, err := m.Join(ctx, "old", member("k1", "me", s), nil)
	if err != nil {
		t.Fatal(err)
	}
	next[protocol.Welcome](t, s)
	for seq := int64(1); seq <= 6; seq++ {
		if err := sess.Submit(ctx, seq, seq-1, ot.Op{{Insert: "a"}}); err != nil {
			t.Fatal(err)
		}
		next[protocol.Ack](t, s)
	}
	// A second connection of the same author, after the ack of 6 was lost.
	s2 := newSink()
	sess2, err := m.Join(ctx, "old", member("k2", "me", s2), nil)
	if err != nil {
		t.Fatal(err)
	}
	next[protocol.Welcome](t, s2)
	tests := []struct {
		seq, rev int64
		wantCode string // "" means acked with wantRev
		wantRev  int64
	}{
		{6, 0, "", 6},                       // its latest, resubmitted on an old base
		{2, 0, protocol.CodeBadMessage, 0},  // an older one: already committed
		{7, 0, protocol.CodeBadRevision, 0}, // a new one 6 behind: refused
		{7, 2, protocol.CodeBadRevision, 0}, // 4 behind, window 3
		{7, 3, "", 7},                       // 3 behind: transformed and committed
	}
	for _, tc := range tests {
		if err := sess2.Submit(ctx, tc.seq, tc.rev, ot.Op{{Insert: "z"}}); err != nil {
			t.Fatal(err)
		}
		if tc.wantCode == "" {
			if ack := next[protocol.Ack](t, s2); ack.Seq != tc.seq || ack.Rev != tc.wantRev {
				t.Fatalf("seq %d on %d: ack %+v, want rev %d", tc.seq, tc.rev, ack, tc.wantRev)
			}
			continue
		}
		if e := next[protocol.Error](t, s2); e.Code != tc.wantCode || e.Seq == nil || *e.Seq != tc.seq {
			t.Fatalf("seq %d on %d: %+v, want %s", tc.seq, tc.rev, e, tc.wantCode)
		}
	}
	snap, err := m.Snapshot(ctx, "old")
	if err != nil {
		t.Fatal(err)
	}
	if snap.Rev != 7 || snap.Text != "zaaaaaa" {
		t.Fatalf("document %q at %d, want \"zaaaaaa\" at 7", snap.Text, snap.Rev)
	}
}
