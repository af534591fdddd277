package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tandem-dev/tandem/internal/testsvc"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/pgstore"
	"github.com/tandem-dev/tandem/runtime/store/redisstore"
	"github.com/tandem-dev/tandem/runtime/store/sqlite"
)

// Storage churn: churnDocs documents each get churnRounds rounds of
// "insert 60 KB, delete it" (the workload that left a 127 MB SQLite file
// for empty documents before retention), written the way the embedded
// log writes them (one Write per commit, all documents in turn). The text
// is random letters, which neither PostgreSQL's TOAST compression nor
// anything else shrinks much, so the sizes are those of real typing or
// pasting. Then a minute passes (the clock given to compaction) and a
// retention of one minute compacts everything older. The benchmark
// reports the store's size after the churn and after compaction, and the
// live text. (churnDocs, churnRounds and churnBytes are in
// storage_report.go, which describes the workload in docs/benchmarks.md.)

// churn writes rounds of the workload to docs new documents of d (their
// ids start with prefix), stamped from start on a millisecond apart, and
// returns the revision each document is at.
func churn(tb testing.TB, ctx context.Context, d store.Durable, start time.Time, prefix string, docs, rounds int) int64 {
	tb.Helper()
	r := rand.New(rand.NewPCG(uint64(docs), uint64(rounds)))
	t := start
	for round := range rounds {
		for i := range docs {
			doc := prefix + string(rune('a'+i))
			base := int64(round * 2)
			t = t.Add(time.Millisecond)
			entries := []store.Entry{
				{Doc: doc, Rev: base + 1, Op: ot.Op{{Insert: randomText(r, churnBytes)}}, Client: "c", Seq: base + 1, User: "u", Time: t},
				{Doc: doc, Rev: base + 2, Op: ot.Op{{Delete: churnBytes}}, Client: "c", Seq: base + 2, User: "u", Time: t},
			}
			for _, e := range entries {
				if err := d.Write(ctx, []store.Entry{e}); err != nil {
					tb.Fatalf("write %s rev %d: %v", doc, e.Rev, err)
				}
			}
		}
	}
	return int64(rounds * 2)
}

// randomText returns n random letters.
func randomText(r *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + r.IntN(26))
	}
	return string(b)
}

// compactAll runs one compaction pass with a retention of a minute and the
// clock at now.
func compactAll(tb testing.TB, ctx context.Context, a store.Archive, now time.Time, docs int) store.CompactResult {
	tb.Helper()
	res := store.CompactAll(ctx, a, store.CompactionOptions{
		Retention: store.Retention{Age: time.Minute}, Batch: 100, Pause: time.Millisecond,
		Now: func() time.Time { return now },
	})
	if res.Docs < docs {
		tb.Fatalf("compaction examined %d documents, want %d", res.Docs, docs)
	}
	return res
}

// compactUntilFree runs compaction passes, as the background compaction
// does every --compaction-interval, until SQLite has handed every free
// page back to the file system (each pass vacuums a bounded number), and
// returns how many passes it took.
func compactUntilFree(tb testing.TB, ctx context.Context, s *sqlite.Store, now time.Time, docs int) int {
	tb.Helper()
	for passes := 1; passes <= 1000; passes++ {
		compactAll(tb, ctx, s, now, docs)
		free, err := s.FreePages(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		if free == 0 {
			return passes
		}
	}
	tb.Fatal("free pages left after 1000 compaction passes")
	return 0
}

// sqliteSize is the size of the SQLite file in dir once the WAL is
// checkpointed: it closes s and returns it opened again.
func sqliteSize(tb testing.TB, ctx context.Context, dir string, s *sqlite.Store) (*sqlite.Store, float64) {
	tb.Helper()
	if err := s.Close(); err != nil {
		tb.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, sqlite.FileName))
	if err != nil {
		tb.Fatal(err)
	}
	if s, err = sqlite.Open(ctx, dir); err != nil {
		tb.Fatal(err)
	}
	return s, float64(st.Size())
}

// pgSize is what the tables take on disk (with their TOAST tables and
// indexes) after a plain VACUUM of each, or VACUUM FULL with full. A plain
// VACUUM is what autovacuum runs in production: it makes the space of
// removed rows reusable and gives back only empty pages at the end of a
// table; VACUUM FULL rewrites the tables (and locks them while it does).
func pgSize(tb testing.TB, ctx context.Context, s *pgstore.Store, full bool) float64 {
	tb.Helper()
	vacuum := "VACUUM "
	if full {
		vacuum = "VACUUM FULL "
	}
	for _, tbl := range []string{"operations", "snapshots", "documents"} {
		if _, err := s.Pool().Exec(ctx, vacuum+tbl); err != nil {
			tb.Fatal(err)
		}
	}
	var n int64
	if err := s.Pool().QueryRow(ctx, `SELECT pg_total_relation_size('operations') + pg_total_relation_size('snapshots') + pg_total_relation_size('documents')`).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return float64(n)
}

