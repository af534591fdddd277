package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Samples collects durations from many goroutines.
type Samples struct {
	mu sync.Mutex
	d  []time.Duration
}

// Add records one sample.
func (s *Samples) Add(d time.Duration) {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
}

// Len is the number of samples.
func (s *Samples) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.d)
}

// Quantiles returns the given quantiles (0..1) in milliseconds, nearest
// rank; all zero when there are no samples.
func (s *Samples) Quantiles(qs ...float64) []float64 {
	s.mu.Lock()
	d := slices.Clone(s.d)
	s.mu.Unlock()
	slices.Sort(d)
	out := make([]float64, len(qs))
	if len(d) == 0 {
		return out
	}
	for i, q := range qs {
		idx := int(q*float64(len(d))+0.999999) - 1
		idx = max(0, min(idx, len(d)-1))
		out[i] = float64(d[idx]) / float64(time.Millisecond)
	}
	return out
}

// ProcessStats are the figures read from a runtime's /metrics (the
// Prometheus process collector).
type ProcessStats struct {
	RSSBytes   float64 // process_resident_memory_bytes
	CPUSeconds float64 // process_cpu_seconds_total
	Goroutines float64 // go_goroutines
	HeapInuse  float64 // go_memstats_heap_inuse_bytes
}

// ScrapeProcess reads the process figures of the runtime at base.
func ScrapeProcess(ctx context.Context, base string) (ProcessStats, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/metrics", nil)
	if err != nil {
		return ProcessStats{}, fmt.Errorf("metrics request for %s: %w", base, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ProcessStats{}, fmt.Errorf("scrape %s/metrics: %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ProcessStats{}, fmt.Errorf("scrape %s/metrics: HTTP %d", base, resp.StatusCode)
	}
	return parseProcessStats(resp.Body)
}

// parseProcessStats picks the few unlabelled samples we need out of the
// Prometheus text format.
func parseProcessStats(r io.Reader) (ProcessStats, error) {
	var ps ProcessStats
	want := map[string]*float64{
		"process_resident_memory_bytes": &ps.RSSBytes,
		"process_cpu_seconds_total":     &ps.CPUSeconds,
		"go_goroutines":                 &ps.Goroutines,
		"go_memstats_heap_inuse_bytes":  &ps.HeapInuse,
	}
	found := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if p, ok := want[name]; ok {
			v, err := strconv.ParseFloat(strings.Fields(value)[0], 64)
			if err != nil {
				return ps, fmt.Errorf("metric %s: %w", name, err)
			}
			*p = v
			found[name] = true
		}
	}
	if err := sc.Err(); err != nil {
		return ps, fmt.Errorf("read metrics: %w", err)
	}
	for _, n := range []string{"process_resident_memory_bytes", "process_cpu_seconds_total"} {
		if !found[n] {
			return ps, fmt.Errorf("metrics have no %s (is the process collector registered?)", n)
		}
	}
	return ps, nil
}

// cpuSeconds sums process_cpu_seconds_total over the runtimes.
func cpuSeconds(ctx context.Context, bases []string) (float64, error) {
	total := 0.0
	for _, b := range bases {
		ps, err := ScrapeProcess(ctx, b)
		if err != nil {
			return 0, err
		}
		total += ps.CPUSeconds
	}
	return total, nil
}
