package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
	"github.com/tandem-dev/tandem/internal/specs"
)

// updateStatus is the only place that writes the status. It reads the
// children's real state, so the conditions say what runs, not what was asked.
func (r *CollabClusterReconciler) updateStatus(ctx context.Context, st *state, phaseErr error) error {
	cc := st.cc
	orig := cc.DeepCopy()
	defaulted := specs.WithDefaults(cc)
	s := &cc.Status

	runtimeCond, dep, err := r.runtimeCondition(ctx, defaulted, st.applied)
	if err != nil {
		return err
	}
	redisCond, err := r.storeCondition(ctx, st, specs.ComponentRedis, specs.RedisName(cc), defaulted.Spec.Redis.Managed != nil,
		func() specs.SecretUse { return specs.RuntimeSecrets(cc)[0] })
	if err != nil {
		return err
	}
	var pgCond metav1.Condition
	if defaulted.Spec.Postgres.CloudNativePG != nil {
		pgCond, err = r.cnpgCondition(ctx, defaulted)
	} else {
		pgCond, err = r.storeCondition(ctx, st, specs.ComponentPostgres, specs.PostgresName(cc), defaulted.Spec.Postgres.Managed != nil,
			func() specs.SecretUse { return specs.RuntimeSecrets(cc)[1] })
	}
	if err != nil {
		return err
	}
	components := []metav1.Condition{runtimeCond, redisCond, pgCond}

	degradedCond := metav1.Condition{Type: collabv1.ConditionDegraded, Status: metav1.ConditionFalse,
		Reason: "AsExpected", Message: "the operator reconciled every child"}
	if phaseErr != nil {
		degradedCond.Status = metav1.ConditionTrue
		degradedCond.Reason = "ReconcileError"
		var d *degradedError
		if errors.As(phaseErr, &d) {
			degradedCond.Reason = d.Reason
		}
		degradedCond.Message = phaseErr.Error()
	}

	var waiting []string
	for _, c := range components {
		if c.Status != metav1.ConditionTrue {
			waiting = append(waiting, c.Message)
		}
	}
	readyCond := metav1.Condition{Type: collabv1.ConditionReady}
	progressingCond := metav1.Condition{Type: collabv1.ConditionProgressing}
	switch {
	case phaseErr != nil:
		readyCond.Status, readyCond.Reason, readyCond.Message = metav1.ConditionFalse, "Degraded", degradedCond.Message
		progressingCond.Status, progressingCond.Reason = metav1.ConditionFalse, "Blocked"
		progressingCond.Message = "waiting for the problem in the Degraded condition to be fixed"
		s.Phase = collabv1.PhaseDegraded
	case len(waiting) > 0:
		readyCond.Status, readyCond.Reason = metav1.ConditionFalse, "ComponentsNotReady"
		readyCond.Message = strings.Join(waiting, "; ")
		progressingCond.Status, progressingCond.Reason = metav1.ConditionTrue, "WaitingForComponents"
		progressingCond.Message = readyCond.Message
		s.Phase = collabv1.PhaseProgressing
	default:
		readyCond.Status, readyCond.Reason = metav1.ConditionTrue, "AllComponentsReady"
		readyCond.Message = "runtime, Redis and PostgreSQL are ready"
		progressingCond.Status, progressingCond.Reason = metav1.ConditionFalse, "ReconcileComplete"
		progressingCond.Message = "every child matches the spec"
		s.Phase = collabv1.PhaseReady
	}

	for _, c := range append(components, degradedCond, readyCond, progressingCond) {
		c.ObservedGeneration = cc.Generation
		meta.SetStatusCondition(&s.Conditions, c)
	}
	// SessionAffinity is informational: editing works without it, so it
	// never holds Ready back. It is kept as it was when a phase before
	// the exposure failed, and dropped when nothing exposes the runtime.
	switch {
	case st.affinity != nil:
		c := *st.affinity
		c.ObservedGeneration = cc.Generation
		meta.SetStatusCondition(&s.Conditions, c)
	case defaulted.Spec.Gateway == nil && !defaulted.Spec.Ingress.Enabled:
		meta.RemoveStatusCondition(&s.Conditions, collabv1.ConditionSessionAffinity)
	}
	switch {
	case st.routeAccepted != nil:
		c := *st.routeAccepted
		c.ObservedGeneration = cc.Generation
		meta.SetStatusCondition(&s.Conditions, c)
	case defaulted.Spec.Gateway == nil:
		meta.RemoveStatusCondition(&s.Conditions, collabv1.ConditionRouteAccepted)
	}
	// MonitoringReady is informational too, kept the same way.
	switch {
	case st.monitoring != nil:
		c := *st.monitoring
		c.ObservedGeneration = cc.Generation
		meta.SetStatusCondition(&s.Conditions, c)
	case !specs.MonitoringEnabled(defaulted):
		meta.RemoveStatusCondition(&s.Conditions, collabv1.ConditionMonitoringReady)
	}
	s.ObservedGeneration = cc.Generation
	s.Selector = specs.Selector(cc)
	s.Endpoint = specs.Endpoint(cc)
	s.Replicas, s.ReadyReplicas = 0, 0
	if dep != nil {
		s.Replicas, s.ReadyReplicas = dep.Status.Replicas, dep.Status.ReadyReplicas
	}

	if equality.Semantic.DeepEqual(orig.Status, cc.Status) {
		return nil
	}
	if err := r.Status().Patch(ctx, cc, client.MergeFrom(orig)); err != nil {
		return fmt.Errorf("patch status of CollabCluster %s: %w", cc.Name, err)
	}
	if cc.ResourceVersion != orig.ResourceVersion {
		// A patch that changed nothing on the server (the cache was behind
		// it) leaves the resourceVersion, and no event will follow.
		r.statusWrites.wrote(client.ObjectKeyFromObject(cc), orig.ResourceVersion, time.Now())
	}
	// Events follow the status that was written: a transition whose
	// status write failed is recorded by the reconcile that writes it.
	var runtimeGeneration int64
	if dep != nil {
		runtimeGeneration = dep.Generation
	}
	r.recordTransitions(orig, cc, runtimeGeneration)
	return nil
}