// reportChurn reports a churn's sizes.
func reportChurn(b *testing.B, empty, before, after float64) {
	b.Helper()
	b.ReportMetric(empty/(1<<20), "MB-empty")
	b.ReportMetric(before/(1<<20), "MB-before")
	b.ReportMetric(after/(1<<20), "MB-after")
}

// checkChurn fails when compaction left more than churnSlack above the
// empty store: the documents end empty and the one-minute window holds
// nothing, so only their rows and the snapshots at their cuts (a few
// hundred bytes each) may remain.
func checkChurn(b *testing.B, what string, empty, after float64) {
	b.Helper()
	if after-empty > churnSlack {
		b.Errorf("after compaction %s is %.2f MB, %.2f MB above an empty one; want at most %.2f MB above",
			what, after/(1<<20), (after-empty)/(1<<20), float64(churnSlack)/(1<<20))
	}
}

// churnSlack is how much larger than an empty store the store may be
// after the churn is compacted away: ten times the few pages the
// documents' rows and cut snapshots take.
const churnSlack = 10 * 64 << 10

func BenchmarkStorageChurnSQLite(b *testing.B) {
	ctx := context.Background()
	for range b.N {
		dir := b.TempDir()
		s, err := sqlite.Open(ctx, dir)
		if err != nil {
			b.Fatal(err)
		}
		s, empty := sqliteSize(b, ctx, dir, s)
		start := time.Now().Add(-time.Minute)
		churn(b, ctx, s, start, "churn-", churnDocs, churnRounds)
		s, before := sqliteSize(b, ctx, dir, s)
		// Passes until every free page is back: the first removes the
		// history, each vacuums a bounded number of pages.
		passes := compactUntilFree(b, ctx, s, start.Add(2*time.Minute), churnDocs)
		s, after := sqliteSize(b, ctx, dir, s)
		reportChurn(b, empty, before, after)
		b.ReportMetric(float64(passes), "passes")
		checkChurn(b, "the file", empty, after)
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
		empty := pgSize(b, ctx, s, false)
		start := time.Now().Add(-time.Minute)
		churn(b, ctx, s, start, "churn-", churnDocs, churnRounds)
		before := pgSize(b, ctx, s, false)
		compactAll(b, ctx, s, start.Add(2*time.Minute), churnDocs)
		after := pgSize(b, ctx, s, false)
		reportChurn(b, empty, before, after)
		// A plain VACUUM keeps pages that are not at a table's end (they
		// are reused); what the rows need is the size once rewritten.
		full := pgSize(b, ctx, s, true)
		b.ReportMetric(full/(1<<20), "MB-after-full")
		checkChurn(b, "the tables (VACUUM FULL)", empty, full)
		s.Close()
	}
}

