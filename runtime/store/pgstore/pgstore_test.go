package pgstore_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/internal/testsvc"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/pgstore"
	"github.com/tandem-dev/tandem/runtime/store/storetest"
)

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func open(t *testing.T, url string) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(ctxFor(t), url, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestDurableConformance(t *testing.T) {
	pg := testsvc.StartPostgres(t)
	storetest.RunDurable(t, func(t *testing.T) store.Durable { return open(t, pg.URL()) })
}

// Replicas starting together race to migrate; the advisory lock must make
// exactly one of them apply each migration and the others see it applied.
func TestConcurrentMigrations(t *testing.T) {
	pg := testsvc.StartPostgres(t)
	const replicas = 4
	var wg sync.WaitGroup
	errs := make([]error, replicas)
	stores := make([]*pgstore.Store, replicas)
	for i := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = pgstore.Open(ctxFor(t), pg.URL(), nil)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: Open: %v", i, err)
		}
		defer stores[i].Close()
	}
	var applied int
	if err := stores[0].Pool().QueryRow(ctxFor(t),
		`SELECT count(*) FROM tandem_schema_migrations WHERE version_id > 0 AND is_applied`).Scan(&applied); err != nil {
		t.Fatalf("count migrations: %v", err)
	}
	if applied != 1 {
		t.Fatalf("migration rows = %d, want 1 (each migration applied once)", applied)
	}
}

// A batch that cannot be applied is refused as a whole, is classified as
// permanent (so the flusher dead-letters rather than retries it), and
// leaves every document of the batch untouched.
func TestWriteRejectsBadBatchAtomically(t *testing.T) {
	pg := testsvc.StartPostgres(t)
	s := open(t, pg.URL())
	ctx := ctxFor(t)
	good := store.Entry{Doc: "good", Rev: 1, Op: ot.Op{{Insert: "hi"}}, Client: "c", Seq: 1, User: "u", Time: time.Now()}
	tests := []struct {
		name string
		bad  store.Entry
	}{
		{"gap in revisions", store.Entry{Doc: "bad", Rev: 3, Op: ot.Op{{Insert: "x"}}, Client: "c", Seq: 1, User: "u"}},
		{"op longer than text", store.Entry{Doc: "bad", Rev: 1, Op: ot.Op{{Retain: 10}, {Insert: "x"}}, Client: "c", Seq: 1, User: "u"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Write(ctx, []store.Entry{good, tc.bad})
			if err == nil {
				t.Fatal("Write succeeded, want an error")
			}
			if !errors.Is(err, pgstore.ErrInvalidBatch) || !pgstore.IsPermanent(err) {
				t.Fatalf("Write error %v is not a permanent invalid batch", err)
			}
			for _, doc := range []string{"good", "bad"} {
				snap, err := s.Load(ctx, doc)
				if err != nil || snap.Rev != 0 {
					t.Fatalf("Load(%s) after refused batch = %+v, %v; want rev 0", doc, snap, err)
				}
			}
		})
	}
}

// An outage is not permanent: the flusher must wait it out instead of
// dead-lettering.
func TestOutageIsNotPermanent(t *testing.T) {
	pg := testsvc.StartPostgres(t)
	s := open(t, pg.URL())
	pg.Stop()
	ctx, cancel := context.WithTimeout(ctxFor(t), 5*time.Second)
	defer cancel()
	err := s.Write(ctx, []store.Entry{{Doc: "d", Rev: 1, Op: ot.Op{{Insert: "x"}}, Client: "c", Seq: 1, User: "u"}})
	if err == nil {
		t.Fatal("Write with PostgreSQL stopped succeeded")
	}
	if pgstore.IsPermanent(err) {
		t.Fatalf("outage error %v classified as permanent", err)
	}
	pg.Start()
	if err := s.Write(ctxFor(t), []store.Entry{{Doc: "d", Rev: 1, Op: ot.Op{{Insert: "x"}}, Client: "c", Seq: 1, User: "u"}}); err != nil {
		t.Fatalf("Write after restart: %v", err)
	}
	if snap, err := s.Load(ctxFor(t), "d"); err != nil || snap.Text != "x" || snap.Rev != 1 {
		t.Fatalf("Load after restart = %+v, %v", snap, err)
	}
}
