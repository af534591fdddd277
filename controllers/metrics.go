package controllers

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
	"github.com/tandem-dev/tandem/internal/apicount"
)

// Metrics are the operator's own instruments, beside controller-runtime's
// (controller_runtime_reconcile_*): where a reconcile spends its time and
// fails, by phase, and what state every CollabCluster is in. Labels are
// bounded by the phases and by the CollabClusters that exist.
type Metrics struct {
	phaseSeconds *prometheus.HistogramVec
	phaseErrors  *prometheus.CounterVec
	clusterPhase *prometheus.GaugeVec
}

// NewMetrics creates the operator metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		phaseSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tandem_operator_reconcile_phase_seconds",
			Help:    "Time one reconcile phase of a CollabCluster took (credentials, postgres, runtime deployment, ..., status).",
			Buckets: prometheus.ExponentialBuckets(0.001, 3, 10),
		}, []string{"phase"}),
		phaseErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_operator_reconcile_errors_total",
			Help: "Reconcile phases that failed, by phase and kind (degraded: a problem a person must fix, reported in the Degraded condition; error: retried with backoff).",
		}, []string{"phase", "kind"}),
		clusterPhase: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tandem_collabcluster_phase",
			Help: "1 for the phase each CollabCluster is in (Ready, Progressing, Degraded), 0 for the others; count by (phase) gives the CollabClusters by phase.",
		}, []string{"namespace", "name", "phase"}),
	}
	var err error
	if m.phaseSeconds, err = register(reg, m.phaseSeconds); err != nil {
		return nil, err
	}
	if m.phaseErrors, err = register(reg, m.phaseErrors); err != nil {
		return nil, err
	}
	if m.clusterPhase, err = register(reg, m.clusterPhase); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered under
// its name: a second manager in one process (tests) shares the first's.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	if err != nil {
		return c, fmt.Errorf("register operator metrics: %w", err)
	}
	return c, nil
}

// observePhase records one phase's duration and outcome.
func (m *Metrics) observePhase(name string, took time.Duration, err error) {
	if m == nil {
		return
	}
	m.phaseSeconds.WithLabelValues(name).Observe(took.Seconds())
	if err == nil {
		return
	}
	kind := "error"
	var d *degradedError
	if errors.As(err, &d) {
		kind = "degraded"
	}
	m.phaseErrors.WithLabelValues(name, kind).Inc()
}

// setPhase records the phase a CollabCluster is in.
func (m *Metrics) setPhase(namespace, name string, phase collabv1.Phase) {
	if m == nil {
		return
	}
	for _, p := range []collabv1.Phase{collabv1.PhaseReady, collabv1.PhaseProgressing, collabv1.PhaseDegraded} {
		v := 0.0
		if p == phase {
			v = 1
		}
		m.clusterPhase.WithLabelValues(namespace, name, string(p)).Set(v)
	}
}

// forget drops the series of a CollabCluster that is gone.
func (m *Metrics) forget(namespace, name string) {
	if m == nil {
		return
	}
	m.clusterPhase.DeletePartialMatch(prometheus.Labels{"namespace": namespace, "name": name})
}

// NewAPIRequests creates tandem_operator_kube_api_requests_total on reg and
// returns the function that counts one request into it, for
// apicount.Wrap on the manager's rest.Config. It shows what the operator
// asks of the apiserver, by verb and resource: on a converged cluster, no
// writes at all.
func NewAPIRequests(reg prometheus.Registerer) (func(apicount.Request), error) {
	vec, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tandem_operator_kube_api_requests_total",
		Help: "Requests the operator sent to the Kubernetes API, by verb (get, list, watch, create, update, patch, apply, delete) and resource (group/resource/subresource).",
	}, []string{"verb", "resource"}))
	if err != nil {
		return nil, err
	}
	return func(r apicount.Request) {
		res := r.Resource
		if r.Group != "" {
			res = r.Group + "/" + res
		}
		if r.Subresource != "" {
			res += "/" + r.Subresource
		}
		vec.WithLabelValues(r.Verb, res).Inc()
	}, nil
}
