package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
	"github.com/tandem-dev/tandem/internal/apicount"
	"github.com/tandem-dev/tandem/internal/specs"
)

const (
	managedSample  = "collab_v1alpha1_collabcluster.yaml"
	externalSample = "collab_v1alpha1_collabcluster_external.yaml"
)

func ownedBy(obj client.Object, cc *collabv1.CollabCluster) error {
	for _, ref := range obj.GetOwnerReferences() {
		if ref.UID == cc.UID && ref.Controller != nil && *ref.Controller && ref.Kind == "CollabCluster" {
			return nil
		}
	}
	return fmt.Errorf("%T %s has no controller reference to CollabCluster %s: %+v", obj, obj.GetName(), cc.Name, obj.GetOwnerReferences())
}

func condition(ctx context.Context, ns, name, condType string) (*metav1.Condition, *collabv1.CollabCluster, error) {
	cc := &collabv1.CollabCluster{}
	if err := get(ctx, ns, name, cc); err != nil {
		return nil, nil, err
	}
	c := meta.FindStatusCondition(cc.Status.Conditions, condType)
	if c == nil {
		return nil, cc, fmt.Errorf("no %s condition yet", condType)
	}
	return c, cc, nil
}

func wantCondition(t *testing.T, ns, name, condType string, status metav1.ConditionStatus, reasonOrMessage string) *collabv1.CollabCluster {
	t.Helper()
	var got *collabv1.CollabCluster
	eventually(t, fmt.Sprintf("%s=%s (%s)", condType, status, reasonOrMessage), func(ctx context.Context) error {
		c, cc, err := condition(ctx, ns, name, condType)
		if err != nil {
			return err
		}
		if c.Status != status || !(strings.Contains(c.Reason, reasonOrMessage) || strings.Contains(c.Message, reasonOrMessage)) {
			return fmt.Errorf("%s is %s/%s: %s", condType, c.Status, c.Reason, c.Message)
		}
		got = cc
		return nil
	})
	return got
}

func TestManagedClusterCreatesEveryChild(t *testing.T) {
	ns := namespace(t)
	cc := createSample(t, managedSample, ns, nil)
	name := cc.Name

	children := []struct {
		name string
		obj  client.Object
	}{
		{name + "-redis-auth", &corev1.Secret{}},
		{name + "-postgres-auth", &corev1.Secret{}},
		{name + "-jwt", &corev1.Secret{}},
		{name + "-postgres", &corev1.Service{}},
		{name + "-postgres", &appsv1.StatefulSet{}},
		{name + "-redis", &corev1.Service{}},
		{name + "-redis", &appsv1.StatefulSet{}},
		{name + "-runtime", &corev1.ConfigMap{}},
		{name + "-runtime", &appsv1.Deployment{}},
		{name, &corev1.Service{}},
		{name, &networkingv1.Ingress{}},
		{name + "-runtime", &policyv1.PodDisruptionBudget{}},
		{name + "-postgres", &networkingv1.NetworkPolicy{}},
		{name + "-redis", &networkingv1.NetworkPolicy{}},
	}
	if err := get(context.Background(), ns, name, cc); err != nil {
		t.Fatal(err)
	}
	for _, child := range children {
		t.Run(fmt.Sprintf("%T/%s", child.obj, child.name), func(t *testing.T) {
			eventually(t, "child with owner reference", func(ctx context.Context) error {
				if err := get(ctx, ns, child.name, child.obj); err != nil {
					return err
				}
				return ownedBy(child.obj, cc)
			})
		})
	}

	// The expected spec, spot-checked where the CRD defaults and the
	// builders meet the API server.
	dep := &appsv1.Deployment{}
	redis := &appsv1.StatefulSet{}
	pg := &appsv1.StatefulSet{}
	ing := &networkingv1.Ingress{}
	redisSecret := &corev1.Secret{}
	ctx := context.Background()
	for _, g := range []struct {
		name string
		obj  client.Object
	}{{name + "-runtime", dep}, {name + "-redis", redis}, {name + "-postgres", pg}, {name, ing}, {name + "-redis-auth", redisSecret}} {
		if err := get(ctx, ns, g.name, g.obj); err != nil {
			t.Fatal(err)
		}
	}
	password := string(redisSecret.Data["password"])
	checks := []struct {
		what string
		ok   bool
	}{
		{"runtime image is the operator's", dep.Spec.Template.Spec.Containers[0].Image == operatorImage},
		{"runtime replicas from the spec", *dep.Spec.Replicas == 2},
		{"config hash on the pod template", dep.Spec.Template.Annotations[specs.AnnotationConfigHash] != ""},
		{"redis AOF fsync from the spec", slices.Contains(redis.Spec.Template.Spec.Containers[0].Args, "everysec")},
		{"redis password generated", len(password) == 64},
		{"redis URL carries the password", string(redisSecret.Data["url"]) == "redis://:"+password+"@"+name+"-redis:6379/0"},
		{"postgres PVC retained by default", pg.Spec.PersistentVolumeClaimRetentionPolicy.WhenDeleted == appsv1.RetainPersistentVolumeClaimRetentionPolicyType},
		{"postgres volume size from the spec", pg.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().String() == "2Gi"},
		{"ingress cookie affinity", ing.Annotations["nginx.ingress.kubernetes.io/affinity"] == "cookie"},
		{"ingress WebSocket timeout", ing.Annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s: not as expected", c.what)
		}
	}
	wantEvent(t, ns, corev1.EventTypeNormal, "SecretGenerated", name+"-jwt")
	eventually(t, "status endpoint and selector", func(ctx context.Context) error {
		if err := get(ctx, ns, name, cc); err != nil {
			return err
		}
		if cc.Status.Endpoint != "http://docs.example.test" || cc.Status.Selector != specs.Selector(cc) {
			return fmt.Errorf("endpoint %q selector %q", cc.Status.Endpoint, cc.Status.Selector)
		}
		return nil
	})
}

