package store

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CompactionMetrics are the instruments of background compaction.
type CompactionMetrics struct {
	runs        *prometheus.CounterVec
	opsRemoved  prometheus.Counter
	snapsRemove prometheus.Counter
	duration    prometheus.Histogram
	lastSuccess prometheus.Gauge
}

// NewCompactionMetrics creates the compaction metrics and registers them
// with reg.
func NewCompactionMetrics(reg prometheus.Registerer) (*CompactionMetrics, error) {
	m := &CompactionMetrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_compaction_runs_total",
			Help: "Compaction passes over all documents, by result: ok, error (the pass stopped; the next one starts over), or skipped (another replica holds the compaction lock and makes the pass).",
		}, []string{"result"}),
		opsRemoved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_compaction_operations_removed_total",
			Help: "Operations removed from the durable store by history retention.",
		}),
		snapsRemove: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_compaction_snapshots_removed_total",
			Help: "Snapshots removed by history retention (those below each document's cut).",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tandem_compaction_duration_seconds",
			Help:    "Time one compaction pass over all documents took, pauses between batches included.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 9),
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_compaction_last_success_timestamp_seconds",
			Help: "Unix time the last compaction pass finished without error (0: none yet).",
		}),
	}
	for _, c := range []prometheus.Collector{m.runs, m.opsRemoved, m.snapsRemove, m.duration, m.lastSuccess} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register compaction metrics: %w", err)
		}
	}
	// Both results exist from the start, so a rate() over them works
	// before the first failure.
	m.runs.WithLabelValues("ok")
	m.runs.WithLabelValues("error")
	m.runs.WithLabelValues("skipped")
	return m, nil
}

// pass records one pass: what it removed, how long it took and how it
// ended (result "ok", "error" or "skipped"; "" for a pass stopped by
// shutdown, which counts as none of them). Only "ok" moves the last
// success time.
func (m *CompactionMetrics) pass(res CompactResult, took time.Duration, result string, end time.Time) {
	if m == nil {
		return
	}
	m.opsRemoved.Add(float64(res.Ops))
	m.snapsRemove.Add(float64(res.Snapshots))
	if result == "" {
		return
	}
	m.runs.WithLabelValues(result).Inc()
	if result == "skipped" {
		return // a pass not made has no duration worth a sample
	}
	m.duration.Observe(took.Seconds())
	if result == "ok" {
		m.lastSuccess.Set(float64(end.Unix()))
	}
}
