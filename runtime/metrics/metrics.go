// Package metrics holds the runtime's Prometheus metrics in a registry of
// its own (never the global one), so tests and several servers in one
// process do not collide.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the runtime's instruments.
type Metrics struct {
	Registry *prometheus.Registry

	Connections     prometheus.Gauge
	DocumentsLoaded prometheus.Gauge
	OpsCommitted    prometheus.Counter
	TransformTime   prometheus.Histogram
	CommitTime      prometheus.Histogram
	CommitRetries   prometheus.Counter
	Errors          *prometheus.CounterVec

	// Distributed mode: submissions routed to the replica holding a
	// document's owner lease.
	Forwarded   prometheus.Counter
	TakeBacks   prometheus.Counter
	LeaseClaims prometheus.Counter
}

// New creates the metrics, registered with a new registry that also carries
// the Go and process collectors.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_connections", Help: "Open document WebSocket connections.",
		}),
		DocumentsLoaded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_documents_loaded", Help: "Documents held in memory.",
		}),
		OpsCommitted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_operations_committed_total", Help: "Operations committed by this process.",
		}),
		TransformTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tandem_transform_seconds", Help: "Time to transform one submitted operation against the operations committed since its base.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 10),
		}),
		CommitTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tandem_commit_seconds", Help: "Time to append a batch of operations to the log.",
			Buckets: prometheus.ExponentialBuckets(1e-5, 4, 10),
		}),
		CommitRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_commit_conflicts_total", Help: "Appends refused because another writer committed first.",
		}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_errors_total", Help: "Errors sent to clients, by protocol error code.",
		}, []string{"code"}),
		Forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_submissions_forwarded_total", Help: "Submissions forwarded to the replica holding their document's owner lease instead of appended here.",
		}),
		TakeBacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_submissions_taken_back_total", Help: "Forwarded submissions appended here after all because the owner did not answer in time or was gone.",
		}),
		LeaseClaims: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_owner_lease_claims_total", Help: "Document owner leases this replica acquired (renewals not counted).",
		}),
	}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Connections, m.DocumentsLoaded, m.OpsCommitted, m.TransformTime, m.CommitTime, m.CommitRetries, m.Errors,
		m.Forwarded, m.TakeBacks, m.LeaseClaims,
	)
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
