package doc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/tandem-dev/tandem/runtime/doc"
	"github.com/tandem-dev/tandem/runtime/metrics"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/protocol"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/memory"
	"github.com/tandem-dev/tandem/runtime/store/sqlite"
)

// sink is a member's outgoing queue. Like a connection, it holds what it
// is sent until the document flushes: a test that waits for a message
// also checks that the document flushed it.
type sink struct {
	ch chan any

	mu   sync.Mutex
	held []any
}

func newSink() *sink { return &sink{ch: make(chan any, 10000)} }

func (s *sink) send(f *protocol.Frame) bool {
	if _, err := f.Encoded(); err != nil {
		panic(err) // every message the document sends must encode
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ch)+len(s.held) >= cap(s.ch) {
		return false // too slow
	}
	s.held = append(s.held, f.Msg)
	return true
}

func (s *sink) flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.held {
		s.ch <- m
	}
	s.held = nil
}

// next returns the next message of type T, skipping others.
func next[T any](t *testing.T, s *sink) T {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-s.ch:
			if v, ok := m.(T); ok {
				return v
			}
		case <-timeout:
			var zero T
			t.Fatalf("no %T within 10s", zero)
			return zero
		}
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newManager(t *testing.T, o doc.Options) *doc.Manager {
	t.Helper()
	if o.Logger == nil {
		o.Logger = quiet()
	}
	m := doc.NewManager(o)
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return m
}

func member(conn, client string, s *sink) doc.Member {
	return doc.Member{Conn: conn, Client: client, User: store.User{ID: "u-" + client}, Perm: "write", Send: s.send, Flush: s.flush}
}

