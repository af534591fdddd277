package engines_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
	"github.com/tandem-dev/tandem/internal/specs"
)

func podMonitor() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(specs.PodMonitorGVK)
	return u
}

func prometheusRule() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(specs.PrometheusRuleGVK)
	return u
}

func withMonitoring(cc *collabv1.CollabCluster) {
	cc.Spec.Monitoring = &collabv1.MonitoringSpec{Labels: map[string]string{"release": "kube-prometheus-stack"}}
}

// spec.monitoring, in order: refused cleanly without the prometheus-operator
// CRDs, created once they are installed (the prometheus-operator's own CRD
// files at a pinned version), updated with the spec, and removed with it.
func TestMonitoring(t *testing.T) {
	ns := namespace(t)

	t.Run("without the CRDs: a condition, nothing else", func(t *testing.T) {
		create(t, collab(ns, "mon", withMonitoring))
		c := wantCondition(t, ns, "mon", collabv1.ConditionMonitoringReady, metav1.ConditionFalse, "PrometheusOperatorNotInstalled")
		for _, want := range []string{specs.PodMonitorCRDName, specs.PrometheusRuleCRDName, "Editing is not affected"} {
			if !strings.Contains(c.Message, want) {
				t.Errorf("MonitoringReady message lacks %q: %s", want, c.Message)
			}
		}
		// Not a degradation: the rest of the cluster is reconciled.
		wantCondition(t, ns, "mon", collabv1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")
	})

	t.Run("CRDs installed: PodMonitor and PrometheusRule appear", func(t *testing.T) {
		dir := crdDir(t, "prometheus-operator")
		installCRD(t, dir+"/monitoring.coreos.com_podmonitors.yaml")
		installCRD(t, dir+"/monitoring.coreos.com_prometheusrules.yaml")
		c := wantCondition(t, ns, "mon", collabv1.ConditionMonitoringReady, metav1.ConditionTrue, "MonitorsCreated")
		if !strings.Contains(c.Message, "PodMonitor mon-runtime") || !strings.Contains(c.Message, "PrometheusRule mon-runtime") {
			t.Errorf("MonitoringReady message: %s", c.Message)
		}
		eventually(t, "PodMonitor mon-runtime", func(ctx context.Context) error {
			u, err := getUnstructured(ctx, podMonitor(), ns, "mon-runtime")
			if err != nil {
				return err
			}
			if u.GetLabels()["release"] != "kube-prometheus-stack" {
				return fmt.Errorf("labels %v lack the Prometheus's selector label", u.GetLabels())
			}
			sel, _, _ := unstructured.NestedStringMap(u.Object, "spec", "selector", "matchLabels")
			if sel[specs.LabelInstance] != "mon" || sel[specs.LabelComponent] != specs.ComponentRuntime {
				return fmt.Errorf("selector %v does not select mon's runtime pods", sel)
			}
			eps, _, _ := unstructured.NestedSlice(u.Object, "spec", "podMetricsEndpoints")
			if len(eps) != 1 || eps[0].(map[string]any)["port"] != "http" {
				return fmt.Errorf("podMetricsEndpoints %v, want the http port", eps)
			}
			return ownedByCluster(ctx, u, ns, "mon")
		})
		eventually(t, "PrometheusRule mon-runtime", func(ctx context.Context) error {
			u, err := getUnstructured(ctx, prometheusRule(), ns, "mon-runtime")
			if err != nil {
				return err
			}
			groups, _, _ := unstructured.NestedSlice(u.Object, "spec", "groups")
			if len(groups) != 1 {
				return fmt.Errorf("groups %v", groups)
			}
			rules, _, _ := unstructured.NestedSlice(groups[0].(map[string]any), "rules")
			if len(rules) < 8 {
				return fmt.Errorf("%d rules, want the runtime's alerts", len(rules))
			}
			expr := rules[0].(map[string]any)["expr"].(string)
			if !strings.Contains(expr, `namespace="`+ns+`",collabcluster="mon"`) {
				return fmt.Errorf("first rule %q is not scoped to this CollabCluster", expr)
			}
			return ownedByCluster(ctx, u, ns, "mon")
		})
	})

	t.Run("thresholds and alerts follow the spec", func(t *testing.T) {
		updateCluster(t, ns, "mon", func(cc *collabv1.CollabCluster) {
			cc.Spec.Monitoring.Alerts.FlushStalledSeconds = ptr.To[int32](600)
		})
		eventually(t, "flush threshold 600 in the rule", func(ctx context.Context) error {
			u, err := getUnstructured(ctx, prometheusRule(), ns, "mon-runtime")
			if err != nil {
				return err
			}
			groups, _, _ := unstructured.NestedSlice(u.Object, "spec", "groups")
			rules, _, _ := unstructured.NestedSlice(groups[0].(map[string]any), "rules")
			if expr := rules[0].(map[string]any)["expr"].(string); !strings.HasSuffix(expr, "> 600") {
				return fmt.Errorf("TandemFlushStalled expr %q", expr)
			}
			return nil
		})
		updateCluster(t, ns, "mon", func(cc *collabv1.CollabCluster) {
			cc.Spec.Monitoring.Alerts.Enabled = ptr.To(false)
		})
		wantGone(t, prometheusRule(), ns, "mon-runtime")
		// The condition was True/MonitorsCreated before too: wait for the
		// status written after the rule's deletion, whose message no
		// longer names it.
		eventually(t, "MonitoringReady without the PrometheusRule", func(ctx context.Context) error {
			cc := &collabv1.CollabCluster{}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "mon"}, cc); err != nil {
				return err
			}
			c := meta.FindStatusCondition(cc.Status.Conditions, collabv1.ConditionMonitoringReady)
			switch {
			case c == nil:
				return fmt.Errorf("no MonitoringReady condition")
			case c.Status != metav1.ConditionTrue || c.Reason != "MonitorsCreated":
				return fmt.Errorf("MonitoringReady is %s/%s: %s", c.Status, c.Reason, c.Message)
			case strings.Contains(c.Message, "PrometheusRule"):
				return fmt.Errorf("MonitoringReady still names the PrometheusRule: %s", c.Message)
			}
			return nil
		})
	})

	t.Run("spec.monitoring removed: monitors removed, condition dropped", func(t *testing.T) {
		updateCluster(t, ns, "mon", func(cc *collabv1.CollabCluster) { cc.Spec.Monitoring = nil })
		wantGone(t, podMonitor(), ns, "mon-runtime")
		eventually(t, "MonitoringReady dropped", func(ctx context.Context) error {
			cc := &collabv1.CollabCluster{}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "mon"}, cc); err != nil {
				return err
			}
			if c := meta.FindStatusCondition(cc.Status.Conditions, collabv1.ConditionMonitoringReady); c != nil {
				return fmt.Errorf("still there: %+v", c)
			}
			return nil
		})
	})
}

