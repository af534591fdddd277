package redisstore_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/redisstore"
)

// A replica's subscription delivers the commits the replica made itself
// from the entries its Append still held, and everything else from the
// notifications, decoded: every entry once, in order, equal to what was
// committed, whoever committed it.
func TestOwnCommitsReachOwnSubscriptionsWithoutDecoding(t *testing.T) {
	e := newEnv(t)
	a := e.replica(redisstore.Options{})
	b := e.replica(redisstore.Options{})
	ctx := testCtx(t)
	const doc = "own"
	subA, err := a.store.Log.Subscribe(ctx, doc, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A second subscription in the same process gets the same entries.
	subA2, err := a.store.Log.Subscribe(ctx, doc, 0)
	if err != nil {
		t.Fatal(err)
	}
	var committed []store.Entry
	ownA := 0
	for i := range 60 {
		w, l := "a", a.store.Log
		if i%3 == 2 {
			w, l = "b", b.store.Log // another replica's commit
		} else {
			ownA++
		}
		head, err := l.Head(ctx, doc)
		if err != nil {
			t.Fatal(err)
		}
		batch := []store.Entry{
			{Doc: doc, Rev: head + 1, Op: ot.Op{{Insert: fmt.Sprintf("%s%d.", w, i)}}, Client: w, Seq: int64(2 * i), User: "u-" + w},
			{Doc: doc, Rev: head + 2, Op: ot.Op{{Retain: 1}, {Insert: "x"}}, Client: w, Seq: int64(2*i + 1), User: "u-" + w},
		}
		if err := l.Append(ctx, doc, head, batch); err != nil {
			t.Fatal(err)
		}
		committed = append(committed, batch...)
	}
	want, err := b.store.Log.Read(ctx, doc, 0, -1) // as stored, decoded
	if err != nil || len(want) != len(committed) {
		t.Fatalf("Read = %d entries, %v; want %d", len(want), err, len(committed))
	}
	for _, sub := range []store.Subscription{subA, subA2} {
		for i, w := range want {
			select {
			case got, ok := <-sub.C():
				if !ok {
					t.Fatalf("subscription closed at %d: %v", i, sub.Err())
				}
				if got.Rev != w.Rev || got.Client != w.Client || got.Seq != w.Seq || got.User != w.User ||
					!got.Time.Equal(w.Time) || got.Doc != doc || fmt.Sprint(got.Op) != fmt.Sprint(w.Op) {
					t.Fatalf("entry %d = %+v, want %+v", i, got, w)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("entry %d (rev %d) never delivered", i, w.Rev)
			}
		}
	}
	// Each of A's 40 commits was taken from memory by both subscriptions;
	// a notification dropped under load would be decoded instead, never
	// lost, so allow a few.
	if got := redisstore.OwnNotifications(a.store.Log); got < int64(2*ownA)-4 || got > int64(2*ownA) {
		t.Fatalf("%d notifications served from memory, want about %d (2 subscriptions x %d own commits)", got, 2*ownA, ownA)
	}
	if got := redisstore.OwnNotifications(b.store.Log); got != 0 {
		t.Fatalf("B, which subscribes to nothing, served %d notifications from memory", got)
	}
}

// A commit that fails leaves nothing behind for the subscriptions, and the
// next commit is delivered as usual.
func TestFailedOwnCommitIsNotDelivered(t *testing.T) {
	e := newEnv(t)
	a := e.replica(redisstore.Options{})
	ctx := testCtx(t)
	const doc = "own-conflict"
	sub, err := a.store.Log.Subscribe(ctx, doc, 0)
	if err != nil {
		t.Fatal(err)
	}
	entry := func(rev int64, s string) []store.Entry {
		return []store.Entry{{Doc: doc, Rev: rev, Op: ot.Op{{Insert: s}}, Client: "c", Seq: rev}}
	}
	if err := a.store.Log.Append(ctx, doc, 0, entry(1, "first")); err != nil {
		t.Fatal(err)
	}
	if err := a.store.Log.Append(ctx, doc, 0, entry(1, "loser")); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale Append = %v, want ErrConflict", err)
	}
	if err := a.store.Log.Append(ctx, doc, 1, entry(2, "second")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"first", "second"} {
		select {
		case got := <-sub.C():
			if fmt.Sprint(got.Op) != fmt.Sprint(ot.Op{{Insert: want}}) {
				t.Fatalf("delivered %v, want %q", got.Op, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%q never delivered", want)
		}
	}
	select {
	case got := <-sub.C():
		t.Fatalf("unexpected delivery %+v", got)
	case <-time.After(300 * time.Millisecond):
	}
}
