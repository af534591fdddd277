package storetest

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/store"
)

// RunRouter checks the store.Router contract. newPair returns two routers
// of distinct live replicas sharing one backend, whose leases last ttl
// (keep it short: the suite waits for one to expire).
//
//   - Self is non-empty and differs between replicas.
//   - Claim takes a free lease (acquired), renews one held by the caller,
//     and reports the holder without taking a lease another replica holds.
//   - Release deletes only the caller's own lease.
//   - A lease not renewed within ttl can be claimed by another replica.
//   - Forward and Reply deliver to the addressee's Inbox, in order and
//     intact; Forward to a replica nobody listens as is ErrNoReceiver.
func RunRouter(t *testing.T, newPair func(t *testing.T) (a, b store.Router), ttl time.Duration) {
	claim := func(t *testing.T, r store.Router, doc, wantOwner string, wantAcquired bool) {
		t.Helper()
		owner, acquired, err := r.Claim(testCtx(t), doc)
		if err != nil {
			t.Fatalf("Claim by %s: %v", r.Self(), err)
		}
		if owner != wantOwner || acquired != wantAcquired {
			t.Fatalf("Claim by %s = %q, acquired %v; want %q, acquired %v", r.Self(), owner, acquired, wantOwner, wantAcquired)
		}
	}

	t.Run("Identity", func(t *testing.T) {
		a, b := newPair(t)
		if a.Self() == "" || b.Self() == "" || a.Self() == b.Self() {
			t.Fatalf("Self = %q and %q, want two distinct non-empty ids", a.Self(), b.Self())
		}
		if a.LeaseTTL() != ttl {
			t.Fatalf("LeaseTTL = %v, want %v", a.LeaseTTL(), ttl)
		}
	})

	t.Run("ClaimRenewRelease", func(t *testing.T) {
		a, b := newPair(t)
		doc := DocID(t)
		claim(t, a, doc, a.Self(), true)
		claim(t, b, doc, a.Self(), false) // held by a: b only learns who
		claim(t, a, doc, a.Self(), false) // renewal
		// b cannot release a's lease.
		if err := b.Release(testCtx(t), doc); err != nil {
			t.Fatalf("Release by non-holder: %v", err)
		}
		claim(t, b, doc, a.Self(), false)
		if err := a.Release(testCtx(t), doc); err != nil {
			t.Fatalf("Release: %v", err)
		}
		claim(t, b, doc, b.Self(), true)
		claim(t, a, doc, b.Self(), false)
		// Leases are per document.
		claim(t, a, DocID(t), a.Self(), true)
	})

	t.Run("LeaseExpires", func(t *testing.T) {
		a, b := newPair(t)
		doc := DocID(t)
		claim(t, a, doc, a.Self(), true)
		// Renewing keeps it past its first TTL.
		time.Sleep(ttl * 2 / 3)
		claim(t, a, doc, a.Self(), false)
		time.Sleep(ttl * 2 / 3)
		claim(t, b, doc, a.Self(), false)
		// Not renewed any more: it lapses and b takes it.
		time.Sleep(ttl + ttl/2)
		claim(t, b, doc, b.Self(), true)
	})

	t.Run("ForwardAndReply", func(t *testing.T) {
		a, b := newPair(t)
		doc := DocID(t)
		subs := []store.Forwarded{
			{Doc: doc, Origin: a.Self(), Conn: "conn-1", Client: "c1", User: store.User{ID: "u1", Name: "U", Color: "#123456"},
				Perm: "write", Seq: 7, Rev: 3, Op: ot.Op{{Retain: 2}, {Insert: "é"}}},
			{Doc: doc, Origin: a.Self(), Conn: "conn-2", Client: "c2", User: store.User{ID: "u2"}, Perm: "write", Seq: 1, Rev: 0,
				Op: ot.Op{{Delete: 1}}},
		}
		if err := a.Forward(testCtx(t), b.Self(), subs[:1]); err != nil {
			t.Fatalf("Forward: %v", err)
		}
		if err := a.Forward(testCtx(t), b.Self(), subs[1:]); err != nil {
			t.Fatalf("Forward: %v", err)
		}
		var got []store.Forwarded
		for len(got) < len(subs) {
			got = append(got, receive(t, b).Forwarded...)
		}
		if !reflect.DeepEqual(got, subs) {
			t.Fatalf("forwarded:\n got %+v\nwant %+v", got, subs)
		}
		replies := []store.Reply{
			{Doc: doc, Client: "c1", Seq: 7, DupRev: 5},
			{Doc: doc, Client: "c2", Seq: 1, Code: "bad_op", Message: "no"},
		}
		if err := b.Reply(testCtx(t), a.Self(), replies); err != nil {
			t.Fatalf("Reply: %v", err)
		}
		if msg := receive(t, a); !reflect.DeepEqual(msg.Replies, replies) || len(msg.Forwarded) != 0 {
			t.Fatalf("reply: got %+v, want %+v", msg, replies)
		}
	})

	t.Run("ForwardToNobody", func(t *testing.T) {
		a, _ := newPair(t)
		err := a.Forward(testCtx(t), "no-such-replica-"+DocID(t), []store.Forwarded{{Doc: "d", Seq: 1}})
		if !errors.Is(err, store.ErrNoReceiver) {
			t.Fatalf("Forward to nobody: err = %v, want ErrNoReceiver", err)
		}
		// A reply whose origin is gone has nobody waiting for it.
		if err := a.Reply(testCtx(t), "no-such-replica-"+DocID(t), []store.Reply{{Doc: "d", Seq: 1}}); err != nil {
			t.Fatalf("Reply to nobody: %v", err)
		}
	})
}

func receive(t *testing.T, r store.Router) store.Routed {
	t.Helper()
	select {
	case msg := <-r.Inbox():
		return msg
	case <-time.After(5 * time.Second):
		t.Fatalf("nothing arrived in %s's inbox within 5s", r.Self())
		return store.Routed{}
	}
}