func TestExternalClusterUsesReferencedSecrets(t *testing.T) {
	ns := namespace(t)
	cc := createSample(t, externalSample, ns, nil)
	ctx := context.Background()

	dep := &appsv1.Deployment{}
	eventually(t, "runtime Deployment", func(ctx context.Context) error {
		return get(ctx, ns, cc.Name+"-runtime", dep)
	})
	var mounted []string
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			mounted = append(mounted, v.Secret.SecretName+"/"+v.Secret.Items[0].Key)
		}
	}
	slices.Sort(mounted)
	if want := []string{"notes-postgres/dsn", "notes-redis/url"}; !slices.Equal(mounted, want) {
		t.Errorf("runtime mounts Secrets %v, want %v (anonymous auth: no JWT key)", mounted, want)
	}
	sets := &appsv1.StatefulSetList{}
	if err := shared.client.List(ctx, sets, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(sets.Items) != 0 {
		t.Errorf("external stores: %d StatefulSets created, want none", len(sets.Items))
	}
	wantCondition(t, ns, cc.Name, collabv1.ConditionRedisReady, metav1.ConditionTrue, "ExternalConfigured")
	wantCondition(t, ns, cc.Name, collabv1.ConditionPostgresReady, metav1.ConditionTrue, "ExternalConfigured")

	// Removing a referenced Secret degrades the cluster with a message
	// that names it; restoring it clears the condition.
	redisSecret := &corev1.Secret{}
	if err := get(ctx, ns, "notes-redis", redisSecret); err != nil {
		t.Fatal(err)
	}
	if err := shared.client.Delete(ctx, redisSecret); err != nil {
		t.Fatal(err)
	}
	got := wantCondition(t, ns, cc.Name, collabv1.ConditionDegraded, metav1.ConditionTrue, `Secret "notes-redis"`)
	if got.Status.Phase != collabv1.PhaseDegraded {
		t.Errorf("phase %q, want Degraded", got.Status.Phase)
	}
	wantCondition(t, ns, cc.Name, collabv1.ConditionReady, metav1.ConditionFalse, "Degraded")
	wantEvent(t, ns, corev1.EventTypeWarning, "SecretMissing", "notes-redis")
	restored := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "notes-redis", Namespace: ns},
		Data: map[string][]byte{"url": redisSecret.Data["url"]}}
	if err := shared.client.Create(ctx, restored); err != nil {
		t.Fatal(err)
	}
	wantCondition(t, ns, cc.Name, collabv1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")
	wantEvent(t, ns, corev1.EventTypeNormal, "Recovered", "no longer degraded")
}

// An external Redis Cluster with TLS and a PostgreSQL with a CA: until the
// TLS Secret exists the cluster is Degraded with a message naming it and
// the field; once it does, the runtime mounts its keys and is configured
// for the cluster, and a new certificate rolls the pods.
func TestExternalRedisClusterWithTLS(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	cc := createSample(t, externalSample, ns, func(cc *collabv1.CollabCluster) {
		cc.Spec.Redis.External.Cluster = true
		cc.Spec.Redis.External.WaitReplicas = ptrTo[int32](1)
		cc.Spec.Redis.External.TLS = &collabv1.StoreTLS{SecretName: "notes-redis-tls", ClientCertificate: true}
		cc.Spec.Postgres.External.TLS = &collabv1.StoreTLS{SecretName: "notes-postgres-ca"}
	})
	wantCondition(t, ns, cc.Name, collabv1.ConditionDegraded, metav1.ConditionTrue,
		`Secret "notes-redis-tls" (named by spec.redis.external.tls.secretName) not found`)
	for name, keys := range map[string][]string{"notes-redis-tls": {"ca.crt", "tls.crt", "tls.key"}, "notes-postgres-ca": {"ca.crt"}} {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: map[string][]byte{}}
		for _, k := range keys {
			s.Data[k] = []byte("PEM of " + k)
		}
		if err := shared.client.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	wantCondition(t, ns, cc.Name, collabv1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")

	cm := &corev1.ConfigMap{}
	eventually(t, "runtime ConfigMap with TLS settings", func(ctx context.Context) error {
		if err := get(ctx, ns, cc.Name+"-runtime", cm); err != nil {
			return err
		}
		want := map[string]string{
			"TANDEM_REDIS_CLUSTER": "true", "TANDEM_REDIS_WAIT_REPLICAS": "1",
			"TANDEM_REDIS_CA_FILE": "/etc/tandem/tls/redis/ca.crt", "TANDEM_REDIS_CERT_FILE": "/etc/tandem/tls/redis/tls.crt",
			"TANDEM_REDIS_KEY_FILE": "/etc/tandem/tls/redis/tls.key", "TANDEM_POSTGRES_CA_FILE": "/etc/tandem/tls/postgres/ca.crt",
		}
		for k, v := range want {
			if cm.Data[k] != v {
				return fmt.Errorf("%s = %q, want %q", k, cm.Data[k], v)
			}
		}
		if _, ok := cm.Data["TANDEM_POSTGRES_CERT_FILE"]; ok {
			return errors.New("TANDEM_POSTGRES_CERT_FILE set without clientCertificate")
		}
		return nil
	})
	dep := &appsv1.Deployment{}
	eventually(t, "runtime Deployment mounting the TLS Secrets", func(ctx context.Context) error {
		if err := get(ctx, ns, cc.Name+"-runtime", dep); err != nil {
			return err
		}
		mounts := map[string]string{}
		for _, m := range dep.Spec.Template.Spec.Containers[0].VolumeMounts {
			mounts[m.Name] = m.MountPath
		}
		for _, v := range dep.Spec.Template.Spec.Volumes {
			if v.Secret == nil || (v.Name != "redis-tls" && v.Name != "postgres-tls") {
				continue
			}
			var keys []string
			for _, it := range v.Secret.Items {
				keys = append(keys, it.Key)
			}
			mounts[v.Name] += " " + v.Secret.SecretName + ":" + strings.Join(keys, ",")
		}
		want := map[string]string{
			"redis-tls":    "/etc/tandem/tls/redis notes-redis-tls:ca.crt,tls.crt,tls.key",
			"postgres-tls": "/etc/tandem/tls/postgres notes-postgres-ca:ca.crt",
		}
		for k, v := range want {
			if mounts[k] != v {
				return fmt.Errorf("volume %s: %q, want %q", k, mounts[k], v)
			}
		}
		return nil
	})

	// A renewed certificate (cert-manager rewrites the Secret) rolls the
	// runtime pods, which read the files only at start.
	before, err := podTemplateHash(ctx, ns, cc.Name+"-runtime")
	if err != nil {
		t.Fatal(err)
	}
	s := &corev1.Secret{}
	if err := get(ctx, ns, "notes-postgres-ca", s); err != nil {
		t.Fatal(err)
	}
	s.Data["ca.crt"] = []byte("PEM of the new CA")
	if err := shared.client.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pod template hash to change after the CA changed", func(ctx context.Context) error {
		h, err := podTemplateHash(ctx, ns, cc.Name+"-runtime")
		if err != nil {
			return err
		}
		if h == before {
			return errors.New("unchanged")
		}
		return nil
	})
}

