package memory_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/memory"
	"github.com/tandem-dev/tandem/runtime/store/storetest"
)

func TestLogConformance(t *testing.T) {
	storetest.RunLog(t, func(t *testing.T) store.Log {
		l := memory.NewLog(memory.LogOptions{})
		t.Cleanup(func() { _ = l.Close(context.Background()) })
		return l
	})
}

func TestLogWithDurableConformance(t *testing.T) {
	storetest.RunLog(t, func(t *testing.T) store.Log {
		l := memory.NewLog(memory.LogOptions{Durable: newFakeDurable(), FlushInterval: 5 * time.Millisecond, Window: 3})
		t.Cleanup(func() { _ = l.Close(context.Background()) })
		return l
	})
}

func TestLogWithSyncCommitConformance(t *testing.T) {
	storetest.RunLog(t, func(t *testing.T) store.Log {
		l := memory.NewLog(memory.LogOptions{Durable: newFakeDurable(), SyncCommit: true, Window: 3})
		t.Cleanup(func() { _ = l.Close(context.Background()) })
		return l
	})
}

func TestPresenceConformance(t *testing.T) {
	storetest.RunPresence(t, func(t *testing.T) store.Presence {
		p := memory.NewPresence(memory.PresenceOptions{TTL: 200 * time.Millisecond})
		t.Cleanup(p.Close)
		return p
	}, 200*time.Millisecond)
}

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestPresenceExpiryWithDrivenClock(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1000, 0)}
	p := memory.NewPresence(memory.PresenceOptions{TTL: 10 * time.Second, Now: clock.Now, SweepInterval: -1})
	ctx := context.Background()
	ch, err := p.Subscribe(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	for _, conn := range []string{"a", "b"} {
		if err := p.Update(ctx, store.PresenceEntry{Doc: "d", Conn: conn}); err != nil {
			t.Fatal(err)
		}
		<-ch
	}
	steps := []struct {
		advance   time.Duration
		refreshB  bool
		wantConns int
		wantLeft  string
	}{
		{9 * time.Second, true, 2, ""},
		{time.Second, false, 1, "a"},    // a reaches its TTL exactly
		{8 * time.Second, false, 1, ""}, // b was refreshed at 9s: lives until 19s
		{time.Second, false, 0, "b"},
	}
	for i, s := range steps {
		clock.Add(s.advance)
		if s.refreshB {
			if err := p.Update(ctx, store.PresenceEntry{Doc: "d", Conn: "b"}); err != nil {
				t.Fatal(err)
			}
			<-ch
		}
		p.Sweep()
		list, err := p.List(ctx, "d")
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != s.wantConns {
			t.Fatalf("step %d: %d entries, want %d", i, len(list), s.wantConns)
		}
		if s.wantLeft != "" {
			select {
			case ev := <-ch:
				if !ev.Left || ev.Entry.Conn != s.wantLeft {
					t.Fatalf("step %d: event %+v, want %s leaving", i, ev, s.wantLeft)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("step %d: no departure event for %s", i, s.wantLeft)
			}
		}
	}
}

// fakeDurable keeps entries in a map; it exists to observe what the log
// flushes (the real durable stores have their own tests).
type fakeDurable struct {
	mu      sync.Mutex
	ops     map[string][]store.Entry
	writes  int
	failing bool
	refuse  string // a document whose writes fail
	// gate, when set, holds every Write until it receives a value; started
	// is told when a held Write begins.
	gate    chan struct{}
	started chan struct{}
	batches []int // entries per successful Write
}

func newFakeDurable() *fakeDurable { return &fakeDurable{ops: map[string][]store.Entry{}} }

func (f *fakeDurable) Load(ctx context.Context, doc string) (store.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return store.Snapshot{Doc: doc, Rev: int64(len(f.ops[doc]))}, nil
}

func (f *fakeDurable) Ops(ctx context.Context, doc string, from, to int64) ([]store.Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []store.Entry
	for _, e := range f.ops[doc] {
		if e.Rev > from && (to < 0 || e.Rev <= to) {
			out = append(out, e)
		}
	}
	return out, nil
}

func (f *fakeDurable) Write(ctx context.Context, entries []store.Entry) error {
	f.mu.Lock()
	gate, started := f.gate, f.started
	f.mu.Unlock()
	if gate != nil {
		started <- struct{}{}
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failing {
		return store.ErrUnavailable
	}
	for _, e := range entries {
		if e.Doc == f.refuse {
			return fmt.Errorf("refusing %q", e.Doc)
		}
	}
	f.writes++
	f.batches = append(f.batches, len(entries))
	for _, e := range entries {
		if e.Rev == int64(len(f.ops[e.Doc]))+1 {
			f.ops[e.Doc] = append(f.ops[e.Doc], e)
		}
	}
	return nil
}

func (f *fakeDurable) Close() error { return nil }

func (f *fakeDurable) count(doc string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.ops[doc])
}

func entries(doc string, from int64, n int) []store.Entry {
	out := make([]store.Entry, n)
	for i := range out {
		out[i] = store.Entry{Doc: doc, Rev: from + int64(i) + 1, Op: ot.Op{{Insert: "x"}}}
	}
	return out
}

func TestLogFlushing(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name      string
		opts      memory.LogOptions
		appends   int
		wantSoon  int // entries durable after a short wait
		wantClose int // entries durable after Close
	}{
		{"batch size triggers a flush", memory.LogOptions{FlushInterval: time.Hour, FlushBatch: 4}, 4, 4, 4},
		{"below batch waits for the interval", memory.LogOptions{FlushInterval: time.Hour, FlushBatch: 100}, 3, 0, 3},
		{"interval flushes", memory.LogOptions{FlushInterval: 10 * time.Millisecond, FlushBatch: 100}, 3, 3, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newFakeDurable()
			tc.opts.Durable = d
			l := memory.NewLog(tc.opts)
			for i := range tc.appends {
				if err := l.Append(ctx, "doc", int64(i), entries("doc", int64(i), 1)); err != nil {
					t.Fatal(err)
				}
			}
			deadline := time.Now().Add(2 * time.Second)
			for d.count("doc") < tc.wantSoon && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond)
			if got := d.count("doc"); got != tc.wantSoon {
				t.Fatalf("durable has %d entries before Close, want %d", got, tc.wantSoon)
			}
			if err := l.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if got := d.count("doc"); got != tc.wantClose {
				t.Fatalf("durable has %d entries after Close, want %d", got, tc.wantClose)
			}
			if err := l.Append(ctx, "doc", int64(tc.appends), entries("doc", int64(tc.appends), 1)); err == nil {
				t.Fatal("Append after Close succeeded")
			}
		})
	}
}

