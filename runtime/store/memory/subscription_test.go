package memory_test

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/memory"
)

// receive reads want entries from sub, in revision order from first.
func receive(t *testing.T, sub store.Subscription, first int64, want int) {
	t.Helper()
	for i := range want {
		select {
		case e, ok := <-sub.C():
			if !ok {
				t.Fatalf("subscription closed before rev %d: %v", first+int64(i), sub.Err())
			}
			if e.Rev != first+int64(i) {
				t.Fatalf("got rev %d, want %d", e.Rev, first+int64(i))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no rev %d", first+int64(i))
		}
	}
}

// settledGoroutines waits until the goroutine count is at most limit and
// returns the last count seen.
func settledGoroutines(limit int) int {
	n := runtime.NumGoroutine()
	for deadline := time.Now().Add(3 * time.Second); n > limit && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	return n
}

// An open document whose reader keeps up costs no goroutine: appends hand
// entries to the subscription themselves, and a feeder runs only while a
// reader is behind.
func TestSubscriptionsHoldNoGoroutineWhileCaughtUp(t *testing.T) {
	ctx := t.Context()
	l := memory.NewLog(memory.LogOptions{})
	defer l.Close(context.Background())
	before := runtime.NumGoroutine()

	const docs = 200
	subs := make([]store.Subscription, docs)
	for i := range subs {
		doc := docName(i)
		if err := l.Append(ctx, doc, 0, entries(doc, 0, 2)); err != nil {
			t.Fatal(err)
		}
		sub, err := l.Subscribe(ctx, doc, 0) // a backlog of two
		if err != nil {
			t.Fatal(err)
		}
		subs[i] = sub
		if err := l.Append(ctx, doc, 2, entries(doc, 2, 3)); err != nil {
			t.Fatal(err)
		}
		receive(t, sub, 1, 5)
	}
	if n := settledGoroutines(before + 2); n > before+2 {
		t.Fatalf("%d goroutines with %d caught-up subscriptions, %d before: want none per subscription", n, docs, before)
	}

	// A reader far behind: more than the channel holds waits for it, and
	// arrives in order once it reads.
	doc := docName(0)
	for rev := int64(5); rev < 105; rev += 10 {
		if err := l.Append(ctx, doc, rev, entries(doc, rev, 10)); err != nil {
			t.Fatal(err)
		}
	}
	receive(t, subs[0], 6, 100)
	if n := settledGoroutines(before + 2); n > before+2 {
		t.Fatalf("%d goroutines after the slow reader caught up, %d before", n, before)
	}
	// And appends deliver to it again.
	if err := l.Append(ctx, doc, 105, entries(doc, 105, 1)); err != nil {
		t.Fatal(err)
	}
	receive(t, subs[0], 106, 1)
}

func docName(i int) string { return "doc-" + string(rune('a'+i%26)) + "-" + time.Duration(i).String() }

// A subscription ends the way its contract says, whether it is caught up
// (no feeder) or behind (a feeder blocked on its channel).
func TestSubscriptionEnds(t *testing.T) {
	cases := []struct {
		name    string
		end     func(l *memory.Log, cancel context.CancelFunc, doc string) error
		wantErr func(error) bool
	}{
		{"cancelled", func(_ *memory.Log, cancel context.CancelFunc, _ string) error { cancel(); return nil },
			func(err error) bool { return err == nil }},
		{"deleted", func(l *memory.Log, _ context.CancelFunc, doc string) error {
			return l.Delete(context.Background(), doc)
		},
			func(err error) bool { return errors.Is(err, store.ErrDeleted) }},
		{"log closed", func(l *memory.Log, _ context.CancelFunc, _ string) error { return l.Close(context.Background()) },
			func(err error) bool { return err != nil && !errors.Is(err, store.ErrDeleted) }},
	}
	for _, tc := range cases {
		for _, behind := range []bool{false, true} {
			name := tc.name + "/caught up"
			if behind {
				name = tc.name + "/behind"
			}
			t.Run(name, func(t *testing.T) {
				l := memory.NewLog(memory.LogOptions{})
				defer l.Close(context.Background())
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				doc := "doc"
				sub, err := l.Subscribe(ctx, doc, 0)
				if err != nil {
					t.Fatal(err)
				}
				n := 3
				if behind {
					n = 100 // more than the channel holds: a feeder waits on it
				}
				if err := l.Append(t.Context(), doc, 0, entries(doc, 0, n)); err != nil {
					t.Fatal(err)
				}
				if !behind {
					receive(t, sub, 1, n)
				}
				if err := tc.end(l, cancel, doc); err != nil {
					t.Fatal(err)
				}
				deadline := time.After(5 * time.Second)
				for {
					select {
					case _, ok := <-sub.C():
						if ok {
							continue // what was committed before the end may still arrive
						}
						if err := sub.Err(); !tc.wantErr(err) {
							t.Fatalf("subscription ended with %v", err)
						}
						return
					case <-deadline:
						t.Fatal("subscription not closed")
					}
				}
			})
		}
	}
}