// runtimeCondition reports the runtime Deployment: ready when the current
// generation is rolled out and every desired replica is available.
//
// A workload this reconcile created is not in the cache yet; it is
// reported as what it is, created and not yet seen by its controller, which
// is also what the next reconcile finds, so the status is not written twice.
func (r *CollabClusterReconciler) runtimeCondition(ctx context.Context, cc *collabv1.CollabCluster,
	applied map[string]bool) (metav1.Condition, *appsv1.Deployment, error) {
	c := metav1.Condition{Type: collabv1.ConditionRuntimeReady, Status: metav1.ConditionFalse}
	dep := &appsv1.Deployment{}
	name := specs.RuntimeName(cc)
	err := r.Get(ctx, client.ObjectKey{Namespace: cc.Namespace, Name: name}, dep)
	if apierrors.IsNotFound(err) && applied[name] {
		c.Reason, c.Message = "RollingOut", fmt.Sprintf("runtime Deployment %s: the deployment controller has not seen the latest spec", name)
		return c, nil, nil
	}
	if apierrors.IsNotFound(err) {
		c.Reason, c.Message = "DeploymentMissing", fmt.Sprintf("runtime Deployment %s does not exist yet", name)
		return c, nil, nil
	}
	if err != nil {
		return c, nil, fmt.Errorf("get Deployment %s: %w", name, err)
	}
	want := ptr.Deref(dep.Spec.Replicas, 1)
	switch {
	case want == 0:
		c.Reason, c.Message = "ScaledToZero", fmt.Sprintf("runtime Deployment %s is scaled to zero", name)
	case dep.Status.ObservedGeneration < dep.Generation:
		c.Reason, c.Message = "RollingOut", fmt.Sprintf("runtime Deployment %s: the deployment controller has not seen the latest spec", name)
	case dep.Status.UpdatedReplicas < want:
		c.Reason, c.Message = "RollingOut", fmt.Sprintf("runtime Deployment %s: %d/%d pods updated", name, dep.Status.UpdatedReplicas, want)
	case dep.Status.AvailableReplicas < want:
		c.Reason, c.Message = "PodsNotReady", fmt.Sprintf("runtime Deployment %s: %d/%d pods available", name, dep.Status.AvailableReplicas, want)
	default:
		c.Status, c.Reason = metav1.ConditionTrue, "DeploymentAvailable"
		c.Message = fmt.Sprintf("runtime Deployment %s: %d/%d pods available", name, dep.Status.AvailableReplicas, want)
	}
	return c, dep, nil
}

// storeCondition reports a managed store's StatefulSet, or whether an
// external store's Secret is there.
func (r *CollabClusterReconciler) storeCondition(ctx context.Context, st *state, component, name string,
	managed bool, use func() specs.SecretUse) (metav1.Condition, error) {
	cc := st.cc
	label := map[string]string{specs.ComponentRedis: "Redis", specs.ComponentPostgres: "PostgreSQL"}[component]
	condType := map[string]string{specs.ComponentRedis: collabv1.ConditionRedisReady,
		specs.ComponentPostgres: collabv1.ConditionPostgresReady}[component]
	c := metav1.Condition{Type: condType, Status: metav1.ConditionFalse}

	if !managed {
		u := use()
		_, err := r.secretValue(ctx, cc.Namespace, u)
		var d *degradedError
		switch {
		case errors.As(err, &d):
			c.Reason, c.Message = "External"+d.Reason, fmt.Sprintf("external %s: %s", label, d.Message)
		case err != nil:
			return c, err
		default:
			c.Status, c.Reason = metav1.ConditionTrue, "ExternalConfigured"
			c.Message = fmt.Sprintf("external %s from Secret %s key %s", label, u.Ref.Name, u.Ref.Key)
		}
		return c, nil
	}

	sts := &appsv1.StatefulSet{}
	err := r.Get(ctx, client.ObjectKey{Namespace: cc.Namespace, Name: name}, sts)
	if apierrors.IsNotFound(err) && st.applied[name] {
		// As in runtimeCondition.
		c.Reason, c.Message = "RollingOut", fmt.Sprintf("%s StatefulSet %s: the statefulset controller has not seen the latest spec", label, name)
		return c, nil
	}
	if apierrors.IsNotFound(err) {
		c.Reason, c.Message = "StatefulSetMissing", fmt.Sprintf("%s StatefulSet %s does not exist yet", label, name)
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("get StatefulSet %s: %w", name, err)
	}
	want := ptr.Deref(sts.Spec.Replicas, 1)
	switch {
	case sts.Status.ObservedGeneration < sts.Generation:
		c.Reason, c.Message = "RollingOut", fmt.Sprintf("%s StatefulSet %s: the statefulset controller has not seen the latest spec", label, name)
	case sts.Status.ReadyReplicas < want:
		c.Reason, c.Message = "PodsNotReady", fmt.Sprintf("%s StatefulSet %s: %d/%d pods ready", label, name, sts.Status.ReadyReplicas, want)
	default:
		c.Status, c.Reason = metav1.ConditionTrue, "StatefulSetReady"
		c.Message = fmt.Sprintf("%s StatefulSet %s: %d/%d pods ready", label, name, sts.Status.ReadyReplicas, want)
	}
	return c, nil
}