func crdDir(t *testing.T, set string) string {
	t.Helper()
	// crdFile checks one file of the set exists and returns its path.
	path := crdFile(t, set, "monitoring.coreos.com_podmonitors.yaml")
	return strings.TrimSuffix(path, "/monitoring.coreos.com_podmonitors.yaml")
}

func updateCluster(t *testing.T, ns, name string, mutate func(*collabv1.CollabCluster)) {
	t.Helper()
	eventually(t, "update CollabCluster "+name, func(ctx context.Context) error {
		cc := &collabv1.CollabCluster{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, cc); err != nil {
			return err
		}
		mutate(cc)
		return k8s.Update(ctx, cc)
	})
}

func wantGone(t *testing.T, kind *unstructured.Unstructured, ns, name string) {
	t.Helper()
	eventually(t, kind.GetKind()+" "+name+" deleted", func(ctx context.Context) error {
		_, err := getUnstructured(ctx, kind, ns, name)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (%v)", err)
	})
}

// ownedByCluster checks the controller reference that lets the garbage
// collector remove u with its CollabCluster.
func ownedByCluster(ctx context.Context, u *unstructured.Unstructured, ns, name string) error {
	cc := &collabv1.CollabCluster{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, cc); err != nil {
		return err
	}
	for _, ref := range u.GetOwnerReferences() {
		if ref.UID == cc.UID && ptr.Deref(ref.Controller, false) {
			return nil
		}
	}
	return fmt.Errorf("%s %s has no controller reference to CollabCluster %s", u.GetKind(), u.GetName(), name)
}
