package redisstore

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	commitRetries prometheus.Counter
	gapsRepaired  prometheus.Counter
	flushBatch    prometheus.Histogram
	flushLatency  prometheus.Histogram
	flushErrors   prometheus.Counter
	flushLag      prometheus.Gauge
	deadLetters   prometheus.Counter
	breakerState  prometheus.Gauge
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
			Help: "Flush attempts that failed (the batch stays pending and is retried).",
		}),
		flushLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_flush_lag_commits",
			Help: "Commits acknowledged to clients but not yet written to PostgreSQL (entries left in the persistence streams).",
		}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_flush_dead_letters_total",
			Help: "Persistence entries moved to the dead-letter stream after failing repeatedly.",
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
		m.flushErrors, m.flushLag, m.deadLetters, m.breakerState} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register redis store metrics: %w", err)
		}
	}
	return m, nil
}