// A churn of two documents on each durable store, compacted with a
// retention of a minute, leaves a store within ten times the live text
// plus the retained window (the bound): the documents keep 60 KB
// each, written inside the window, after 100 rounds of 60 KB inserted and
// deleted before it (12 MB of history that must go).
func TestStorageChurnBounded(t *testing.T) {
	const (
		docs   = 2
		rounds = 100
	)
	// The bound, above an empty store: the live text (60 KB a document)
	// and the retained window (the one 60 KB insert a document), ten times.
	const bound = 10 * (docs*churnBytes + docs*churnBytes)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now().Add(-time.Hour)
	now := time.Now()
	// keep writes the last, retained, insert of each document.
	keep := func(t *testing.T, d store.Durable, rev int64) {
		r := rand.New(rand.NewPCG(7, 7))
		for i := range docs {
			doc := "churn-" + string(rune('a'+i))
			if err := d.Write(ctx, []store.Entry{{Doc: doc, Rev: rev + 1, Op: ot.Op{{Insert: randomText(r, churnBytes)}}, Client: "c", Seq: rev + 1, User: "u", Time: now}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	check := func(t *testing.T, name string, empty, before, after float64) {
		t.Logf("%s: empty %.2f MB, after the churn %.2f MB, after compaction %.2f MB (bound %.2f MB above empty)",
			name, empty/(1<<20), before/(1<<20), after/(1<<20), float64(bound)/(1<<20))
		if after-empty > bound {
			t.Errorf("%s is %.2f MB above an empty store after compaction; want at most %.2f MB (10x live text plus retained window)",
				name, (after-empty)/(1<<20), float64(bound)/(1<<20))
		}
	}
	t.Run("sqlite", func(t *testing.T) {
		dir := t.TempDir()
		s, err := sqlite.Open(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = s.Close() }()
		s, empty := sqliteSize(t, ctx, dir, s)
		keep(t, s, churn(t, ctx, s, start, "churn-", docs, rounds))
		s, before := sqliteSize(t, ctx, dir, s)
		passes := compactUntilFree(t, ctx, s, now, docs)
		s, after := sqliteSize(t, ctx, dir, s)
		t.Logf("%d compaction passes until no page was free", passes)
		check(t, "the SQLite file", empty, before, after)
	})
	t.Run("postgres", func(t *testing.T) {
		pg := testsvc.StartPostgres(t)
		s, err := pgstore.Open(ctx, pg.URL(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		empty := pgSize(t, ctx, s, false)
		keep(t, s, churn(t, ctx, s, start, "churn-", docs, rounds))
		before := pgSize(t, ctx, s, false)
		compactAll(t, ctx, s, now, docs)
		// A plain VACUUM (autovacuum's) leaves the files at their high
		// water mark, but the space of the removed rows is reused: the
		// same churn again, on other documents, hardly grows them.
		first := pgSize(t, ctx, s, false)
		churn(t, ctx, s, start, "again-", docs, rounds)
		compactAll(t, ctx, s, now, 2*docs)
		second := pgSize(t, ctx, s, false)
		t.Logf("after a plain VACUUM: %.2f MB after the first churn's compaction, %.2f MB after the second's", first/(1<<20), second/(1<<20))
		if second-first > bound {
			t.Errorf("a second churn grew the tables from %.2f to %.2f MB after a plain VACUUM: the space compaction freed is not reused",
				first/(1<<20), second/(1<<20))
		}
		// What the rows need, once rewritten: the second churn's
		// documents end empty and add only their rows and cut snapshots.
		check(t, "the PostgreSQL tables (after VACUUM FULL)", empty, before, pgSize(t, ctx, s, true))
	})
}

// Idle documents in Redis: idleDocs documents each get one edit through
// the Redis log, are flushed to PostgreSQL and then left alone. Their keys
// expire after the idle TTL (a short one here; 10 minutes by default), so
// Redis memory (INFO memory, used_memory) falls back to about what an
// empty Redis uses. Reported: used_memory before any document, with the
// documents active, and after their TTL.
// (idleDocs: storage_report.go.)

func BenchmarkStorageIdleRedis(b *testing.B) {
	ctx := context.Background()
	rds := testsvc.StartRedis(b)
	pg := testsvc.StartPostgres(b)
	for range b.N {
		ropts, err := redis.ParseURL(rds.URL())
		if err != nil {
			b.Fatal(err)
		}
		rdb := redis.NewClient(ropts)
		if err := rdb.FlushAll(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		durable, err := pgstore.Open(ctx, pg.URL(), nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := durable.Pool().Exec(ctx, `TRUNCATE documents CASCADE`); err != nil {
			b.Fatal(err)
		}
		const ttl = 3 * time.Second
		s, err := redisstore.New(rdb, durable, redisstore.Options{IdleTTL: ttl, FlushInterval: 50 * time.Millisecond}, prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		baseline := usedMemory(b, rdb)
		for i := range idleDocs {
			doc := fmt.Sprintf("idle-%05d", i)
			if err := s.Log.Append(ctx, doc, 0, []store.Entry{{Doc: doc, Rev: 1, Op: ot.Op{{Insert: "hello, world"}},
				Client: "c", Seq: 1, User: "u", Time: time.Now()}}); err != nil {
				b.Fatalf("append to %s: %v", doc, err)
			}
		}
		active := usedMemory(b, rdb)
		// Every document flushed, then idle past its TTL.
		deadline := time.Now().Add(5 * time.Minute)
		for {
			docs, err := durable.List(ctx, "idle-", "idle-09998", 10)
			if err != nil {
				b.Fatal(err)
			}
			if len(docs) == 1 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("the documents were not flushed within 5 minutes")
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Then wait for the keys to expire (Redis expires them actively,
		// a sample at a time): until no document key is left.
		for {
			n, err := rdb.DBSize(ctx).Result()
			if err != nil {
				b.Fatal(err)
			}
			keys, err := rdb.Keys(ctx, "*idle-*").Result()
			if err != nil {
				b.Fatal(err)
			}
			if len(keys) == 0 {
				b.ReportMetric(float64(n), "keys-left")
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%d document keys still in Redis after %v", len(keys), 5*time.Minute)
			}
			time.Sleep(ttl / 2)
		}
		after := usedMemory(b, rdb)
		b.ReportMetric(baseline/(1<<20), "MB-empty")
		b.ReportMetric(active/(1<<20), "MB-active")
		b.ReportMetric(after/(1<<20), "MB-after-ttl")
		if after >= 5<<20 {
			b.Errorf("Redis uses %.1f MB with %d idle persisted documents past their TTL; the target is under 5 MB", after/(1<<20), idleDocs)
		}
		closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		s.Close(closeCtx)
		cancel()
		durable.Close()
		rdb.Close()
	}
}

// usedMemory is Redis's used_memory (INFO memory), in bytes.
func usedMemory(b *testing.B, rdb *redis.Client) float64 {
	b.Helper()
	info, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("used_memory %q: %v", v, err)
			}
			return n
		}
	}
	b.Fatalf("no used_memory in INFO memory: %q", info)
	return 0
}
