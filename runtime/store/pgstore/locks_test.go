package pgstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/internal/testsvc"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/store"
)

// The locks compaction and deletes rely on: a document held the way a
// compaction step holds it (FOR KEY SHARE) does not stall a Write of it,
// and a Delete waits for it; a Delete that arrives while a checked Write
// is between its check and its commit waits for the commit and then
// removes what was written.
func TestWriteDeleteAndCompactionLocks(t *testing.T) {
	pg := testsvc.StartPostgres(t)
	s := open(t, pg.URL())
	ctx := ctxFor(t)
	// Each entry inserts "x" at the start: valid at any revision.
	entry := func(doc string, rev int64) []store.Entry {
		return []store.Entry{{Doc: doc, Rev: rev, Op: ot.Op{{Insert: "x"}}, Client: "c", Seq: rev, User: "u", Time: time.Now()}}
	}

	t.Run("compaction's hold stalls no write, delays a delete", func(t *testing.T) {
		doc := "held"
		if err := s.Write(ctx, entry(doc, 1)); err != nil {
			t.Fatal(err)
		}
		tx, err := s.Pool().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(context.Background()) //nolint:errcheck // test cleanup
		if _, err := tx.Exec(ctx, `SELECT rev FROM documents WHERE id = $1 FOR KEY SHARE`, doc); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := s.Write(wctx, entry(doc, 2)); err != nil {
			t.Fatalf("Write while compaction holds the document: %v", err)
		}
		deleted := make(chan error, 1)
		go func() { deleted <- s.Delete(ctx, doc) }()
		select {
		case err := <-deleted:
			t.Fatalf("Delete did not wait for compaction's hold (err %v)", err)
		case <-time.After(500 * time.Millisecond):
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-deleted; err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if snap, err := s.Load(ctx, doc); err != nil || snap.Rev != 0 {
			t.Fatalf("after delete: %+v, %v", snap, err)
		}
	})

	t.Run("delete during a checked write waits and wins", func(t *testing.T) {
		doc := "checked"
		deleted := make(chan error, 1)
		var early bool
		stale, err := s.WriteChecked(ctx, entry(doc, 1), func(ctx context.Context, docs []string) ([]string, error) {
			go func() { deleted <- s.Delete(context.WithoutCancel(ctx), doc) }()
			select {
			case err := <-deleted:
				early = true
				t.Errorf("Delete did not wait for the checked write (err %v)", err)
			case <-time.After(500 * time.Millisecond):
			}
			return nil, nil // still current when checked
		})
		if err != nil || len(stale) != 0 {
			t.Fatalf("WriteChecked = %v, %v", stale, err)
		}
		if !early {
			if err := <-deleted; err != nil {
				t.Fatalf("Delete: %v", err)
			}
		}
		if snap, err := s.Load(ctx, doc); err != nil || snap.Rev != 0 {
			t.Fatalf("after delete: %+v, %v", snap, err)
		}
		if ops, err := s.Ops(ctx, doc, 0, -1); err != nil || len(ops) != 0 {
			t.Fatalf("ops after delete: %d, %v", len(ops), err)
		}
	})

	t.Run("stale documents are left out", func(t *testing.T) {
		batch := append(entry("kept", 1), entry("stale", 1)...)
		stale, err := s.WriteChecked(ctx, batch, func(ctx context.Context, docs []string) ([]string, error) {
			return []string{"stale"}, nil
		})
		if err != nil || len(stale) != 1 || stale[0] != "stale" {
			t.Fatalf("WriteChecked = %v, %v", stale, err)
		}
		if snap, err := s.Load(ctx, "kept"); err != nil || snap.Rev != 1 {
			t.Fatalf("kept document: %+v, %v", snap, err)
		}
		if docs, err := s.List(ctx, "stale", "", 10); err != nil || len(docs) != 0 {
			t.Fatalf("stale document stored: %v, %v", docs, err)
		}
	})
}