// wantEvent waits for an events.k8s.io Event about a CollabCluster.
func wantEvent(t *testing.T, ns, eventType, reason, noteContains string) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s event %s mentioning %s", eventType, reason, noteContains), func(ctx context.Context) error {
		list := &eventsv1.EventList{}
		if err := shared.client.List(ctx, list, client.InNamespace(ns)); err != nil {
			return err
		}
		var seen []string
		for _, e := range list.Items {
			if e.Regarding.Kind == "CollabCluster" && e.Type == eventType && e.Reason == reason && strings.Contains(e.Note, noteContains) {
				return nil
			}
			seen = append(seen, e.Type+"/"+e.Reason+": "+e.Note)
		}
		return fmt.Errorf("events so far: %q", seen)
	})
}

// markStatefulSetReady plays the statefulset controller and kubelet, which
// envtest does not run.
func markStatefulSetReady(t *testing.T, ns, name string) {
	t.Helper()
	eventually(t, "StatefulSet "+name+" status", func(ctx context.Context) error {
		sts := &appsv1.StatefulSet{}
		if err := get(ctx, ns, name, sts); err != nil {
			return err
		}
		sts.Status.ObservedGeneration = sts.Generation
		sts.Status.Replicas, sts.Status.ReadyReplicas, sts.Status.AvailableReplicas = 1, 1, 1
		sts.Status.CurrentReplicas, sts.Status.UpdatedReplicas = 1, 1
		return shared.client.Status().Update(ctx, sts)
	})
}

// markDeploymentReady plays the deployment controller and kubelet.
func markDeploymentReady(t *testing.T, ns, name string) {
	t.Helper()
	eventually(t, "Deployment "+name+" status", func(ctx context.Context) error {
		dep := &appsv1.Deployment{}
		if err := get(ctx, ns, name, dep); err != nil {
			return err
		}
		n := *dep.Spec.Replicas
		dep.Status.ObservedGeneration = dep.Generation
		dep.Status.Replicas, dep.Status.UpdatedReplicas, dep.Status.ReadyReplicas, dep.Status.AvailableReplicas = n, n, n, n
		dep.Status.Conditions = []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue,
			Reason: "MinimumReplicasAvailable", LastUpdateTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
		return shared.client.Status().Update(ctx, dep)
	})
}

