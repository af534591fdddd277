package bench

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestQuantiles(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name    string
		samples []time.Duration
		qs      []float64
		want    []float64
	}{
		{"empty", nil, []float64{0.5, 0.99}, []float64{0, 0}},
		{"one", []time.Duration{3 * ms}, []float64{0.5, 0.99, 1}, []float64{3, 3, 3}},
		{"hundred", func() []time.Duration {
			var d []time.Duration
			for i := 100; i >= 1; i-- { // unsorted on purpose
				d = append(d, time.Duration(i)*ms)
			}
			return d
		}(), []float64{0.5, 0.99, 1}, []float64{50, 99, 100}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Samples
			for _, d := range tt.samples {
				s.Add(d)
			}
			if got := s.Quantiles(tt.qs...); !slices.Equal(got, tt.want) {
				t.Fatalf("Quantiles(%v) = %v, want %v", tt.qs, got, tt.want)
			}
		})
	}
}

func TestParseProcessStats(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    ProcessStats
		wantErr string
	}{
		{
			name: "process collector",
			in: `# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 1.25
process_resident_memory_bytes 1.2345e+07
go_goroutines 42
go_memstats_heap_inuse_bytes 4096
tandem_errors_total{code="bad_op"} 3
`,
			want: ProcessStats{RSSBytes: 12345000, CPUSeconds: 1.25, Goroutines: 42, HeapInuse: 4096},
		},
		{name: "no process collector", in: "go_goroutines 3\n", wantErr: "process_resident_memory_bytes"},
		{name: "garbage value", in: "process_cpu_seconds_total abc\n", wantErr: "process_cpu_seconds_total"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcessStats(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want mention of %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestFlushLags(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tests := []struct {
		name string
		acks []revAt
		obs  []revAt
		want []float64 // p50, max in ms
		n    int
	}{
		{"each seen later", []revAt{{1, at(0)}, {2, at(10)}, {3, at(20)}}, []revAt{{0, at(5)}, {2, at(30)}, {3, at(100)}}, []float64{30, 80}, 3},
		{"stored before the ack arrived counts as zero", []revAt{{1, at(50)}}, []revAt{{1, at(40)}}, []float64{0, 0}, 1},
		{"never stored is left out", []revAt{{1, at(0)}, {5, at(0)}}, []revAt{{2, at(7)}}, []float64{7, 7}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := flushLags(tt.acks, tt.obs)
			if s.Len() != tt.n {
				t.Fatalf("%d lags, want %d", s.Len(), tt.n)
			}
			if got := s.Quantiles(0.5, 1); !slices.Equal(got, tt.want) {
				t.Fatalf("p50/max = %v, want %v", got, tt.want)
			}
		})
	}
}
