package bench

import (
	"context"
	"fmt"
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
// log writes them (one Write per commit, all documents in turn). Then a
// minute passes (the clock given to compaction) and a retention of one
// minute compacts everything older. The benchmark reports the store's
// size after the churn and after compaction, and the live text.
// (churnDocs, churnRounds and churnBytes are in storage_report.go, which
// describes the workload in docs/benchmarks.md.)

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

// reportChurn reports a churn's sizes and fails when compaction left more
// than churnSlack above the empty store: the documents end empty and the
// one-minute window holds nothing, so only their rows and the snapshots at
// their cuts (a few hundred bytes each) may remain.
func reportChurn(b *testing.B, empty, before, after float64) {
	b.Helper()
	b.ReportMetric(empty/(1<<20), "MB-empty")
	b.ReportMetric(before/(1<<20), "MB-before")
	b.ReportMetric(after/(1<<20), "MB-after")
	if after-empty > churnSlack {
		b.Errorf("after compaction the store is %.2f MB, %.2f MB above an empty one; want at most %.2f MB above",
			after/(1<<20), (after-empty)/(1<<20), float64(churnSlack)/(1<<20))
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
		empty := size()
		start := time.Now().Add(-time.Minute)
		churn(b, ctx, s, start)
		before := size()
		compactAll(b, ctx, s, start.Add(2*time.Minute))
		// Hand every free page back (compaction does a bounded share per call).
		for range 200 {
			compactAll(b, ctx, s, start.Add(2*time.Minute))
		}
		after := size()
		reportChurn(b, empty, before, after)
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
		empty := size()
		start := time.Now().Add(-time.Minute)
		churn(b, ctx, s, start)
		before := size()
		compactAll(b, ctx, s, start.Add(2*time.Minute))
		after := size()
		reportChurn(b, empty, before, after)
		s.Close()
	}
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
