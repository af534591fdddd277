package redisstore

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	commitRetries     prometheus.Counter
	gapsRepaired      prometheus.Counter
	flushBatch        prometheus.Histogram
	flushLatency      prometheus.Histogram
	flushErrors       prometheus.Counter
	flushLag          prometheus.Gauge
	failingDocs       prometheus.Gauge
	docFailures       prometheus.Counter
	oldestUnpersisted prometheus.Gauge
	breakerState      prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		commitRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_redis_commit_retries_total",
			Help: "Appends refused because another replica committed first; each one is transformed and retried.",
		}),
		gapsRepaired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_redis_fanout_gaps_repaired_total",
			Help: "Times a subscription read missing revisions from the stream because pub/sub skipped or stayed silent.",
		}),
		flushBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tandem_flush_batch_operations",
			Help:    "Operations written to PostgreSQL per flush transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 7),
		}),
		flushLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tandem_flush_duration_seconds",
			Help:    "Time to write one flush batch to PostgreSQL and acknowledge it.",
			Buckets: prometheus.DefBuckets,
		}),
		flushErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_flush_errors_total",
			Help: "Flush attempts that failed, usually because PostgreSQL is unreachable (the batch stays pending and is retried). A document's rows that PostgreSQL refuses while it answers are counted by tandem_flush_document_failures_total instead.",
		}),
		flushLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_flush_lag_commits",
			Help: "Commits acknowledged to clients but not yet written to PostgreSQL (pointers left in the persistence streams: one per append, which may carry several operations).",
		}),
		failingDocs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_flush_failing_documents",
			Help: "Documents whose write PostgreSQL refuses while it is up, as seen by this replica's flusher; their commits stay in Redis and are retried.",
		}),
		docFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_flush_document_failures_total",
			Help: "Writes of a single document that PostgreSQL refused while it was up.",
		}),
		oldestUnpersisted: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_flush_oldest_unpersisted_seconds",
			Help: "Age of the oldest acknowledged commit not yet in PostgreSQL (0 when none waits).",
		}),
		breakerState: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_redis_breaker_state",
			Help: "Redis circuit breaker state: 0 closed, 1 half-open, 2 open.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.commitRetries, m.gapsRepaired, m.flushBatch, m.flushLatency,
		m.flushErrors, m.flushLag, m.failingDocs, m.docFailures, m.oldestUnpersisted, m.breakerState} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register redis store metrics: %w", err)
		}
	}
	return m, nil
}
