package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/internal/testsvc"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/pgstore"
	"github.com/tandem-dev/tandem/runtime/store/sqlite"
)

// Storage churn: churnDocs documents each get churnRounds rounds of
// "insert 60 KB, delete it" (the workload that left a 127 MB SQLite file
// for empty documents before retention), written the way the embedded
// log writes them (one Write per commit, all documents in turn). Then a
// minute passes (the clock given to compaction) and a retention of one
// minute compacts everything older. The benchmark reports the store's
// size after the churn and after compaction, and the live text.
const (
	churnDocs   = 10
	churnRounds = 300 // 600 operations per document
	churnBytes  = 60 << 10
)

// churn writes the workload to d; the entries are stamped from start on,
// a millisecond apart.
func churn(b *testing.B, ctx context.Context, d store.Durable, start time.Time) {
	b.Helper()
	chunk := strings.Repeat("x", churnBytes)
	t := start
	for round := range churnRounds {
		for i := range churnDocs {
			doc := "churn-" + string(rune('a'+i))
			base := int64(round * 2)
			t = t.Add(time.Millisecond)
			entries := []store.Entry{
				{Doc: doc, Rev: base + 1, Op: ot.Op{{Insert: chunk}}, Client: "c", Seq: base + 1, User: "u", Time: t},
				{Doc: doc, Rev: base + 2, Op: ot.Op{{Delete: churnBytes}}, Client: "c", Seq: base + 2, User: "u", Time: t},
			}
			for _, e := range entries {
				if err := d.Write(ctx, []store.Entry{e}); err != nil {
					b.Fatalf("write %s rev %d: %v", doc, e.Rev, err)
				}
			}
		}
	}
}

func compactAll(b *testing.B, ctx context.Context, a store.Archive, now time.Time) {
	b.Helper()
	res := store.CompactAll(ctx, a, store.CompactionOptions{
		Retention: store.Retention{Age: time.Minute}, Batch: 100, Pause: time.Millisecond,
		Now: func() time.Time { return now },
	})
	if res.Docs < churnDocs {
		b.Fatalf("compaction examined %d documents, want %d", res.Docs, churnDocs)
	}
}

func BenchmarkStorageChurnSQLite(b *testing.B) {
	ctx := context.Background()
	for range b.N {
		dir := b.TempDir()
		s, err := sqlite.Open(ctx, dir)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now().Add(-time.Minute)
		churn(b, ctx, s, start)
		// Checkpoint the WAL so that the file holds everything.
		size := func() float64 {
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			st, err := os.Stat(filepath.Join(dir, sqlite.FileName))
			if err != nil {
				b.Fatal(err)
			}
			if s, err = sqlite.Open(ctx, dir); err != nil {
				b.Fatal(err)
			}
			return float64(st.Size())
		}
		before := size()
		compactAll(b, ctx, s, start.Add(2*time.Minute))
		// Hand every free page back (compaction does a bounded share per call).
		for range 200 {
			compactAll(b, ctx, s, start.Add(2*time.Minute))
		}
		after := size()
		b.ReportMetric(before/(1<<20), "MB-before")
		b.ReportMetric(after/(1<<20), "MB-after")
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStorageChurnPostgres(b *testing.B) {
	ctx := context.Background()
	pg := testsvc.StartPostgres(b)
	for range b.N {
		s, err := pgstore.Open(ctx, pg.URL(), nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Pool().Exec(ctx, `TRUNCATE documents CASCADE`); err != nil {
			b.Fatal(err)
		}
		start := time.Now().Add(-time.Minute)
		churn(b, ctx, s, start)
		size := func() float64 {
			// VACUUM FULL so that the size is what the rows need, not
			// what autovacuum has not got round to yet.
			for _, tbl := range []string{"operations", "snapshots", "documents"} {
				if _, err := s.Pool().Exec(ctx, "VACUUM FULL "+tbl); err != nil {
					b.Fatal(err)
				}
			}
			var n int64
			if err := s.Pool().QueryRow(ctx, `SELECT pg_total_relation_size('operations') + pg_total_relation_size('snapshots') + pg_total_relation_size('documents')`).Scan(&n); err != nil {
				b.Fatal(err)
			}
			return float64(n)
		}
		before := size()
		compactAll(b, ctx, s, start.Add(2*time.Minute))
		after := size()
		b.ReportMetric(before/(1<<20), "MB-before")
		b.ReportMetric(after/(1<<20), "MB-after")
		s.Close()
	}
}
