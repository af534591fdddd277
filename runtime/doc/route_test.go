package doc_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tandem-dev/tandem/runtime/doc"
	"github.com/tandem-dev/tandem/runtime/metrics"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/protocol"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/memory"
)

func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func histogramCount(t *testing.T, o prometheus.Observer) uint64 {
	t.Helper()
	var m dto.Metric
	if err := o.(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// writer is a closed-loop client: one operation in flight, the next one
// sent when the previous is acked.
type writer struct {
	id   string
	sess *doc.Session
	sink *sink
	acks map[int64]int // seq -> acks received
}

func join(t *testing.T, m *doc.Manager, docID, id string) *writer {
	t.Helper()
	s := newSink()
	sess, err := m.Join(context.Background(), docID, member("conn-"+id, id, s), nil)
	if err != nil {
		t.Fatal(err)
	}
	next[protocol.Welcome](t, s)
	return &writer{id: id, sess: sess, sink: s, acks: map[int64]int{}}
}

// await reads the writer's messages until seq is acked, counting every ack.
func (w *writer) await(seq int64, within time.Duration) error {
	timeout := time.After(within)
	for w.acks[seq] == 0 {
		select {
		case m := <-w.sink.ch:
			switch v := m.(type) {
			case protocol.Ack:
				w.acks[v.Seq]++
			case protocol.Error:
				return fmt.Errorf("writer %s: error %+v", w.id, v)
			}
		case <-timeout:
			return fmt.Errorf("writer %s: seq %d not acked within %v", w.id, seq, within)
		}
	}
	return nil
}

// drain counts the acks that arrive within d (duplicates would show here).
func (w *writer) drain(d time.Duration) {
	timeout := time.After(d)
	for {
		select {
		case m := <-w.sink.ch:
			if v, ok := m.(protocol.Ack); ok {
				w.acks[v.Seq]++
			}
		case <-timeout:
			return
		}
	}
}

func (w *writer) ackedOnce(t *testing.T, n int64) {
	t.Helper()
	for seq := int64(1); seq <= n; seq++ {
		if w.acks[seq] != 1 {
			t.Errorf("writer %s: seq %d acked %d times, want once", w.id, seq, w.acks[seq])
		}
	}
}

// committedOnce checks that the log holds every (client, seq) at most once.
func committedOnce(t *testing.T, l store.Log, docID string) []store.Entry {
	t.Helper()
	entries, err := l.Read(context.Background(), docID, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int64{}
	for _, e := range entries {
		k := fmt.Sprintf("%s/%d", e.Client, e.Seq)
		if rev, dup := seen[k]; dup {
			t.Errorf("%s committed twice: revisions %d and %d", k, rev, e.Rev)
		}
		seen[k] = e.Rev
	}
	return entries
}

// TestOwnerAppendsForBothReplicas runs closed-loop writers on two managers
// sharing a log and a router backend: one holds the document's lease and
// appends everything, the other forwards, and nobody races on the log.
func TestOwnerAppendsForBothReplicas(t *testing.T) {
	ctx := context.Background()
	l := memory.NewLog(memory.LogOptions{})
	t.Cleanup(func() { _ = l.Close(ctx) })
	p := memory.NewPresence(memory.PresenceOptions{TTL: time.Minute})
	t.Cleanup(p.Close)
	routes := memory.NewRoutes(time.Second, nil)
	metA, metB := metrics.New(), metrics.New()
	a := newManager(t, doc.Options{Log: l, Presence: p, Metrics: metA, Router: routes.Router("a")})
	b := newManager(t, doc.Options{Log: l, Presence: p, Metrics: metB, Router: routes.Router("b")})

	const perWriter = 60
	var writers []*writer
	for i, m := range []*doc.Manager{a, b, a, b, a, b} {
		writers = append(writers, join(t, m, "hot", fmt.Sprintf("c%d", i)))
	}
	var wg sync.WaitGroup
	for _, w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := int64(1); seq <= perWriter; seq++ {
				// Made on revision 0: the owner transforms it over
				// everything committed since.
				if err := w.sess.Submit(ctx, seq, 0, ot.Op{{Insert: w.id[1:]}}); err != nil {
					t.Error(err)
					return
				}
				if err := w.await(seq, 10*time.Second); err != nil {
					t.Error(err)
					return
				}
			}
			w.drain(300 * time.Millisecond)
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, w := range writers {
		w.ackedOnce(t, perWriter)
	}
	total := int64(len(writers) * perWriter)
	sa, _ := a.Snapshot(ctx, "hot")
	sb, _ := b.Snapshot(ctx, "hot")
	if sa != sb || sa.Rev != total {
		t.Fatalf("replicas differ or incomplete: A rev %d, B rev %d, want %d", sa.Rev, sb.Rev, total)
	}
	for i := range writers {
		if c := strings.Count(sa.Text, fmt.Sprint(i)); c != perWriter {
			t.Errorf("writer %d's text appears %d times, want %d", i, c, perWriter)
		}
	}
	committedOnce(t, l, "hot")
	fa, fb := counter(t, metA.Forwarded), counter(t, metB.Forwarded)
	if (fa == 0) == (fb == 0) || fa+fb != float64(total/2) {
		t.Errorf("forwarded A %v, B %v: want one replica to forward its %d submissions", fa, fb, total/2)
	}
	// Every submission is counted once by the replica its client is on,
	// under its route, and every ack is timed there.
	local := counter(t, metA.Submissions.WithLabelValues(metrics.RouteLocal)) + counter(t, metB.Submissions.WithLabelValues(metrics.RouteLocal))
	fwd := counter(t, metA.Submissions.WithLabelValues(metrics.RouteForwarded)) + counter(t, metB.Submissions.WithLabelValues(metrics.RouteForwarded))
	if local != float64(total/2) || fwd != float64(total/2) {
		t.Errorf("submissions local %v, forwarded %v; want %d each", local, fwd, total/2)
	}
	timed := histogramCount(t, metA.AckTime.WithLabelValues(metrics.RouteForwarded)) + histogramCount(t, metB.AckTime.WithLabelValues(metrics.RouteForwarded))
	if timed != uint64(total/2) {
		t.Errorf("forwarded acks timed = %d, want %d", timed, total/2)
	}
	if acks := counter(t, metA.Acks.WithLabelValues(metrics.AckCommit)) + counter(t, metB.Acks.WithLabelValues(metrics.AckCommit)); acks != float64(total) {
		t.Errorf("acks = %v, want %d", acks, total)
	}
	if c := counter(t, metA.CommitRetries) + counter(t, metB.CommitRetries); c != 0 {
		t.Errorf("commit conflicts = %v, want none: only the owner appends", c)
	}
	if tb := counter(t, metA.TakeBacks) + counter(t, metB.TakeBacks); tb != 0 {
		t.Errorf("take-backs = %v, want none", tb)
	}
	if c := counter(t, metA.LeaseClaims) + counter(t, metB.LeaseClaims); c != 1 {
		t.Errorf("lease claims = %v, want 1", c)
	}
}

// delayedLog delivers its subscriptions' entries late, so that a replica
// learns of a commit only from its own reads.
type delayedLog struct {
	store.Log
	delay time.Duration
}

func (d delayedLog) Subscribe(ctx context.Context, doc string, after int64) (store.Subscription, error) {
	sub, err := d.Log.Subscribe(ctx, doc, after)
	if err != nil {
		return nil, err
	}
	out := &delayedSub{c: make(chan store.Entry, 1024), inner: sub}
	go func() {
		defer close(out.c)
		for e := range sub.C() {
			select {
			case <-time.After(d.delay):
			case <-ctx.Done():
				return
			}
			out.c <- e
		}
	}()
	return out, nil
}

type delayedSub struct {
	c     chan store.Entry
	inner store.Subscription
}

func (s *delayedSub) C() <-chan store.Entry { return s.c }
func (s *delayedSub) Err() error            { return s.inner.Err() }

// TestTakeBack covers a forwarded submission that gets neither its entry
// nor a reply in time: the origin appends it itself, and it is committed
// and acked exactly once whether or not the owner had committed it.
func TestTakeBack(t *testing.T) {
	tests := []struct {
		name string
		// ownerCommits: the silent owner appends what it receives (and
		// never replies); the origin sees the entry only after the timeout.
		ownerCommits bool
	}{
		{"owner lost it", false},
		{"owner committed it unseen", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			l := memory.NewLog(memory.LogOptions{})
			t.Cleanup(func() { _ = l.Close(ctx) })
			routes := memory.NewRoutes(time.Minute, nil)
			// The owner: holds the lease, listens, and never answers.
			owner := routes.Router("owner")
			t.Cleanup(owner.Close)
			if _, _, err := owner.Claim(ctx, "d"); err != nil {
				t.Fatal(err)
			}
			received := make(chan store.Forwarded, 16)
			go func() {
				for msg := range owner.Inbox() {
					for _, f := range msg.Forwarded {
						received <- f
					}
				}
			}()
			met := metrics.New()
			const timeout = 300 * time.Millisecond
			var log store.Log = l
			if tc.ownerCommits {
				log = delayedLog{Log: l, delay: 3 * timeout}
			}
			m := newManager(t, doc.Options{Log: log, Metrics: met, Router: routes.Router("origin"), ForwardTimeout: timeout})
			w := join(t, m, "d", "c1")
			if err := w.sess.Submit(ctx, 1, 0, ot.Op{{Insert: "x"}}); err != nil {
				t.Fatal(err)
			}
			var f store.Forwarded
			select {
			case f = <-received:
			case <-time.After(5 * time.Second):
				t.Fatal("nothing forwarded to the owner")
			}
			if f.Client != "c1" || f.Seq != 1 || f.Rev != 0 || f.Origin != "origin" || f.Doc != "d" {
				t.Fatalf("forwarded %+v", f)
			}
			if tc.ownerCommits {
				e := store.Entry{Doc: "d", Rev: 1, Op: f.Op, Client: f.Client, Seq: f.Seq, User: f.User.ID}
				if err := l.Append(ctx, "d", 0, []store.Entry{e}); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.await(1, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			if tc.ownerCommits {
				w.drain(4 * timeout) // past the delayed delivery of the entry
			} else {
				w.drain(2 * timeout)
			}
			w.ackedOnce(t, 1)
			if entries := committedOnce(t, l, "d"); len(entries) != 1 {
				t.Fatalf("log holds %d entries, want 1", len(entries))
			}
			snap, err := m.Snapshot(ctx, "d")
			if err != nil || snap.Text != "x" {
				t.Fatalf("snapshot = %+v, %v; want x", snap, err)
			}
			if got := counter(t, met.TakeBacks); got != 1 {
				t.Errorf("take-backs = %v, want 1", got)
			}
			if got := counter(t, met.Forwarded); got != 1 {
				t.Errorf("forwarded = %v, want 1", got)
			}
		})
	}
}

// TestOwnerGone: forwarding to a replica that no longer listens fails at
// once, and the origin appends itself without waiting for the timeout.
func TestOwnerGone(t *testing.T) {
	ctx := context.Background()
	l := memory.NewLog(memory.LogOptions{})
	t.Cleanup(func() { _ = l.Close(ctx) })
	routes := memory.NewRoutes(time.Minute, nil)
	ra, rb := routes.Router("a"), routes.Router("b")
	metB := metrics.New()
	a := newManager(t, doc.Options{Log: l, Metrics: metrics.New(), Router: ra})
	b := newManager(t, doc.Options{Log: l, Metrics: metB, Router: rb, ForwardTimeout: time.Minute})
	wa, wb := join(t, a, "d", "ca"), join(t, b, "d", "cb")
	// a appends first and so holds the lease.
	if err := wa.sess.Submit(ctx, 1, 0, ot.Op{{Insert: "a"}}); err != nil {
		t.Fatal(err)
	}
	if err := wa.await(1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := wb.sess.Submit(ctx, 1, 0, ot.Op{{Insert: "b"}}); err != nil {
		t.Fatal(err)
	}
	if err := wb.await(1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if counter(t, metB.Forwarded) != 1 {
		t.Fatalf("b forwarded %v submissions, want 1", counter(t, metB.Forwarded))
	}
	ra.Close() // a dies: its lease stays until it expires
	for seq := int64(2); seq <= 5; seq++ {
		if err := wb.sess.Submit(ctx, seq, 0, ot.Op{{Insert: "b"}}); err != nil {
			t.Fatal(err)
		}
		if err := wb.await(seq, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	wb.drain(200 * time.Millisecond)
	wb.ackedOnce(t, 5)
	if got := counter(t, metB.TakeBacks); got != 1 {
		t.Errorf("take-backs = %v, want 1 (then b appends itself for a lease period)", got)
	}
	if entries := committedOnce(t, l, "d"); len(entries) != 6 {
		t.Errorf("log holds %d entries, want 6", len(entries))
	}
}
