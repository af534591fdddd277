package controllers_test

import (
	"context"
	"fmt"
	"testing"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
)

// The operator's metrics follow a CollabCluster: its phase as it changes,
// the time of every phase, degraded errors by phase, and nothing left of it
// once it is deleted.
func TestOperatorMetrics(t *testing.T) {
	ns := namespace(t)
	cc := createSample(t, externalSample, ns, nil)
	wantCondition(t, ns, cc.Name, collabv1.ConditionRedisReady, metav1.ConditionTrue, "ExternalConfigured")
	markDeploymentReady(t, ns, cc.Name+"-runtime")
	wantCondition(t, ns, cc.Name, collabv1.ConditionReady, metav1.ConditionTrue, "AllComponentsReady")
	eventually(t, "phase Ready in tandem_collabcluster_phase", func(context.Context) error {
		return wantPhaseGauge(ns, cc.Name, map[string]float64{"Ready": 1, "Progressing": 0, "Degraded": 0})
	})
	families := gather(t)
	for _, phase := range []string{"credentials", "runtime deployment", "monitoring", "status"} {
		if n := histogramCount(families["tandem_operator_reconcile_phase_seconds"], map[string]string{"phase": phase}); n == 0 {
			t.Errorf("no observation of phase %q in tandem_operator_reconcile_phase_seconds", phase)
		}
	}

	// A missing Secret: Degraded, counted as a degraded error of the
	// phase that found it.
	if err := shared.client.Delete(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "notes-redis"}}); err != nil {
		t.Fatal(err)
	}
	wantCondition(t, ns, cc.Name, collabv1.ConditionDegraded, metav1.ConditionTrue, "SecretMissing")
	eventually(t, "phase Degraded in tandem_collabcluster_phase", func(context.Context) error {
		return wantPhaseGauge(ns, cc.Name, map[string]float64{"Ready": 0, "Progressing": 0, "Degraded": 1})
	})
	if v := counterValue(gather(t)["tandem_operator_reconcile_errors_total"], map[string]string{"kind": "degraded"}); v == 0 {
		t.Errorf("no degraded error counted in tandem_operator_reconcile_errors_total")
	}

	if err := shared.client.Delete(context.Background(), cc); err != nil {
		t.Fatal(err)
	}
	eventually(t, "series of the deleted CollabCluster gone", func(ctx context.Context) error {
		if err := get(ctx, ns, cc.Name, &collabv1.CollabCluster{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("CollabCluster still there (%v)", err)
		}
		for _, m := range gather(t)["tandem_collabcluster_phase"].GetMetric() {
			if labelsMatch(m, map[string]string{"namespace": ns, "name": cc.Name}) {
				return fmt.Errorf("series left: %v", m.GetLabel())
			}
		}
		return nil
	})
}

func gather(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := shared.metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

func labelsMatch(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

func wantPhaseGauge(ns, name string, want map[string]float64) error {
	fams, err := shared.metrics.Gather()
	if err != nil {
		return err
	}
	got := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "tandem_collabcluster_phase" {
			continue
		}
		for _, m := range f.GetMetric() {
			if labelsMatch(m, map[string]string{"namespace": ns, "name": name}) {
				for _, l := range m.GetLabel() {
					if l.GetName() == "phase" {
						got[l.GetValue()] = m.GetGauge().GetValue()
					}
				}
			}
		}
	}
	for k, v := range want {
		if got[k] != v {
			return fmt.Errorf("phases %v, want %v", got, want)
		}
	}
	return nil
}

func histogramCount(f *dto.MetricFamily, labels map[string]string) uint64 {
	for _, m := range f.GetMetric() {
		if labelsMatch(m, labels) {
			return m.GetHistogram().GetSampleCount()
		}
	}
	return 0
}

func counterValue(f *dto.MetricFamily, labels map[string]string) float64 {
	for _, m := range f.GetMetric() {
		if labelsMatch(m, labels) {
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
