package bench

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// BenchMetrics holds the custom metrics (b.ReportMetric) of `go test
// -bench` output: benchmark name (without the -N CPU suffix) → unit →
// value, the last run's when there are several.
type BenchMetrics map[string]map[string]float64

// ParseBenchMetrics reads every "value unit" pair of the benchmark lines.
func ParseBenchMetrics(r io.Reader) (BenchMetrics, error) {
	out := BenchMetrics{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := benchName(f[0])
		m := out[name]
		if m == nil {
			m = map[string]float64{}
			out[name] = m
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("benchmark line %q: value %q: %w", sc.Text(), f[i], err)
			}
			m[f[i+1]] = v
		}
	}
	return out, sc.Err()
}

// The storage benchmarks' workloads (internal/bench/storage_test.go).
const (
	churnDocs   = 10
	churnRounds = 300 // 600 operations per document
	churnBytes  = 60 << 10
	idleDocs    = 10000
)

// Storage benchmarks and the goal.
const (
	storageChurnSQLite   = "BenchmarkStorageChurnSQLite"
	storageChurnPostgres = "BenchmarkStorageChurnPostgres"
	storageIdleRedis     = "BenchmarkStorageIdleRedis"
	// idleRedisGoalMB is the bound on Redis memory once 10,000
	// idle persisted documents are past their TTL.
	idleRedisGoalMB = 5
)

// writeStorage renders the storage section from the storage benchmarks'
// metrics; a benchmark that did not run shows as not measured.
func writeStorage(b *strings.Builder, sm BenchMetrics) {
	mb := func(name, unit string) string {
		if v, ok := sm[name][unit]; ok {
			return fmt.Sprintf("%.3g MB", v)
		}
		return "not measured"
	}
	passes := "–"
	if v, ok := sm[storageChurnSQLite]["passes"]; ok {
		passes = fmt.Sprintf("%.0f", v)
	}
	fmt.Fprintf(b, "## Storage under churn with retention\n\n")
	fmt.Fprintf(b, "`BenchmarkStorageChurnSQLite` and `BenchmarkStorageChurnPostgres` (internal/bench/storage_test.go): %d documents, each %d rounds of \"insert 60 KB of random letters, delete it\" (%d revisions per document, documents that end empty; random, so that PostgreSQL's TOAST compression does not shrink it), written one commit at a time as the embedded log does; then compaction with `--history-retention=1m` and a clock one minute later, at the default snapshot interval (500). The live text is 0 bytes and the retained window holds no operation, so what is left after compaction is each document's row and the snapshot at its cut, plus the store's fixed overhead (an empty store's size is given for comparison). SQLite: compaction passes are repeated, as the background compaction does every `--compaction-interval`, until `PRAGMA freelist_count` is 0 (each pass vacuums a bounded number of pages); it took %s. PostgreSQL: sizes after a plain `VACUUM` (what autovacuum does in production: the space of removed rows is reused, and only empty pages at a table's end go back to the file system), and after `VACUUM FULL` (what the rows need). One run each.\n\n",
		churnDocs, churnRounds, 2*churnRounds, plural(passes, "pass", "passes"))
	fmt.Fprintf(b, "| store | empty | after the churn | after compaction |\n|---|---|---|---|\n")
	fmt.Fprintf(b, "| SQLite file (WAL checkpointed) | %s | %s | %s |\n",
		mb(storageChurnSQLite, "MB-empty"), mb(storageChurnSQLite, "MB-before"), mb(storageChurnSQLite, "MB-after"))
	fmt.Fprintf(b, "| PostgreSQL (operations + snapshots + documents, after `VACUUM`) | %s | %s | %s |\n",
		mb(storageChurnPostgres, "MB-empty"), mb(storageChurnPostgres, "MB-before"), mb(storageChurnPostgres, "MB-after"))
	fmt.Fprintf(b, "| PostgreSQL, the same after compaction and `VACUUM FULL` | | | %s |\n\n",
		mb(storageChurnPostgres, "MB-after-full"))
	fmt.Fprintf(b, "`BenchmarkStorageIdleRedis`: %d documents get one edit each through the Redis log, are flushed to PostgreSQL and left idle; their keys expire after the idle TTL (3 s here, `--redis-idle-ttl` 10m by default). Redis `used_memory` (INFO memory). Target: under %d MB after the TTL.\n\n", idleDocs, idleRedisGoalMB)
	fmt.Fprintf(b, "| Redis | used_memory |\n|---|---|\n")
	fmt.Fprintf(b, "| empty, store started | %s |\n", mb(storageIdleRedis, "MB-empty"))
	fmt.Fprintf(b, "| %d documents just edited | %s |\n", idleDocs, mb(storageIdleRedis, "MB-active"))
	verdict := "–"
	if v, ok := sm[storageIdleRedis]["MB-after-ttl"]; ok {
		verdict = "no"
		if v < idleRedisGoalMB {
			verdict = "**yes**"
		}
	}
	fmt.Fprintf(b, "| the same documents after their TTL (target met: %s) | %s |\n\n", verdict, mb(storageIdleRedis, "MB-after-ttl"))
}

// plural is n followed by one or many; "–" (not measured) stays as is.
func plural(n, one, many string) string {
	switch n {
	case "–":
		return "an unmeasured number of passes"
	case "1":
		return n + " " + one
	}
	return n + " " + many
}
