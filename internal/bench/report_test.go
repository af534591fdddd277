package bench

import (
	"strings"
	"testing"
)

func TestMedians(t *testing.T) {
	run := func(ops float64, errMsg string) []Result {
		r := Result{ID: "S2", Title: "t", Error: errMsg}
		if errMsg == "" {
			r.add("acked_ops_per_s", ops, "ops/s")
		}
		return []Result{r}
	}
	tests := []struct {
		name    string
		runs    [][]Result
		want    float64
		wantErr string
	}{
		{"odd", [][]Result{run(3, ""), run(1, ""), run(2, "")}, 2, ""},
		{"even", [][]Result{run(4, ""), run(1, "")}, 2.5, ""},
		{"failed run is left out and reported", [][]Result{run(5, ""), run(0, "diverged"), run(7, "")}, 6, "run 2: diverged"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Medians(tt.runs)
			if len(got) != 1 {
				t.Fatalf("%d results", len(got))
			}
			if v, _ := got[0].Get("acked_ops_per_s"); v != tt.want {
				t.Errorf("median = %v, want %v", v, tt.want)
			}
			if got[0].Error != tt.wantErr {
				t.Errorf("error = %q, want %q", got[0].Error, tt.wantErr)
			}
		})
	}
}

func TestParseGoBench(t *testing.T) {
	out := `goos: linux
BenchmarkRopeApply1MiB-2   	  500000	      2100 ns/op	       0 B/op	       0 allocs/op
BenchmarkRopeApply1MiB-2   	  500000	      1900 ns/op	       0 B/op	       0 allocs/op
BenchmarkApply/1MiB-2      	    1000	    250000 ns/op	4194.30 MB/s	 1048576 B/op	       1 allocs/op
PASS
`
	gb, err := ParseGoBench(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		want float64
	}{
		{"BenchmarkRopeApply1MiB", 2000},
		{"BenchmarkApply/1MiB", 250000},
	}
	for _, tt := range tests {
		if got, ok := gb.Median(tt.name); !ok || got != tt.want {
			t.Errorf("%s = %v (%v), want %v", tt.name, got, ok, tt.want)
		}
	}
}

// TestMarkdownVerdicts checks that the targets table says yes, no or not
// measured according to the numbers, not by default.
func TestMarkdownVerdicts(t *testing.T) {
	s1 := Result{ID: "S1-single"}
	s1.add("latency_p50", 0.2, "ms")
	s1.add("latency_p99", 0.9, "ms")
	s2 := Result{ID: "S2"}
	s2.add("acked_ops_per_s", 5000, "ops/s")
	s2.add("cpu_s_per_1000_ops", 0.1, "s")
	s3 := Result{ID: "S3", Error: "connection 7 of 2000: refused"}
	gb := GoBench{OneCharEditBenchmark: {3000}}
	var b strings.Builder
	err := WriteMarkdown(&b, MarkdownInput{Report: Report{Machine: Machine{CPU: "Test CPU", Cores: 2}, Runs: [][]Result{{s1, s2, s3}}, Median: []Result{s1, s2, s3}}, GoBench: gb})
	if err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"| CPU | Test CPU |",
		"| S1 single server p50 / p99 | 1.2 / 4.0 ms | 1.8 / 5.3 ms | ≤ 0.3 / ≤ 1 ms | 0.200 / 0.900 ms | **yes** |",
		"| S2 across 2 servers, acked ops/s | 123 | 698 | ≥ 10,000 | 5000 | no |",
		"| S3 memory per idle connection | 18.7 KB | 23.6 KB | ≤ 10 KB | not measured | – |",
		"| S1 cross-server p50 / p99 | 3.2 / 8.7 ms | 3.2 / 9.3 ms | ≤ 0.5 / ≤ 1.5 ms | not measured | – |",
		"| OT: one-character edit on a 1 MiB document | – | – | ≤ 20 µs | 3.000 µs | **yes** |",
		"**Failed:** connection 7 of 2000: refused",
		"| S2 | 0.100 |",
		"| runtime CPU s per 1,000 acked ops, S2 across 2 servers | – | – | ≤ 0.069 | 0.100 | no |",
		"| S3 idle CPU, 2,000 idle connections | 0.1 % | 0.35 % | ≤ 0.3 % | not measured | – |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q\n%s", want, md)
		}
	}
}

// The storage section is made from the storage benchmarks' output: the
// figures, the Redis verdict by the number, and "not measured" for a
// benchmark that did not run.
func TestMarkdownStorage(t *testing.T) {
	out := `pkg: github.com/tandem-dev/tandem/internal/bench
BenchmarkStorageChurnSQLite-2     	       1	22104557272 ns/op	         0.02344 MB-after	       177.8 MB-before	         0.0117 MB-empty	         6.000 passes
BenchmarkStorageIdleRedis-2   	       1	9795395818 ns/op	        27.66 MB-active	         6.5 MB-after-ttl	         1.064 MB-empty	        19.00 keys-left
PASS
`
	sm, err := ParseBenchMetrics(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if got := sm["BenchmarkStorageChurnSQLite"]["MB-before"]; got != 177.8 {
		t.Fatalf("MB-before = %v, want 177.8", got)
	}
	var b strings.Builder
	if err := WriteMarkdown(&b, MarkdownInput{Storage: sm}); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"## Storage under churn with retention",
		"| SQLite file (WAL checkpointed) | 0.0117 MB | 178 MB | 0.0234 MB |",
		"until `PRAGMA freelist_count` is 0 (each pass vacuums a bounded number of pages); it took 6 passes.",
		"| PostgreSQL (operations + snapshots + documents, after `VACUUM`) | not measured | not measured | not measured |",
		"| PostgreSQL, the same after compaction and `VACUUM FULL` | | | not measured |",
		"| 10000 documents just edited | 27.7 MB |",
		"| the same documents after their TTL (target met: no) | 6.5 MB |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q\n%s", want, md)
		}
	}
	b.Reset()
	if err := WriteMarkdown(&b, MarkdownInput{}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "## Storage") {
		t.Errorf("a report without storage benchmarks has a storage section")
	}
}