// TestReplicasShareOneLog runs two managers on one log, as two replicas of
// the distributed mode do: appends race, conflicts are caught up and
// retried, and remote entries arrive through the subscription.
func TestReplicasShareOneLog(t *testing.T) {
	ctx := context.Background()
	l := memory.NewLog(memory.LogOptions{})
	t.Cleanup(func() { _ = l.Close(ctx) })
	p := memory.NewPresence(memory.PresenceOptions{TTL: time.Minute})
	t.Cleanup(p.Close)
	metA := metrics.New()
	a := newManager(t, doc.Options{Log: l, Presence: p, Metrics: metA})
	b := newManager(t, doc.Options{Log: l, Presence: p, Metrics: metrics.New()})

	const perMember = 40
	type sub struct {
		s    *doc.Session
		sink *sink
		id   string
	}
	var subs []sub
	for i, m := range []*doc.Manager{a, b, a, b} {
		s := newSink()
		id := fmt.Sprintf("c%d", i)
		sess, err := m.Join(ctx, "shared", member("conn-"+id, id, s), nil)
		if err != nil {
			t.Fatal(err)
		}
		next[protocol.Welcome](t, s)
		subs = append(subs, sub{sess, s, id})
	}
	var wg sync.WaitGroup
	for _, sb := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := int64(1); seq <= perMember; seq++ {
				// Every op is made on revision 0: the document transforms it
				// over everything committed since.
				if err := sb.s.Submit(ctx, seq, 0, ot.Op{{Insert: sb.id[1:]}}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// Each member gets an ack for every op.
	for _, sb := range subs {
		acked := 0
		timeout := time.After(30 * time.Second)
		for acked < perMember {
			select {
			case m := <-sb.sink.ch:
				switch v := m.(type) {
				case protocol.Ack:
					acked++
				case protocol.Error:
					t.Fatalf("member %s got error %+v", sb.id, v)
				}
			case <-timeout:
				t.Fatalf("member %s: %d of %d acks", sb.id, acked, perMember)
			}
		}
	}
	total := int64(len(subs) * perMember)
	deadline := time.Now().Add(10 * time.Second)
	var sa, sbb store.Snapshot
	for time.Now().Before(deadline) {
		sa, _ = a.Snapshot(ctx, "shared")
		sbb, _ = b.Snapshot(ctx, "shared")
		if sa.Rev == total && sbb.Rev == total {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if sa != sbb || sa.Rev != total || len(sa.Text) != int(total) {
		t.Fatalf("replicas differ or incomplete:\nA rev %d %q\nB rev %d %q", sa.Rev, sa.Text, sbb.Rev, sbb.Text)
	}
	for i := range subs {
		if c := strings.Count(sa.Text, fmt.Sprint(i)); c != perMember {
			t.Fatalf("member %d's text appears %d times, want %d", i, c, perMember)
		}
	}
	var conflicts dto.Metric
	if err := metA.CommitRetries.Write(&conflicts); err != nil {
		t.Fatal(err)
	}
	t.Logf("commit conflicts on replica A: %v", conflicts.GetCounter().GetValue())
}

func TestInvalidOperationNeverReachesTheLog(t *testing.T) {
	ctx := context.Background()
	l := memory.NewLog(memory.LogOptions{})
	t.Cleanup(func() { _ = l.Close(ctx) })
	m := newManager(t, doc.Options{Log: l})
	s := newSink()
	sess, err := m.Join(ctx, "d", member("k", "c", s), nil)
	if err != nil {
		t.Fatal(err)
	}
	next[protocol.Welcome](t, s)
	for i, op := range []ot.Op{{{Retain: 0}, {Insert: "x"}}, {{Insert: ""}}, {{Delete: -1}}, {{Retain: 3}, {Insert: "x"}}, {{Insert: "A\x00B"}}} {
		if err := sess.Submit(ctx, int64(i+1), 0, op); err != nil {
			t.Fatal(err)
		}
		if e := next[protocol.Error](t, s); e.Code != protocol.CodeBadOp {
			t.Fatalf("op %v: error %+v, want bad_op", op, e)
		}
	}
	if head, _ := l.Head(ctx, "d"); head != 0 {
		t.Fatalf("log head %d after invalid operations, want 0", head)
	}
}

func TestUnavailableLogAnswersInsteadOfHanging(t *testing.T) {
	ctx := context.Background()
	l := memory.NewLog(memory.LogOptions{})
	m := newManager(t, doc.Options{Log: l})
	s := newSink()
	sess, err := m.Join(ctx, "d", member("k", "c", s), nil)
	if err != nil {
		t.Fatal(err)
	}
	next[protocol.Welcome](t, s)
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sess.Submit(ctx, 1, 0, ot.Op{{Insert: "x"}}); err != nil {
		t.Fatal(err)
	}
	e := next[protocol.Error](t, s)
	if e.Code != protocol.CodeUnavailable || e.Seq == nil || *e.Seq != 1 {
		t.Fatalf("error = %+v, want unavailable for seq 1", e)
	}
}

func TestIdleDocumentIsUnloadedAndReloaded(t *testing.T) {
	ctx := context.Background()
	durable, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = durable.Close() })
	l := memory.NewLog(memory.LogOptions{Durable: durable, FlushInterval: 10 * time.Millisecond})
	t.Cleanup(func() { _ = l.Close(ctx) })
	m := newManager(t, doc.Options{Log: l, Durable: durable, IdleTimeout: 50 * time.Millisecond})
	s := newSink()
	sess, err := m.Join(ctx, "idle", member("k", "c", s), nil)
	if err != nil {
		t.Fatal(err)
	}
	next[protocol.Welcome](t, s)
	for seq := int64(1); seq <= 3; seq++ {
		op := ot.Op{{Insert: "é"}}
		if seq > 1 {
			op = ot.Op{{Retain: int(seq - 1)}, {Insert: "é"}}
		}
		if err := sess.Submit(ctx, seq, seq-1, op); err != nil {
			t.Fatal(err)
		}
		if ack := next[protocol.Ack](t, s); ack.Rev != seq {
			t.Fatalf("ack %+v, want rev %d", ack, seq)
		}
	}
	sess.Leave(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for m.Loaded() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if m.Loaded() != 0 {
		t.Fatal("idle document still loaded")
	}
	snap, err := m.Snapshot(ctx, "idle")
	if err != nil || snap.Rev != 3 || snap.Text != "ééé" {
		t.Fatalf("reloaded snapshot = %+v, %v", snap, err)
	}
}

func TestReadOnlyWelcomeAndResumeFromDurable(t *testing.T) {
	ctx := context.Background()
	durable, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = durable.Close() })
	var entries []store.Entry
	for i := int64(1); i <= 20; i++ {
		entries = append(entries, store.Entry{Doc: "old", Rev: i, Op: ot.Op{{Insert: "z"}}, Client: "w", Seq: i, User: "u"})
	}
	if err := durable.Write(ctx, entries); err != nil {
		t.Fatal(err)
	}
	// A log that starts at the durable snapshot holds none of the old
	// entries: resuming from rev 15 must read them from the durable store.
	l := memory.NewLog(memory.LogOptions{Durable: durable})
	t.Cleanup(func() { _ = l.Close(ctx) })
	m := newManager(t, doc.Options{Log: l, Durable: durable, Window: 10})
	s := newSink()
	rev := int64(15)
	if _, err := m.Join(ctx, "old", doc.Member{Conn: "k", Client: "r", Perm: "read", Send: s.send, Flush: s.flush}, &rev); err != nil {
		t.Fatal(err)
	}
	w := next[protocol.Welcome](t, s)
	if w.Text != nil || len(w.Ops) != 5 || w.Ops[0].Rev != 16 || w.Rev != 20 || w.Perm != "read" {
		t.Fatalf("welcome = rev %d text %v ops %d perm %s", w.Rev, w.Text != nil, len(w.Ops), w.Perm)
	}
	hist, err := m.History(ctx, "old", 0, -1)
	if err != nil || len(hist) != 20 {
		t.Fatalf("history = %d entries, %v", len(hist), err)
	}
}

// racingLog is a real memory log where another writer (a replica) commits
// just before each of the first `races` appends of this process, so those
// appends lose the compare-and-set.
type racingLog struct {
	*memory.Log
	mu    sync.Mutex
	races int
	n     int64
}

func (r *racingLog) Append(ctx context.Context, doc string, expected int64, entries []store.Entry) error {
	r.mu.Lock()
	if r.races > 0 {
		r.races--
		r.n++
		foreign := store.Entry{Doc: doc, Rev: expected + 1, Op: ot.Op{{Insert: "R"}}, Client: "replica", Seq: r.n, User: "r"}
		if err := r.Log.Append(ctx, doc, expected, []store.Entry{foreign}); err != nil {
			r.mu.Unlock()
			return err
		}
	}
	r.mu.Unlock()
	return r.Log.Append(ctx, doc, expected, entries)
}

func TestConflictIsCaughtUpAndRetried(t *testing.T) {
	tests := []struct {
		name      string
		races     int
		wantCode  string // "" means committed
		wantText  string
		wantRev   int64
		conflicts float64
	}{
		{"one lost race", 1, "", "xR", 2, 1},
		{"three lost races", 3, "", "xRRR", 4, 3},
		{"always losing gives up", 100, protocol.CodeUnavailable, "RRRRR", 5, 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			inner := memory.NewLog(memory.LogOptions{})
			t.Cleanup(func() { _ = inner.Close(ctx) })
			met := metrics.New()
			m := newManager(t, doc.Options{Log: &racingLog{Log: inner, races: tc.races}, Metrics: met, MaxRetries: 5})
			s := newSink()
			sess, err := m.Join(ctx, "race", member("k", "me", s), nil)
			if err != nil {
				t.Fatal(err)
			}
			next[protocol.Welcome](t, s)
			if err := sess.Submit(ctx, 1, 0, ot.Op{{Insert: "x"}}); err != nil {
				t.Fatal(err)
			}
			if tc.wantCode == "" {
				if ack := next[protocol.Ack](t, s); ack.Rev != tc.wantRev {
					t.Fatalf("ack %+v, want rev %d", ack, tc.wantRev)
				}
			} else if e := next[protocol.Error](t, s); e.Code != tc.wantCode {
				t.Fatalf("error %+v, want %s", e, tc.wantCode)
			}
			snap, err := m.Snapshot(ctx, "race")
			if err != nil {
				t.Fatal(err)
			}
			// "x" and every "R" insert at 0 on the same base; ours is the
			// incoming one when transformed, so it lands first.
			if snap.Text != tc.wantText || snap.Rev != tc.wantRev {
				t.Fatalf("snapshot %q at %d, want %q at %d", snap.Text, snap.Rev, tc.wantText, tc.wantRev)
			}
			var c dto.Metric
			_ = met.CommitRetries.Write(&c)
			if got := c.GetCounter().GetValue(); got != tc.conflicts {
				t.Fatalf("conflicts = %v, want %v", got, tc.conflicts)
			}
		})
	}
}