func TestLogHeadFromDurableAndTrim(t *testing.T) {
	ctx := context.Background()
	d := newFakeDurable()
	if err := d.Write(ctx, entries("doc", 0, 5)); err != nil {
		t.Fatal(err)
	}
	l := memory.NewLog(memory.LogOptions{Durable: d, FlushInterval: time.Hour, Window: 2})
	defer l.Close(ctx)
	head, err := l.Head(ctx, "doc")
	if err != nil || head != 5 {
		t.Fatalf("Head = %d, %v; want 5 from the durable snapshot", head, err)
	}
	if _, err := l.Read(ctx, "doc", 0, -1); !errors.Is(err, store.ErrTrimmed) {
		t.Fatalf("Read of revisions only in durable: %v, want ErrTrimmed", err)
	}
	if err := l.Append(ctx, "doc", 5, entries("doc", 5, 4)); err != nil {
		t.Fatal(err)
	}
	// Unflushed entries are never trimmed, whatever the window.
	if got, err := l.Read(ctx, "doc", 5, -1); err != nil || len(got) != 4 {
		t.Fatalf("Read unflushed = %d entries, %v; want 4", len(got), err)
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Read(ctx, "doc", 5, -1); !errors.Is(err, store.ErrTrimmed) {
		t.Fatalf("Read beyond the window after flush: %v, want ErrTrimmed", err)
	}
	if got, err := l.Read(ctx, "doc", 7, -1); err != nil || len(got) != 2 {
		t.Fatalf("Read inside the window = %d entries, %v; want 2", len(got), err)
	}
	// A subscriber from before the window is served from the durable store.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sub, err := l.Subscribe(sctx, "doc", 3)
	if err != nil {
		t.Fatal(err)
	}
	for want := int64(4); want <= 9; want++ {
		select {
		case e := <-sub.C():
			if e.Rev != want {
				t.Fatalf("subscription rev %d, want %d", e.Rev, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no rev %d: %v", want, sub.Err())
		}
	}
}

func TestLogFlushFailureKeepsEntries(t *testing.T) {
	ctx := context.Background()
	d := newFakeDurable()
	d.failing = true
	l := memory.NewLog(memory.LogOptions{Durable: d, FlushInterval: time.Hour})
	if err := l.Append(ctx, "doc", 0, entries("doc", 0, 3)); err != nil {
		t.Fatal(err)
	}
	if err := l.Flush(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Flush with failing durable: %v, want ErrUnavailable", err)
	}
	if l.Pending() != 3 {
		t.Fatalf("pending = %d after failed flush, want 3", l.Pending())
	}
	d.mu.Lock()
	d.failing = false
	d.mu.Unlock()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if d.count("doc") != 3 {
		t.Fatalf("durable has %d entries after recovery, want 3", d.count("doc"))
	}
}

func TestLogOneRefusedDocumentDoesNotHoldBackOthers(t *testing.T) {
	ctx := context.Background()
	d := newFakeDurable()
	d.refuse = "bad"
	l := memory.NewLog(memory.LogOptions{Durable: d, FlushInterval: time.Hour})
	defer l.Close(ctx)
	for _, doc := range []string{"good", "bad", "other"} {
		if err := l.Append(ctx, doc, 0, entries(doc, 0, 2)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Flush(ctx); err == nil {
		t.Fatal("Flush succeeded although one document was refused")
	}
	if d.count("good") != 2 || d.count("other") != 2 {
		t.Fatalf("durable has good=%d other=%d, want 2 each", d.count("good"), d.count("other"))
	}
	if l.Pending() != 2 {
		t.Fatalf("pending = %d, want the refused document's 2 entries", l.Pending())
	}
}

func TestLogForgetsIdleDurableDocuments(t *testing.T) {
	ctx := context.Background()
	d := newFakeDurable()
	l := memory.NewLog(memory.LogOptions{Durable: d, FlushInterval: 5 * time.Millisecond, ForgetAfter: 20 * time.Millisecond})
	defer l.Close(ctx)
	if err := l.Append(ctx, "idle", 0, entries("idle", 0, 3)); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	if _, err := l.Subscribe(sctx, "watched", 0); err != nil {
		t.Fatal(err)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// "idle" is flushed and forgotten; "watched" has a subscriber and stays.
	waitFor("idle to be forgotten", func() bool { return l.Docs() == 1 })
	cancel()
	waitFor("watched to be forgotten after its subscriber left", func() bool { return l.Docs() == 0 })
	// Coming back loads the head from the durable store, and appending
	// continues from it.
	head, err := l.Head(ctx, "idle")
	if err != nil || head != 3 {
		t.Fatalf("Head after forgetting = %d, %v; want 3", head, err)
	}
	if err := l.Append(ctx, "idle", 3, entries("idle", 3, 1)); err != nil {
		t.Fatal(err)
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if d.count("idle") != 4 {
		t.Fatalf("durable has %d entries, want 4", d.count("idle"))
	}
}

func TestRouterConformance(t *testing.T) {
	const ttl = 300 * time.Millisecond
	storetest.RunRouter(t, func(t *testing.T) (store.Router, store.Router) {
		routes := memory.NewRoutes(ttl, nil)
		a, b := routes.Router("replica-a"), routes.Router("replica-b")
		t.Cleanup(a.Close)
		t.Cleanup(b.Close)
		return a, b
	}, ttl)
}

// With SyncCommit an append returns once its entries are in the durable
// store, and appends arriving while a write is under way share the next
// one (group commit).
func TestSyncCommitWritesBeforeReturning(t *testing.T) {
	ctx := context.Background()
	d := newFakeDurable()
	d.gate, d.started = make(chan struct{}), make(chan struct{}, 100)
	l := memory.NewLog(memory.LogOptions{Durable: d, SyncCommit: true, FlushInterval: time.Hour})
	defer l.Close(ctx)
	first := make(chan error, 1)
	go func() { first <- l.Append(ctx, "a", 0, entries("a", 0, 2)) }()
	<-d.started // the first write is under way and held
	if head, _ := l.Head(ctx, "a"); head != 0 {
		t.Fatalf("head = %d while the write is under way, want 0 (not visible yet)", head)
	}
	if err := l.Append(ctx, "a", 0, entries("a", 0, 1)); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second append at the same head while the first is written: %v, want ErrConflict", err)
	}
	const others = 10
	var wg sync.WaitGroup
	errs := make(chan error, others)
	for i := range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			doc := fmt.Sprintf("d%d", i)
			errs <- l.Append(ctx, doc, 0, entries(doc, 0, 3))
		}()
	}
	// Let them queue behind the held write; none may return meanwhile.
	time.Sleep(300 * time.Millisecond)
	if len(first) != 0 || len(errs) != 0 {
		t.Fatalf("an append returned while the durable store had not written it")
	}
	d.gate <- struct{}{} // first write
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if d.count("a") != 2 {
		t.Fatalf("durable has %d entries of a when its append returned, want 2", d.count("a"))
	}
	<-d.started
	d.gate <- struct{}{} // the group
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	d.mu.Lock()
	batches := append([]int(nil), d.batches...)
	d.mu.Unlock()
	if len(batches) != 2 || batches[1] != 3*others {
		t.Fatalf("writes carried %v entries, want [2 %d]: the queued appends in one group", batches, 3*others)
	}
	if got, err := l.Read(ctx, "d3", 0, -1); err != nil || len(got) != 3 {
		t.Fatalf("Read after the group commit = %d entries, %v", len(got), err)
	}
}

// A write that fails refuses the append and leaves nothing behind; in a
// group, a document the store refuses fails only its own append.
func TestSyncCommitFailureRefusesTheAppend(t *testing.T) {
	ctx := context.Background()
	d := newFakeDurable()
	d.failing = true
	l := memory.NewLog(memory.LogOptions{Durable: d, SyncCommit: true, FlushInterval: time.Hour})
	defer l.Close(ctx)
	if err := l.Append(ctx, "doc", 0, entries("doc", 0, 2)); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Append with a failing durable store: %v, want ErrUnavailable", err)
	}
	if head, _ := l.Head(ctx, "doc"); head != 0 {
		t.Fatalf("head = %d after a failed write, want 0", head)
	}
	if got, _ := l.Read(ctx, "doc", 0, -1); len(got) != 0 {
		t.Fatalf("Read after a failed write = %v, want nothing", got)
	}
	d.mu.Lock()
	d.failing = false
	d.refuse = "bad"
	d.gate, d.started = make(chan struct{}), make(chan struct{}, 100)
	d.mu.Unlock()
	// Hold a write so that the next appends form one group.
	held := make(chan error, 1)
	go func() { held <- l.Append(ctx, "first", 0, entries("first", 0, 1)) }()
	<-d.started
	results := map[string]chan error{}
	for _, doc := range []string{"doc", "bad", "other"} {
		ch := make(chan error, 1)
		results[doc] = ch
		go func() { ch <- l.Append(ctx, doc, 0, entries(doc, 0, 2)) }()
	}
	time.Sleep(200 * time.Millisecond)
	go func() {
		for range d.started {
			d.gate <- struct{}{}
		}
	}()
	d.gate <- struct{}{}
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	for doc, ch := range results {
		err := <-ch
		if (err != nil) != (doc == "bad") {
			t.Errorf("append to %s: %v", doc, err)
		}
	}
	if d.count("doc") != 2 || d.count("other") != 2 || d.count("bad") != 0 {
		t.Fatalf("durable has doc=%d other=%d bad=%d, want 2, 2, 0", d.count("doc"), d.count("other"), d.count("bad"))
	}
	if head, _ := l.Head(ctx, "bad"); head != 0 {
		t.Fatalf("refused document's head = %d, want 0", head)
	}
}
