package controllers

import (
	"context"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
	"github.com/tandem-dev/tandem/internal/specs"
)

// +kubebuilder:rbac:groups=monitoring.coreos.com,resources=podmonitors;prometheusrules,verbs=get;list;watch;create;update;patch;delete

// monitoringKind is one prometheus-operator kind spec.monitoring writes.
type monitoringKind struct {
	crd  string
	gvk  schema.GroupVersionKind
	name string
	// want is the object to apply; nil when the spec wants none.
	want *unstructured.Unstructured
}

// monitoring applies the PodMonitor and the PrometheusRule of
// spec.monitoring, and removes the ones this CollabCluster owns when it
// no longer asks for them. A missing prometheus-operator is reported in
// MonitoringReady, never as Degraded: editing does not depend on it, and
// the objects are created as soon as its CRDs appear (the CRD watch brings
// the CollabCluster back).
func (r *CollabClusterReconciler) monitoring(ctx context.Context, st *state) error {
	cc := st.cc
	st.monitoring = nil
	enabled := specs.MonitoringEnabled(cc)
	if !enabled && meta.FindStatusCondition(cc.Status.Conditions, collabv1.ConditionMonitoringReady) == nil {
		return nil // never had any: no request
	}
	kinds := []monitoringKind{
		{specs.PodMonitorCRDName, specs.PodMonitorGVK, specs.PodMonitorName(cc), specs.RuntimePodMonitor(cc)},
		{specs.PrometheusRuleCRDName, specs.PrometheusRuleGVK, specs.PrometheusRuleName(cc), specs.RuntimePrometheusRule(cc)},
	}
	var missing, made []string
	for _, k := range kinds {
		present, err := r.kindInstalled(ctx, k.crd, k.gvk)
		if err != nil {
			return err
		}
		switch {
		case !present:
			if k.want != nil {
				missing = append(missing, k.crd)
			}
		case k.want != nil:
			if err := r.optional.ensure(k.gvk); err != nil {
				return err
			}
			if err := apply(ctx, r.Client, k.want); err != nil {
				return err
			}
			made = append(made, k.gvk.Kind+" "+k.name)
		default:
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(k.gvk)
			u.SetName(k.name)
			if _, err := deleteIfOwned(ctx, r.Client, cc, u); err != nil {
				return err
			}
		}
	}
	if !enabled {
		return nil // the status phase drops the condition
	}
	c := metav1.Condition{Type: collabv1.ConditionMonitoringReady}
	if len(missing) > 0 {
		c.Status, c.Reason = metav1.ConditionFalse, "PrometheusOperatorNotInstalled"
		c.Message = fmt.Sprintf("spec.monitoring needs the prometheus-operator's CustomResourceDefinitions: %s not installed; "+
			"install the prometheus-operator (for example kube-prometheus-stack), or remove spec.monitoring. Editing is not affected",
			strings.Join(missing, " and "))
	} else {
		c.Status, c.Reason = metav1.ConditionTrue, "MonitorsCreated"
		c.Message = strings.Join(made, " and ") + " in place"
	}
	st.monitoring = &c
	return nil
}

// kindInstalled says whether gvk's CRD exists. Unlike optionalKindServed it
// needs nothing from the CRD's schema, so it reads the CRD's metadata from
// the manager's cache (the CRD metadata watch) instead of fetching the
// whole CRD from the API server on every reconcile; a namespaced install,
// which may not watch CRDs, asks discovery. A CRD that exists but is not
// established yet makes the apply fail, and the reconcile is retried.
func (r *CollabClusterReconciler) kindInstalled(ctx context.Context, crdName string, gvk schema.GroupVersionKind) (bool, error) {
	if !r.crdsCached {
		return r.served(gvk)
	}
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(crdGVK)
	err := r.Get(ctx, client.ObjectKey{Name: crdName}, m)
	switch {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("get CustomResourceDefinition %s: %w", crdName, err)
	}
	return m.DeletionTimestamp.IsZero(), nil
}
