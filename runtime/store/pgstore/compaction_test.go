package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-dev/tandem/internal/testsvc"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/pgstore"
	"github.com/tandem-dev/tandem/runtime/store/storetest"
)

// passCounter is a replica's store that records, for each compaction pass
// it made under the lock, how many documents the pass examined.
type passCounter struct {
	*pgstore.Store
	mu     sync.Mutex
	passes []int // documents examined by each pass that ran to its end
}

func (p *passCounter) LockPass(ctx context.Context) (store.Compacter, func(), bool, error) {
	pass, release, held, err := p.Store.LockPass(ctx)
	if !held || err != nil {
		return pass, release, held, err
	}
	c := &countingPass{Compacter: pass}
	return c, func() {
		if ctx.Err() == nil && c.err == nil {
			p.mu.Lock()
			p.passes = append(p.passes, c.docs)
			p.mu.Unlock()
		}
		release()
	}, true, nil
}

type countingPass struct {
	store.Compacter
	docs int
	err  error
}

func (c *countingPass) Compact(ctx context.Context, ret store.Retention, now time.Time, cursor string, batch int) (store.CompactResult, error) {
	res, err := c.Compacter.Compact(ctx, ret, now, cursor, batch)
	c.docs += res.Docs
	if err != nil {
		c.err = err
	}
	return res, err
}

// Two replicas compacting one PostgreSQL, each pass longer than the
// interval between passes: one replica at a time makes a whole pass (every
// document) while the other counts its pass as skipped, every document is
// cut exactly once, and no replica reports a success it did not earn.
func TestCompactionAcrossReplicas(t *testing.T) {
	pg := testsvc.StartPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const (
		docs   = 200
		revs   = 20
		retain = 5
	)
	writer := open(t, pg.URL())
	base := time.Now().Add(-time.Hour)
	var entries []store.Entry
	for d := range docs {
		for r := int64(1); r <= revs; r++ {
			entries = append(entries, store.Entry{Doc: fmt.Sprintf("doc-%03d", d), Rev: r, Op: ot.Op{{Insert: "x"}}, Client: "c", Seq: r, User: "u", Time: base})
		}
	}
	for len(entries) > 0 {
		n := min(len(entries), 50*revs)
		if err := writer.Write(ctx, entries[:n]); err != nil {
			t.Fatal(err)
		}
		entries = entries[n:]
	}

	type replica struct {
		s   *passCounter
		reg *prometheus.Registry
	}
	replicas := make([]replica, 2)
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range replicas {
		replicas[i] = replica{s: &passCounter{Store: open(t, pg.URL())}, reg: prometheus.NewRegistry()}
		m, err := store.NewCompactionMetrics(replicas[i].reg)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A pass is 20 batches with 20 ms between them: far longer
			// than the 10 ms between passes.
			store.RunCompaction(runCtx, replicas[i].s, store.CompactionOptions{
				Retention: store.Retention{Revisions: retain},
				Every:     10 * time.Millisecond, Batch: 10, Pause: 20 * time.Millisecond,
				Metrics: m,
			})
		}()
	}
	uncut := func() []string {
		var out []string
		for d := range docs {
			doc := fmt.Sprintf("doc-%03d", d)
			snap, err := writer.Oldest(ctx, doc)
			if err != nil {
				t.Fatalf("Oldest(%s): %v", doc, err)
			}
			if snap.Rev != revs-retain {
				out = append(out, doc)
			}
		}
		return out
	}
	deadline := time.Now().Add(time.Minute)
	for left := uncut(); len(left) > 0; left = uncut() {
		if time.Now().After(deadline) {
			stop()
			wg.Wait()
			t.Fatalf("after a minute of compaction %d documents are not cut, first %s", len(left), left[0])
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Let the replicas go on for more passes: nothing left to remove.
	time.Sleep(time.Second)
	stop()
	wg.Wait()

	var ok, skipped, failed, removed, full float64
	for i, r := range replicas {
		rOK := storetest.Gathered(t, r.reg, "tandem_compaction_runs_total", "ok")
		ok += rOK
		skipped += storetest.Gathered(t, r.reg, "tandem_compaction_runs_total", "skipped")
		failed += storetest.Gathered(t, r.reg, "tandem_compaction_runs_total", "error")
		removed += storetest.Gathered(t, r.reg, "tandem_compaction_operations_removed_total", "")
		r.s.mu.Lock()
		passes := r.s.passes
		r.s.mu.Unlock()
		for _, n := range passes {
			if n != docs {
				t.Errorf("replica %d made a pass over %d documents, want all %d", i, n, docs)
			}
		}
		full += float64(len(passes))
		if float64(len(passes)) != rOK {
			t.Errorf("replica %d counts %v ok passes but made %d whole passes", i, rOK, len(passes))
		}
		last := storetest.Gathered(t, r.reg, "tandem_compaction_last_success_timestamp_seconds", "")
		if (rOK > 0) != (last > 0) {
			t.Errorf("replica %d: %v ok passes but last success at %v", i, rOK, last)
		}
	}
	t.Logf("passes: %v ok (%v whole), %v skipped, %v failed", ok, full, skipped, failed)
	if want := float64(docs * (revs - retain)); removed != want {
		t.Errorf("replicas removed %v operations together, want %v (each cut once)", removed, want)
	}
	if failed != 0 {
		t.Errorf("%v passes failed", failed)
	}
	if ok < 1 || skipped < 1 {
		t.Errorf("%v ok and %v skipped passes: want both, passes overlapping", ok, skipped)
	}
	// A batch on its own finds the lock taken while a pass holds it. A pass
	// cancelled in the middle of a query loses its connection, and the
	// server frees that session's lock once its backend has gone: soon,
	// not at once.
	var (
		p       store.Compacter
		release func()
		held    bool
		err     error
	)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		p, release, held, err = replicas[0].s.Store.LockPass(ctx)
		if err != nil || held || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || !held {
		t.Fatalf("LockPass with no pass running = %v, %v", held, err)
	}
	defer release()
	_ = p
	if _, err := replicas[1].s.Compact(ctx, store.Retention{Revisions: retain}, time.Now(), "", 10); !errors.Is(err, store.ErrCompactionBusy) {
		t.Fatalf("Compact while another store holds the pass lock: %v, want ErrCompactionBusy", err)
	}
}