// resettingLog is a real memory log whose next append reports that the log
// was reset (as the Redis log does after losing its data).
type resettingLog struct {
	*memory.Log
	mu    sync.Mutex
	reset bool
}

func (r *resettingLog) Append(ctx context.Context, doc string, expected int64, entries []store.Entry) error {
	r.mu.Lock()
	reset := r.reset
	r.reset = false
	r.mu.Unlock()
	if reset {
		return fmt.Errorf("append: %w", errors.Join(store.ErrReset, store.ErrUnavailable))
	}
	return r.Log.Append(ctx, doc, expected, entries)
}

func TestLogResetUnloadsAndKicksMembers(t *testing.T) {
	ctx := context.Background()
	inner := memory.NewLog(memory.LogOptions{})
	t.Cleanup(func() { _ = inner.Close(ctx) })
	l := &resettingLog{Log: inner}
	m := newManager(t, doc.Options{Log: l})
	s := newSink()
	kicked := make(chan string, 1)
	mem := member("k", "c", s)
	mem.Kick = func(reason string) { kicked <- reason }
	sess, err := m.Join(ctx, "reset", mem, nil)
	if err != nil {
		t.Fatal(err)
	}
	next[protocol.Welcome](t, s)
	if err := sess.Submit(ctx, 1, 0, ot.Op{{Insert: "a"}}); err != nil {
		t.Fatal(err)
	}
	next[protocol.Ack](t, s)
	l.mu.Lock()
	l.reset = true
	l.mu.Unlock()
	if err := sess.Submit(ctx, 2, 1, ot.Op{{Retain: 1}, {Insert: "b"}}); err != nil {
		t.Fatal(err)
	}
	if e := next[protocol.Error](t, s); e.Code != protocol.CodeUnavailable || e.Seq == nil || *e.Seq != 2 {
		t.Fatalf("error %+v, want unavailable for seq 2", e)
	}
	select {
	case <-kicked:
	case <-time.After(5 * time.Second):
		t.Fatal("member was not kicked after the reset")
	}
	// A fresh join loads the document again and works.
	s2 := newSink()
	sess2, err := m.Join(ctx, "reset", member("k2", "c", s2), nil)
	if err != nil {
		t.Fatal(err)
	}
	if w := next[protocol.Welcome](t, s2); w.Rev != 1 {
		t.Fatalf("welcome after reload at rev %d, want 1", w.Rev)
	}
	if err := sess2.Submit(ctx, 2, 1, ot.Op{{Retain: 1}, {Insert: "b"}}); err != nil {
		t.Fatal(err)
	}
	if ack := next[protocol.Ack](t, s2); ack.Rev != 2 {
		t.Fatalf("ack %+v, want rev 2", ack)
	}
}