// recordTransitions emits an event for each transition a person cares
// about, read from the conditions before and after this reconcile, so it
// fires once per transition, not on every reconcile: a store became ready
// (or stopped being ready), a rollout started and finished, the cluster
// became degraded and recovered, Ready changed. Scaling is recorded where
// the Deployment is written (deployment).
//
// A rollout is a change to a runtime that was deployed: its Deployment is
// past its first generation (the cached one, 0 when not cached yet). The
// first rollout of a new CollabCluster is its creation, which Ready
// reports; two more events per new CollabCluster would tell nothing more.
func (r *CollabClusterReconciler) recordTransitions(before, after *collabv1.CollabCluster, runtimeGeneration int64) {
	changed := func(t string) (*metav1.Condition, bool) {
		old := meta.FindStatusCondition(before.Status.Conditions, t)
		cur := meta.FindStatusCondition(after.Status.Conditions, t)
		if cur == nil {
			return nil, false
		}
		return cur, old == nil || old.Status != cur.Status || old.Reason != cur.Reason
	}
	// One reason per store: the events API folds events with the same
	// reason into one series that keeps only the first note.
	for _, store := range []struct{ condition, name string }{
		{collabv1.ConditionRedisReady, "Redis"}, {collabv1.ConditionPostgresReady, "PostgreSQL"},
	} {
		c, ok := changed(store.condition)
		switch {
		case !ok:
		case c.Status == metav1.ConditionTrue:
			r.Recorder.Eventf(after, nil, corev1.EventTypeNormal, store.condition, "Reconcile", "%s is ready: %s", store.name, c.Message)
		case meta.IsStatusConditionTrue(before.Status.Conditions, store.condition):
			r.Recorder.Eventf(after, nil, corev1.EventTypeWarning, strings.Replace(store.condition, "Ready", "NotReady", 1),
				"Reconcile", "%s is not ready: %s", store.name, c.Message)
		}
	}
	if c, ok := changed(collabv1.ConditionRuntimeReady); ok && runtimeGeneration > 1 {
		old := meta.FindStatusCondition(before.Status.Conditions, collabv1.ConditionRuntimeReady)
		wasRolling := old != nil && old.Reason == "RollingOut"
		switch {
		case c.Reason == "RollingOut" && !wasRolling:
			r.Recorder.Eventf(after, nil, corev1.EventTypeNormal, "RolloutStarted", "Rollout", "%s", c.Message)
		case c.Status == metav1.ConditionTrue && wasRolling:
			r.Recorder.Eventf(after, nil, corev1.EventTypeNormal, "RolloutFinished", "Rollout", "%s", c.Message)
		}
	}
	if c, ok := changed(collabv1.ConditionDegraded); ok {
		switch {
		case c.Status == metav1.ConditionTrue:
			r.Recorder.Eventf(after, nil, corev1.EventTypeWarning, c.Reason, "Reconcile", "%s", c.Message)
		case meta.IsStatusConditionTrue(before.Status.Conditions, collabv1.ConditionDegraded):
			r.Recorder.Eventf(after, nil, corev1.EventTypeNormal, "Recovered", "Reconcile", "no longer degraded: %s", c.Message)
		}
	}
	if c, ok := changed(collabv1.ConditionReady); ok {
		if c.Status == metav1.ConditionTrue {
			r.Recorder.Eventf(after, nil, corev1.EventTypeNormal, "Ready", "Reconcile", "%s", c.Message)
		} else if meta.IsStatusConditionTrue(before.Status.Conditions, collabv1.ConditionReady) {
			r.Recorder.Eventf(after, nil, corev1.EventTypeWarning, "NotReady", "Reconcile", "%s", c.Message)
		}
	}
}
