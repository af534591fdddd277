// Package metrics holds the runtime's Prometheus metrics in a registry of
// its own (never the global one), so tests and several servers in one
// process do not collide.
package metrics

import (
	"net/http"
	"strconv"

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

	// The questions people ask when editing feels slow or users are
	// refused. Every label has a small fixed set of values (see the
	// Route*, Ack*, Refused* and Bound* constants and CloseLabel).
	AckTime           *prometheus.HistogramVec // route
	Acks              *prometheus.CounterVec   // kind
	Submissions       *prometheus.CounterVec   // route
	Closes            *prometheus.CounterVec   // code, by
	SlowConsumers     *prometheus.CounterVec   // bound
	HandshakesRefused *prometheus.CounterVec   // reason
}

// Label values of the submission route: appended by this replica, or
// forwarded to the replica holding the document's owner lease.
const (
	RouteLocal     = "local"
	RouteForwarded = "forwarded"
)

// Label values of tandem_acks_total: the first ack of a commit, or the ack
// repeated for a resubmission that was already committed.
const (
	AckCommit    = "commit"
	AckDuplicate = "duplicate"
)

// Label values of tandem_slow_consumer_disconnects_total: which bound the
// connection hit.
const (
	BoundConnection = "connection" // its own write queue (--write-queue-bytes)
	BoundProcess    = "process"    // the process-wide pending bytes (--max-pending-write-bytes)
	// A write to it took longer than the write timeout: it stopped reading
	// while its socket buffers were full. The connection is cut without a
	// close frame (counted as a server close with 1006).
	BoundWriteTimeout = "write_timeout"
)

// Label values of tandem_handshakes_refused_total.
const (
	RefusedInvalidDocument = "invalid_document"
	RefusedOrigin          = "origin"
	RefusedDraining        = "draining"
	RefusedDocumentFull    = "document_full"
	RefusedNoHello         = "no_hello"
	RefusedUnauthorized    = "unauthorized"
	RefusedForbidden       = "forbidden"
	RefusedUnavailable     = "document_unavailable"
)

// Label values of the "by" label of tandem_websocket_closes_total.
const (
	ClosedByServer = "server"
	ClosedByClient = "client"
)

// CloseLabel is the code label of a close: the server's own codes are a
// fixed set; a client's are kept only when they are standard ones (RFC
// 6455), and anything else it sends is counted as "other", so a client
// cannot grow the label set.
func CloseLabel(code int, by string) string {
	if by == ClosedByClient {
		switch code {
		case 1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1011:
		default:
			return "other"
		}
	}
	return strconv.Itoa(code)
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
		AckTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tandem_ack_seconds",
			Help: "Time from receiving a submission to sending its ack, by route (local: appended here; forwarded: sent to the document's owner replica).",
			// 100 µs to about 2.4 s.
			Buckets: prometheus.ExponentialBuckets(1e-4, 2.5, 12),
		}, []string{"route"}),
		Acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_acks_total",
			Help: "Acks sent to clients, by kind (commit: the operation was committed; duplicate: a resubmission of one already committed).",
		}, []string{"kind"}),
		Submissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_submissions_total",
			Help: "Valid submissions from this replica's clients, by route (local: appended here; forwarded: sent to the replica holding the document's owner lease).",
		}, []string{"route"}),
		Closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_websocket_closes_total",
			Help: "Document WebSocket connections ended, by close code and by who closed (server or client; a client's non-standard codes are counted as other).",
		}, []string{"code", "by"}),
		SlowConsumers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_slow_consumer_disconnects_total",
			Help: "Connections closed because the client did not read fast enough, by the bound it hit (connection: its write queue, closed with 4010; process: the process-wide pending bytes, 4010; write_timeout: one write blocked past the write timeout, cut).",
		}, []string{"bound"}),
		HandshakesRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_handshakes_refused_total",
			Help: "WebSocket connections refused before joining their document, by reason.",
		}, []string{"reason"}),
	}
	// Known label values start at zero, so rate() and alerts see a series
	// before the first event.
	for _, r := range []string{RouteLocal, RouteForwarded} {
		m.AckTime.WithLabelValues(r)
		m.Submissions.WithLabelValues(r)
	}
	for _, k := range []string{AckCommit, AckDuplicate} {
		m.Acks.WithLabelValues(k)
	}
	for _, b := range []string{BoundConnection, BoundProcess, BoundWriteTimeout} {
		m.SlowConsumers.WithLabelValues(b)
	}
	for _, r := range []string{RefusedInvalidDocument, RefusedOrigin, RefusedDraining, RefusedDocumentFull,
		RefusedNoHello, RefusedUnauthorized, RefusedForbidden, RefusedUnavailable} {
		m.HandshakesRefused.WithLabelValues(r)
	}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Connections, m.DocumentsLoaded, m.OpsCommitted, m.TransformTime, m.CommitTime, m.CommitRetries, m.Errors,
		m.Forwarded, m.TakeBacks, m.LeaseClaims,
		m.AckTime, m.Acks, m.Submissions, m.Closes, m.SlowConsumers, m.HandshakesRefused,
	)
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