func TestConditionsFollowChildren(t *testing.T) {
	ns := namespace(t)
	cc := createSample(t, managedSample, ns, nil)
	name := cc.Name

	wantCondition(t, ns, name, collabv1.ConditionProgressing, metav1.ConditionTrue, "WaitingForComponents")
	wantCondition(t, ns, name, collabv1.ConditionReady, metav1.ConditionFalse, "ComponentsNotReady")

	steps := []struct {
		mark      func()
		condition string
	}{
		{func() { markStatefulSetReady(t, ns, name+"-postgres") }, collabv1.ConditionPostgresReady},
		{func() { markStatefulSetReady(t, ns, name+"-redis") }, collabv1.ConditionRedisReady},
		{func() { markDeploymentReady(t, ns, name+"-runtime") }, collabv1.ConditionRuntimeReady},
	}
	for i, step := range steps {
		step.mark()
		wantCondition(t, ns, name, step.condition, metav1.ConditionTrue, "")
		if i < len(steps)-1 {
			// Ready must stay false while any component is not ready.
			c, _, err := condition(context.Background(), ns, name, collabv1.ConditionReady)
			if err != nil || c.Status != metav1.ConditionFalse {
				t.Fatalf("after %s: Ready %+v (%v), want False", step.condition, c, err)
			}
		}
	}
	got := wantCondition(t, ns, name, collabv1.ConditionReady, metav1.ConditionTrue, "AllComponentsReady")
	wantCondition(t, ns, name, collabv1.ConditionProgressing, metav1.ConditionFalse, "ReconcileComplete")
	wantEvent(t, ns, corev1.EventTypeNormal, "PostgresReady", "PostgreSQL is ready")
	wantEvent(t, ns, corev1.EventTypeNormal, "RedisReady", "Redis is ready")
	wantCondition(t, ns, name, collabv1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")
	if got.Status.Phase != collabv1.PhaseReady || got.Status.ReadyReplicas != 2 || got.Status.ObservedGeneration != got.Generation {
		t.Errorf("status %+v: want phase Ready, 2 ready replicas, observedGeneration %d", got.Status, got.Generation)
	}

	// A spec change bumps the generation; observedGeneration follows and
	// the runtime is rolling again until its Deployment catches up.
	oldGen := got.Generation
	eventually(t, "spec update", func(ctx context.Context) error {
		cc := &collabv1.CollabCluster{}
		if err := get(ctx, ns, name, cc); err != nil {
			return err
		}
		cc.Spec.Runtime.Flush.BatchSize = ptrTo[int32](1000)
		return shared.client.Update(ctx, cc)
	})
	eventually(t, "observedGeneration to follow", func(ctx context.Context) error {
		cc := &collabv1.CollabCluster{}
		if err := get(ctx, ns, name, cc); err != nil {
			return err
		}
		if cc.Generation == oldGen || cc.Status.ObservedGeneration != cc.Generation {
			return fmt.Errorf("generation %d (was %d), observedGeneration %d", cc.Generation, oldGen, cc.Status.ObservedGeneration)
		}
		return nil
	})
	wantCondition(t, ns, name, collabv1.ConditionRuntimeReady, metav1.ConditionFalse, "RollingOut")
	wantEvent(t, ns, corev1.EventTypeNormal, "RolloutStarted", name+"-runtime")
	markDeploymentReady(t, ns, name+"-runtime")
	wantCondition(t, ns, name, collabv1.ConditionReady, metav1.ConditionTrue, "AllComponentsReady")
	wantEvent(t, ns, corev1.EventTypeNormal, "RolloutFinished", name+"-runtime")
}

// A new CollabCluster's story is told once: every event reason is sent
// once (a reconcile that started before the cache held the previous status
// write sent that write's transitions again, as a series patch), its first
// rollout is the creation Ready reports, not a RolloutStarted and
// RolloutFinished, and the IngressClass of spec.ingress.controller auto is
// read from the cache, not once per reconcile.
func TestNewClusterTellsEachTransitionOnce(t *testing.T) {
	classReads := func() int {
		return apicount.Sum(shared.requests.Snapshot(), func(r apicount.Request) bool {
			return r.Resource == "ingressclasses" && r.Verb != "watch"
		})
	}
	readsBefore := classReads()
	ns := namespace(t)
	cc := createSample(t, managedSample, ns, nil)
	wantCondition(t, ns, cc.Name, collabv1.ConditionProgressing, metav1.ConditionTrue, "WaitingForComponents")
	markStatefulSetReady(t, ns, cc.Name+"-postgres")
	markStatefulSetReady(t, ns, cc.Name+"-redis")
	markDeploymentReady(t, ns, cc.Name+"-runtime")
	wantCondition(t, ns, cc.Name, collabv1.ConditionReady, metav1.ConditionTrue, "AllComponentsReady")
	wantEvent(t, ns, corev1.EventTypeNormal, "Ready", "ready")

	// The events are sent in the background: wait for the writes to stop.
	waitForNoWrites(t, ns)
	list := &eventsv1.EventList{}
	if err := shared.client.List(context.Background(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, e := range list.Items {
		reasons = append(reasons, e.Reason)
		if e.Series != nil {
			t.Errorf("event %s was sent %d times: %s", e.Reason, e.Series.Count, e.Note)
		}
	}
	slices.Sort(reasons)
	if want := []string{"PostgresReady", "Ready", "RedisReady", "SecretGenerated"}; !slices.Equal(reasons, want) {
		t.Errorf("events %q, want %q", reasons, want)
	}
	if n := classReads() - readsBefore; n != 0 {
		t.Errorf("%d IngressClass reads around the cache", n)
	}
}

func TestScaleSubresource(t *testing.T) {
	ns := namespace(t)
	cc := createSample(t, externalSample, ns, nil)
	eventually(t, "PDB for 3 replicas", func(ctx context.Context) error {
		return get(ctx, ns, cc.Name+"-runtime", &policyv1.PodDisruptionBudget{})
	})

	for _, replicas := range []int32{5, 1} {
		eventually(t, fmt.Sprintf("scale to %d", replicas), func(ctx context.Context) error {
			scale := &autoscalingv1.Scale{}
			if err := shared.client.SubResource("scale").Get(ctx, cc, scale); err != nil {
				return err
			}
			scale.Spec.Replicas = replicas
			return shared.client.SubResource("scale").Update(ctx, cc, client.WithSubResourceBody(scale))
		})
		eventually(t, fmt.Sprintf("Deployment at %d replicas", replicas), func(ctx context.Context) error {
			dep := &appsv1.Deployment{}
			if err := get(ctx, ns, cc.Name+"-runtime", dep); err != nil {
				return err
			}
			if *dep.Spec.Replicas != replicas {
				return fmt.Errorf("Deployment replicas %d", *dep.Spec.Replicas)
			}
			return nil
		})
	}
	wantEvent(t, ns, corev1.EventTypeNormal, "ScaledUp", "from 3 to 5 replicas")
	wantEvent(t, ns, corev1.EventTypeNormal, "ScaledDown", "from 5 to 1 replica")
	eventually(t, "PDB removed at one replica", func(ctx context.Context) error {
		err := get(ctx, ns, cc.Name+"-runtime", &policyv1.PodDisruptionBudget{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("PDB still there: %v", err)
	})

	markDeploymentReady(t, ns, cc.Name+"-runtime")
	eventually(t, "scale status with selector", func(ctx context.Context) error {
		scale := &autoscalingv1.Scale{}
		if err := shared.client.SubResource("scale").Get(ctx, cc, scale); err != nil {
			return err
		}
		want := "app.kubernetes.io/component=runtime,app.kubernetes.io/instance=notes,app.kubernetes.io/name=tandem"
		if scale.Status.Selector != want || scale.Status.Replicas != 1 {
			return fmt.Errorf("scale status %+v, want selector %q and 1 replica", scale.Status, want)
		}
		return nil
	})
}

func TestInvalidSpecsAreRejected(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	secretRef := collabv1.SecretKeyRef{Name: "s", Key: "k"}
	tests := []struct {
		name   string
		mutate func(*collabv1.CollabClusterSpec)
		want   string
	}{
		{"redis managed and external", func(s *collabv1.CollabClusterSpec) {
			s.Redis = &collabv1.RedisSpec{Managed: &collabv1.ManagedRedis{}, External: &collabv1.ExternalRedis{URLSecretRef: secretRef}}
		}, "spec.redis: set exactly one of managed or external"},
		{"redis neither", func(s *collabv1.CollabClusterSpec) {
			s.Redis = &collabv1.RedisSpec{}
		}, "spec.redis: set exactly one of managed or external"},
		{"postgres managed and external", func(s *collabv1.CollabClusterSpec) {
			s.Postgres = &collabv1.PostgresSpec{Managed: &collabv1.ManagedPostgres{}, External: &collabv1.ExternalPostgres{DSNSecretRef: secretRef}}
		}, "spec.postgres: set exactly one of managed, external or cloudNativePG"},
		{"too many replicas", func(s *collabv1.CollabClusterSpec) {
			s.Runtime.Replicas = ptrTo[int32](101)
		}, "spec.runtime.replicas: Invalid value: 101: spec.runtime.replicas in body should be less than or equal to 100"},
		{"negative replicas", func(s *collabv1.CollabClusterSpec) {
			s.Runtime.Replicas = ptrTo[int32](-1)
		}, "spec.runtime.replicas in body should be greater than or equal to 0"},
		{"ingress without host", func(s *collabv1.CollabClusterSpec) {
			s.Ingress.Enabled = true
		}, "spec.ingress.host is required when spec.ingress.enabled is true: set the public host name"},
		{"zero storage", func(s *collabv1.CollabClusterSpec) {
			s.Redis = &collabv1.RedisSpec{Managed: &collabv1.ManagedRedis{Storage: collabv1.StorageSpec{Size: "0"}}}
		}, `spec.redis.managed.storage.size: Invalid value: "0": size must be a positive quantity such as 1Gi`},
		{"storage size not a quantity", func(s *collabv1.CollabClusterSpec) {
			s.Postgres = &collabv1.PostgresSpec{Managed: &collabv1.ManagedPostgres{Storage: collabv1.StorageSpec{Size: "1 GB"}}}
		}, `spec.postgres.managed.storage.size: Invalid value: "1 GB": size must be a positive quantity such as 1Gi: digits, then optionally a unit Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P or E`},
		{"zero flush interval", func(s *collabv1.CollabClusterSpec) {
			s.Runtime.Flush.Interval = &metav1.Duration{}
		}, "spec.runtime.flush.interval must be a positive duration such as 500ms"},
		{"zero history retention period", func(s *collabv1.CollabClusterSpec) {
			s.Runtime.History.RetentionPeriod = &metav1.Duration{}
		}, "spec.runtime.history.retentionPeriod must be a positive duration such as 720h"},
		{"zero history retention revisions", func(s *collabv1.CollabClusterSpec) {
			s.Runtime.History.RetentionRevisions = ptrTo[int64](0)
		}, "spec.runtime.history.retentionRevisions in body should be greater than or equal to 1"},
		{"JWT secret with anonymous auth", func(s *collabv1.CollabClusterSpec) {
			s.Runtime.Auth = collabv1.AuthSpec{Mode: collabv1.AuthModeAnonymous, SecretRef: &secretRef}
		}, "spec.runtime.auth.secretRef is only used with mode jwt: remove secretRef or set mode: jwt"},
		{"unknown fsync", func(s *collabv1.CollabClusterSpec) {
			s.Redis = &collabv1.RedisSpec{Managed: &collabv1.ManagedRedis{AppendFsync: "sometimes"}}
		}, `spec.redis.managed.appendFsync: Unsupported value: "sometimes"`},
		{"TLS secret name not a name", func(s *collabv1.CollabClusterSpec) {
			s.Redis = &collabv1.RedisSpec{External: &collabv1.ExternalRedis{URLSecretRef: secretRef, TLS: &collabv1.StoreTLS{SecretName: "Redis_CA"}}}
		}, "spec.redis.external.tls.secretName: Invalid value: tls.secretName must be the name of a Secret in this namespace: lowercase letters, digits, '-' and '.'"},
		{"TLS without a secret name", func(s *collabv1.CollabClusterSpec) {
			s.Postgres = &collabv1.PostgresSpec{External: &collabv1.ExternalPostgres{DSNSecretRef: secretRef, TLS: &collabv1.StoreTLS{}}}
		}, "spec.postgres.external.tls.secretName"},
		{"too many wait replicas", func(s *collabv1.CollabClusterSpec) {
			s.Redis = &collabv1.RedisSpec{External: &collabv1.ExternalRedis{URLSecretRef: secretRef, WaitReplicas: ptrTo[int32](6)}}
		}, "spec.redis.external.waitReplicas in body should be less than or equal to 5"},
		{"unknown auth mode", func(s *collabv1.CollabClusterSpec) {
			s.Runtime.Auth.Mode = "oauth"
		}, `spec.runtime.auth.mode: Unsupported value: "oauth"`},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cc := &collabv1.CollabCluster{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bad-%d", i), Namespace: ns}}
			cc.Spec.Redis = &collabv1.RedisSpec{Managed: &collabv1.ManagedRedis{}}
			cc.Spec.Postgres = &collabv1.PostgresSpec{Managed: &collabv1.ManagedPostgres{}}
			tc.mutate(&cc.Spec)
			err := shared.client.Create(ctx, cc)
			if err == nil {
				t.Fatalf("created; want rejection with %q", tc.want)
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v\nwant an Invalid error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "should match") {
				t.Errorf("the rejection prints a regular expression: %v", err)
			}
		})
	}

	// Transition rules: storage cannot change after creation.
	updates := []struct {
		name   string
		mutate func(*collabv1.CollabClusterSpec)
		want   string
	}{
		{"storage class changed", func(s *collabv1.CollabClusterSpec) {
			s.Postgres.Managed.Storage.StorageClassName = ptrTo("fast")
		}, "spec.postgres.managed.storage.storageClassName: Invalid value: storageClassName is immutable: create a new CollabCluster to use another storage class"},
		{"storage size changed", func(s *collabv1.CollabClusterSpec) {
			s.Redis.Managed.Storage.Size = "5Gi"
		}, "spec.redis.managed.storage.size: Invalid value: size is immutable: expand the PersistentVolumeClaim directly instead"},
	}
	for i, tc := range updates {
		t.Run(tc.name, func(t *testing.T) {
			cc := &collabv1.CollabCluster{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("immutable-%d", i), Namespace: ns}}
			cc.Spec.Redis = &collabv1.RedisSpec{Managed: &collabv1.ManagedRedis{}}
			cc.Spec.Postgres = &collabv1.PostgresSpec{Managed: &collabv1.ManagedPostgres{Storage: collabv1.StorageSpec{StorageClassName: ptrTo("standard")}}}
			if err := shared.client.Create(ctx, cc); err != nil {
				t.Fatalf("create valid cluster: %v", err)
			}
			tc.mutate(&cc.Spec)
			err := shared.client.Update(ctx, cc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("update error %v\nwant one containing %q", err, tc.want)
			}
		})
	}
}

func podTemplateHash(ctx context.Context, ns, name string) (string, error) {
	dep := &appsv1.Deployment{}
	if err := get(ctx, ns, name, dep); err != nil {
		return "", err
	}
	h := dep.Spec.Template.Annotations[specs.AnnotationConfigHash]
	if h == "" {
		return "", errors.New("no config hash yet")
	}
	return h, nil
}

func TestSecretChangeRollsRuntime(t *testing.T) {
	tests := []struct {
		name   string
		sample string
		secret func(cc *collabv1.CollabCluster) string
		key    string
	}{
		{"generated JWT key", managedSample, func(cc *collabv1.CollabCluster) string { return cc.Name + "-jwt" }, "key"},
		{"external Redis URL", externalSample, func(*collabv1.CollabCluster) string { return "notes-redis" }, "url"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ns := namespace(t)
			cc := createSample(t, tc.sample, ns, nil)
			var before string
			eventually(t, "first pod template hash", func(ctx context.Context) (err error) {
				before, err = podTemplateHash(ctx, ns, cc.Name+"-runtime")
				return err
			})
			eventually(t, "Secret update", func(ctx context.Context) error {
				s := &corev1.Secret{}
				if err := get(ctx, ns, tc.secret(cc), s); err != nil {
					return err
				}
				s.Data[tc.key] = []byte("rotated-" + string(s.Data[tc.key]))
				return shared.client.Update(ctx, s)
			})
			eventually(t, "pod template hash to change", func(ctx context.Context) error {
				after, err := podTemplateHash(ctx, ns, cc.Name+"-runtime")
				if err != nil {
					return err
				}
				if after == before {
					return fmt.Errorf("hash still %s", after)
				}
				return nil
			})
		})
	}
}

func TestDriftIsCorrected(t *testing.T) {
	ns := namespace(t)
	cc := createSample(t, managedSample, ns, nil)
	ctx := context.Background()
	depName := cc.Name + "-runtime"

	dep := &appsv1.Deployment{}
	eventually(t, "runtime Deployment", func(ctx context.Context) error { return get(ctx, ns, depName, dep) })

	t.Run("deleted Deployment is recreated", func(t *testing.T) {
		oldUID := dep.UID
		if err := shared.client.Delete(ctx, dep); err != nil {
			t.Fatal(err)
		}
		eventually(t, "a new Deployment", func(ctx context.Context) error {
			d := &appsv1.Deployment{}
			if err := get(ctx, ns, depName, d); err != nil {
				return err
			}
			if d.UID == oldUID {
				return errors.New("still the old Deployment")
			}
			return nil
		})
	})

	edits := []struct {
		name  string
		obj   client.Object
		objNm string
		edit  func(client.Object)
		check func(client.Object) error
	}{
		{"runtime image edited", &appsv1.Deployment{}, depName,
			func(o client.Object) { o.(*appsv1.Deployment).Spec.Template.Spec.Containers[0].Image = "evil:latest" },
			func(o client.Object) error {
				if img := o.(*appsv1.Deployment).Spec.Template.Spec.Containers[0].Image; img != operatorImage {
					return fmt.Errorf("image %s", img)
				}
				return nil
			}},
		{"runtime replicas edited", &appsv1.Deployment{}, depName,
			func(o client.Object) { o.(*appsv1.Deployment).Spec.Replicas = ptrTo[int32](7) },
			func(o client.Object) error {
				if n := *o.(*appsv1.Deployment).Spec.Replicas; n != 2 {
					return fmt.Errorf("replicas %d", n)
				}
				return nil
			}},
		{"service target port edited", &corev1.Service{}, cc.Name,
			func(o client.Object) { o.(*corev1.Service).Spec.Ports[0].TargetPort = intstr.FromInt32(9999) },
			func(o client.Object) error {
				if p := o.(*corev1.Service).Spec.Ports[0].TargetPort; p != intstr.FromString("http") {
					return fmt.Errorf("target port %v", p.String())
				}
				return nil
			}},
		{"service selector edited", &corev1.Service{}, cc.Name,
			func(o client.Object) { o.(*corev1.Service).Spec.Selector[specs.LabelInstance] = "someone-else" },
			func(o client.Object) error {
				if v := o.(*corev1.Service).Spec.Selector[specs.LabelInstance]; v != cc.Name {
					return fmt.Errorf("selector instance %q", v)
				}
				return nil
			}},
		{"redis fsync edited", &appsv1.StatefulSet{}, cc.Name + "-redis",
			func(o client.Object) {
				args := o.(*appsv1.StatefulSet).Spec.Template.Spec.Containers[0].Args
				args[slices.Index(args, "everysec")] = "no"
			},
			func(o client.Object) error {
				if !slices.Contains(o.(*appsv1.StatefulSet).Spec.Template.Spec.Containers[0].Args, "everysec") {
					return errors.New("appendfsync not restored")
				}
				return nil
			}},
	}
	for _, tc := range edits {
		t.Run(tc.name, func(t *testing.T) {
			eventually(t, "edit", func(ctx context.Context) error {
				if err := get(ctx, ns, tc.objNm, tc.obj); err != nil {
					return err
				}
				tc.edit(tc.obj)
				// A different field manager, as kubectl edit would be.
				return shared.client.Update(ctx, tc.obj, client.FieldOwner("kubectl-edit"))
			})
			eventually(t, "edit reverted", func(ctx context.Context) error {
				if err := get(ctx, ns, tc.objNm, tc.obj); err != nil {
					return err
				}
				return tc.check(tc.obj)
			})
		})
	}
}

func TestDefaultsAreApplied(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	// The smallest CollabCluster: an empty spec.
	cc := &collabv1.CollabCluster{ObjectMeta: metav1.ObjectMeta{Name: "minimal", Namespace: ns}}
	if err := shared.client.Create(ctx, cc); err != nil {
		t.Fatalf("create minimal CollabCluster: %v", err)
	}
	if err := get(ctx, ns, cc.Name, cc); err != nil {
		t.Fatal(err)
	}
	s := cc.Spec
	checks := []struct {
		field     string
		got, want any
	}{
		{"runtime.replicas", ptrDeref(s.Runtime.Replicas), int32(2)},
		{"runtime.auth.mode", s.Runtime.Auth.Mode, collabv1.AuthModeJWT},
		{"runtime.flush.interval", s.Runtime.Flush.Interval.Duration.String(), "500ms"},
		{"runtime.flush.batchSize", ptrDeref(s.Runtime.Flush.BatchSize), int32(500)},
		{"runtime.terminationGracePeriodSeconds", ptrDeref(s.Runtime.TerminationGracePeriodSeconds), int64(60)},
		{"redis.managed present", s.Redis != nil && s.Redis.Managed != nil, true},
		{"postgres.managed present", s.Postgres != nil && s.Postgres.Managed != nil, true},
		{"ingress.enabled", s.Ingress.Enabled, false},
		{"ingress.sessionAffinity.mode", s.Ingress.SessionAffinity.Mode, collabv1.SessionAffinityCookie},
		{"ingress.proxyTimeoutSeconds", s.Ingress.ProxyTimeoutSeconds, int32(3600)},
		{"storageRetentionPolicy", s.StorageRetentionPolicy, collabv1.StorageRetain},
	}
	if s.Redis != nil && s.Redis.Managed != nil {
		checks = append(checks,
			struct {
				field     string
				got, want any
			}{"redis.managed.image", s.Redis.Managed.Image, "redis:7.0"},
			struct {
				field     string
				got, want any
			}{"redis.managed.appendFsync", s.Redis.Managed.AppendFsync, collabv1.AppendFsync("everysec")},
			struct {
				field     string
				got, want any
			}{"redis.managed.storage.size", s.Redis.Managed.Storage.Size, "1Gi"})
	}
	if s.Postgres != nil && s.Postgres.Managed != nil {
		checks = append(checks, struct {
			field     string
			got, want any
		}{"postgres.managed.image", s.Postgres.Managed.Image, "postgres:15"})
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("spec.%s defaulted to %v, want %v", c.field, c.got, c.want)
		}
	}
}

func ptrDeref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// writesIn counts the operator's write requests in namespace ns so far.
// waitForNoWrites waits until the operator has written nothing in ns for
// two seconds, and returns how many writes it made there.
func waitForNoWrites(t *testing.T, ns string) int {
	t.Helper()
	last, quietSince := writesIn(ns), time.Now()
	eventually(t, "writes to stop", func(context.Context) error {
		if n := writesIn(ns); n != last {
			last, quietSince = n, time.Now()
		}
		if time.Since(quietSince) < 2*time.Second {
			return fmt.Errorf("%d writes so far, the last %s ago", last, time.Since(quietSince))
		}
		return nil
	})
	return last
}

func writesIn(ns string) int {
	return apicount.Sum(shared.requests.Snapshot(), func(r apicount.Request) bool {
		return r.Write() && r.Namespace == ns
	})
}

// requestsFor counts the operator's requests so far that a reconcile of
// a CollabCluster in namespace ns may make: those in ns and the
// cluster-scoped ones (IngressClasses, CRDs). Watches are left out: an
// informer restarts its watch on a timer of its own, whatever reconciles.
func requestsFor(ns string) map[apicount.Request]int {
	out := map[apicount.Request]int{}
	for r, c := range shared.requests.Snapshot() {
		if r.Verb != "watch" && (r.Namespace == ns || r.Namespace == "") {
			out[r] = c
		}
	}
	return out
}

// newRequests lists the requests of after not in before, with their counts.
func newRequests(before, after map[apicount.Request]int) []string {
	var out []string
	for r, c := range after {
		if d := c - before[r]; d > 0 {
			out = append(out, fmt.Sprintf("%s %s/%s/%s (namespace %q) %d", r.Verb, r.Group, r.Resource, r.Subresource, r.Namespace, d))
		}
	}
	slices.Sort(out)
	return out
}

// statusPhaseRuns is how many reconciles reached the status phase, in
// every namespace.
func statusPhaseRuns(t *testing.T) uint64 {
	return histogramCount(gather(t)["tandem_operator_reconcile_phase_seconds"], map[string]string{"phase": "status"})
}

// A converged CollabCluster costs no request when it is reconciled again (a
// resync, an operator restart, an unrelated event): every child is compared
// with the cache before it is applied, the status is patched only when it
// changes, and what a reconcile reads (the IngressClass the sample's
// spec.ingress.controller auto names, the generated Secrets) comes from
// the cache. A child that drifted is still written.
func TestResyncMakesNoWrites(t *testing.T) {
	ns := namespace(t)
	cc := createSample(t, managedSample, ns, nil)
	markStatefulSetReady(t, ns, cc.Name+"-postgres")
	markStatefulSetReady(t, ns, cc.Name+"-redis")
	markDeploymentReady(t, ns, cc.Name+"-runtime")
	wantCondition(t, ns, cc.Name, collabv1.ConditionReady, metav1.ConditionTrue, "AllComponentsReady")

	// Converged: no write for two seconds.
	last := waitForNoWrites(t, ns)

	requestsBefore := requestsFor(ns)
	for i := range 3 {
		runs := statusPhaseRuns(t)
		// A metadata change reconciles the CollabCluster without changing
		// its spec, as a resync does.
		eventually(t, "annotate", func(ctx context.Context) error {
			got := &collabv1.CollabCluster{}
			if err := get(ctx, ns, cc.Name, got); err != nil {
				return err
			}
			if got.Annotations == nil {
				got.Annotations = map[string]string{}
			}
			got.Annotations["test.tandem.dev/resync"] = fmt.Sprint(i)
			return shared.client.Update(ctx, got)
		})
		eventually(t, "a reconcile", func(context.Context) error {
			if statusPhaseRuns(t) == runs {
				return errors.New("no reconcile yet")
			}
			return nil
		})
	}
	time.Sleep(time.Second)
	if n := writesIn(ns); n != last {
		var writes []string
		for r, c := range shared.requests.Snapshot() {
			if r.Write() && r.Namespace == ns {
				writes = append(writes, fmt.Sprintf("%s %s/%s %d", r.Verb, r.Resource, r.Subresource, c))
			}
		}
		t.Fatalf("reconciling a converged CollabCluster made %d writes; all writes in the namespace: %v", n-last, writes)
	}
	// The annotations are the test's own writes, on its own client.
	if reqs := newRequests(requestsBefore, requestsFor(ns)); len(reqs) > 0 {
		t.Fatalf("reconciling a converged CollabCluster three times made requests: %v", reqs)
	}

	// Drift is still corrected: the one child edited is applied again.
	eventually(t, "edit the runtime image", func(ctx context.Context) error {
		dep := &appsv1.Deployment{}
		if err := get(ctx, ns, cc.Name+"-runtime", dep); err != nil {
			return err
		}
		dep.Spec.Template.Spec.Containers[0].Image = "evil:latest"
		return shared.client.Update(ctx, dep, client.FieldOwner("kubectl-edit"))
	})
	eventually(t, "the image to be restored", func(ctx context.Context) error {
		dep := &appsv1.Deployment{}
		if err := get(ctx, ns, cc.Name+"-runtime", dep); err != nil {
			return err
		}
		if img := dep.Spec.Template.Spec.Containers[0].Image; img != operatorImage {
			return fmt.Errorf("image %s", img)
		}
		return nil
	})
	if n := writesIn(ns); n <= last {
		t.Errorf("restoring the image counted no write (%d before, %d after)", last, n)
	}
}
