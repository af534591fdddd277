package sqlite_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/sqlite"
	"github.com/tandem-dev/tandem/runtime/store/storetest"
)

func open(t *testing.T, dir string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), dir)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestDurableConformance(t *testing.T) {
	storetest.RunDurable(t, func(t *testing.T) store.Durable { return open(t, t.TempDir()) })
}

func TestArchiveConformance(t *testing.T) {
	storetest.RunArchive(t, 10000, func(t *testing.T, interval int64) storetest.ArchiveStore {
		s := open(t, t.TempDir())
		s.SetSnapshotInterval(interval)
		return s
	})
}

func TestSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir)
	if err := s.Write(ctx, []store.Entry{
		{Doc: "d", Rev: 1, Op: ot.Op{{Insert: "héllo 😀"}}},
		{Doc: "d", Rev: 2, Op: ot.Op{{Retain: 6}, {Delete: 1}, {Insert: "!"}}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := open(t, dir)
	snap, err := s2.Load(ctx, "d")
	if err != nil || snap.Rev != 2 || snap.Text != "héllo !" {
		t.Fatalf("after reopen: %+v, %v; want rev 2 %q", snap, err, "héllo !")
	}
	if err := s2.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}
}

func TestWriteRefusesBadBatchesAtomically(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		batch []store.Entry
	}{
		{"gap", []store.Entry{{Doc: "d", Rev: 3, Op: ot.Op{{Insert: "b"}}}}},
		{"op longer than the text", []store.Entry{{Doc: "d", Rev: 2, Op: ot.Op{{Retain: 5}, {Insert: "b"}}}}},
		{"good then bad", []store.Entry{
			{Doc: "d", Rev: 2, Op: ot.Op{{Insert: "b"}}},
			{Doc: "d", Rev: 3, Op: ot.Op{{Delete: 9}}},
		}},
		{"other doc fine, this one bad", []store.Entry{
			{Doc: "e", Rev: 1, Op: ot.Op{{Insert: "e"}}},
			{Doc: "d", Rev: 3, Op: ot.Op{{Insert: "b"}}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, t.TempDir())
			if err := s.Write(ctx, []store.Entry{{Doc: "d", Rev: 1, Op: ot.Op{{Insert: "a"}}}}); err != nil {
				t.Fatal(err)
			}
			if err := s.Write(ctx, tc.batch); err == nil {
				t.Fatal("Write succeeded, want an error")
			}
			for doc, want := range map[string]store.Snapshot{"d": {Doc: "d", Rev: 1, Text: "a"}, "e": {Doc: "e"}} {
				snap, err := s.Load(ctx, doc)
				if err != nil || snap != want {
					t.Fatalf("%s after refused batch: %+v, %v; want %+v", doc, snap, err, want)
				}
			}
			// The text Write keeps in memory for the next write forgot the
			// refused batch too.
			if err := s.Write(ctx, []store.Entry{{Doc: "d", Rev: 2, Op: ot.Op{{Insert: "b"}}}}); err != nil {
				t.Fatal(err)
			}
			if snap, err := s.Load(ctx, "d"); err != nil || snap.Rev != 2 || snap.Text != "ba" {
				t.Fatalf("d after the next write: %+v, %v; want rev 2 %q", snap, err, "ba")
			}
			if ops, err := s.Ops(ctx, "d", 0, -1); err != nil || len(ops) != 2 {
				t.Fatalf("d has %d operations, %v; want 2", len(ops), err)
			}
		})
	}
}

// A document's row lags its operations by up to a few hundred revisions;
// Load and the next writer (another process after a crash, here a second
// Store on the same file whose first Store was never closed) replay the
// operations after it, and a clean Close brings the row up to date.
func TestSnapshotRowLagsAndIsReplayed(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	first, err := sqlite.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	want := ""
	const n = 300
	for i := int64(1); i <= n; i++ {
		s := string(rune('a' + i%26))
		if err := first.Write(ctx, []store.Entry{{Doc: "d", Rev: i, Op: ot.Op{{Insert: s}}}}); err != nil {
			t.Fatal(err)
		}
		want = s + want
	}
	db, err := sql.Open("sqlite", filepath.Join(dir, sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rowRev := func() int64 {
		var rev int64
		if err := db.QueryRowContext(ctx, `SELECT rev FROM documents WHERE id = 'd'`).Scan(&rev); err != nil {
			t.Fatal(err)
		}
		return rev
	}
	if r := rowRev(); r >= n || r < n-256 {
		t.Fatalf("documents row at rev %d after %d writes, want it a little behind", r, n)
	}
	// "Crash": the first store is left open; another one takes over.
	second := open(t, dir)
	if snap, err := second.Load(ctx, "d"); err != nil || snap.Rev != n || snap.Text != want {
		t.Fatalf("Load = rev %d (%d chars), %v; want rev %d %q", snap.Rev, len(snap.Text), err, n, want)
	}
	if err := second.Write(ctx, []store.Entry{{Doc: "d", Rev: n + 2, Op: ot.Op{{Insert: "?"}}}}); err == nil {
		t.Fatal("a gap after the replayed revisions was accepted")
	}
	if err := second.Write(ctx, []store.Entry{{Doc: "d", Rev: n + 1, Op: ot.Op{{Insert: "!"}}}}); err != nil {
		t.Fatalf("write after the replay: %v", err)
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	if r := rowRev(); r != n+1 {
		t.Fatalf("documents row at rev %d after Close, want %d", r, n+1)
	}
	_ = first.Close()
}
