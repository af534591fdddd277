// Package controllers reconciles CollabClusters into running Tandem clusters.
package controllers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
	"github.com/tandem-dev/tandem/internal/specs"
)

// secretIndex indexes CollabClusters by the names of the user Secrets they
// reference, so a Secret event finds its CollabClusters without a scan.
const secretIndex = "spec.secretNames"

// degradedRequeue re-checks a CollabCluster blocked on something a person
// must fix; watches normally notice the fix first.
const degradedRequeue = time.Minute

// CollabClusterReconciler turns a CollabCluster into its children.
type CollabClusterReconciler struct {
	client.Client
	// APIReader reads around the cache. It is consulted before generating
	// a Secret, because a Secret created a moment ago may not be in the
	// cache yet and must not be generated twice. Optional.
	APIReader client.Reader
	// Recorder emits events about the CollabCluster.
	Recorder events.EventRecorder
	// OperatorImage is the operator's own image (RUNTIME_IMAGE), the
	// runtime image unless spec.runtime.image overrides it.
	OperatorImage string
	// Workers is how many CollabClusters are reconciled at once; 0 means
	// DefaultWorkers.
	Workers int
	// Metrics records phase durations, errors and each CollabCluster's
	// phase; nil records nothing.
	Metrics *Metrics
	// Namespaces are the watched namespaces, as in CacheOptions; empty
	// means all.
	Namespaces []string

	// optional starts the watches on CloudNativePG and Gateway API kinds
	// once their CRDs exist; set by SetupWithManager.
	optional *optionalWatches
	// crdsCached says the manager watches CRD metadata (not a namespaced
	// install), so whether a CRD exists is read from the cache.
	crdsCached bool
	// statusWrites holds back a reconcile until the cache has the
	// CollabCluster's last status write; set by SetupWithManager.
	statusWrites *statusWrites
	// ingressClassesCached says the manager watches IngressClasses (not a
	// namespaced install), so they are read from the cache.
	ingressClassesCached bool
}

// DefaultWorkers is the default number of concurrent reconciles. A
// reconcile spends its time waiting for the apiserver, not computing, so
// many workers keep one slow CollabCluster (or a burst of new ones) from
// holding up the rest; the client's rate limit, not the worker count,
// bounds the load on the apiserver. With 100 new CollabClusters on kwok
// (internal/opbench), 16 workers created every child in 50 s where 4 took
// 78 s, and halved how long a CollabCluster waited after its pods were
// Ready (p50 5 s, max 27 s, against 10 s and 63 s).
const DefaultWorkers = 16

// degradedError is a problem a person must fix in the spec or the cluster
// (a missing Secret, no runtime image). It sets Degraded with Reason and
// is not retried with backoff.
type degradedError struct {
	Reason  string
	Message string
}

func (e *degradedError) Error() string { return e.Message }

// state is what the phases learn on the way and the status phase reports.
type state struct {
	cc *collabv1.CollabCluster
	// secretValues holds the bytes of every Secret key the runtime reads.
	secretValues map[string][]byte
	// created holds the Secrets generated in this reconcile, by name.
	created map[string]*corev1.Secret
	// applied holds the Deployment and StatefulSets this reconcile applied
	// that were not in the cache, by name: the status reports them as
	// rolling out, as the next reconcile will find them, and not as
	// missing, which would cost a status write more per new CollabCluster.
	applied map[string]bool
	// ingressController is the controller the Ingress is rendered for.
	ingressController collabv1.IngressController
	// httpRoute is what the installed HTTPRoute CRD supports.
	httpRoute specs.HTTPRouteFeatures
	// affinity is the SessionAffinity condition; nil when the runtime is
	// not exposed (or the exposure phase did not run).
	affinity *metav1.Condition
	// routeAccepted is the RouteAccepted condition, from the HTTPRoute's
	// status.parents; nil without spec.gateway (or when the httproute
	// phase did not run).
	routeAccepted *metav1.Condition
	// monitoring is the MonitoringReady condition; nil when spec.monitoring
	// is off (or the monitoring phase did not run).
	monitoring *metav1.Condition
}

type phase struct {
	name string
	run  func(context.Context, *state) error
}

// +kubebuilder:rbac:groups=collab.tandem.dev,resources=collabclusters,verbs=get;list;watch
// +kubebuilder:rbac:groups=collab.tandem.dev,resources=collabclusters/status,verbs=get;update;patch
// The owner references set blockOwnerDeletion, which the
// OwnerReferencesPermissionEnforcement admission plugin (OpenShift, hardened
// clusters) allows only to a client that may update the owner's finalizers.
// +kubebuilder:rbac:groups=collab.tandem.dev,resources=collabclusters/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;configmaps;secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=ingresses;networkpolicies,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete

// Reconcile runs the phases in order and always finishes with the status.
func (r *CollabClusterReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	cc := &collabv1.CollabCluster{}
	if err := r.Get(ctx, req.NamespacedName, cc); err != nil {
		if apierrors.IsNotFound(err) {
			r.Metrics.forget(req.Namespace, req.Name)
			r.statusWrites.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if r.statusWrites.behind(req.NamespacedName, cc.ResourceVersion, time.Now()) {
		// The watch event of the last status write brings it back; the
		// requeue is for an event that never comes.
		log.FromContext(ctx).V(1).Info("the cache does not have the last status write yet")
		return ctrl.Result{RequeueAfter: statusCacheWait}, nil
	}
	if !cc.DeletionTimestamp.IsZero() {
		// Owner references let the garbage collector remove the children.
		return ctrl.Result{}, nil
	}

	st := &state{cc: cc, secretValues: map[string][]byte{}, created: map[string]*corev1.Secret{},
		applied: map[string]bool{}}
	phases := []phase{
		{"credentials", r.credentials},
		{"postgres", r.postgres},
		{"cloudnativepg", r.cloudNativePG},
		{"redis", r.redis},
		{"runtime config", r.runtimeConfig},
		{"runtime deployment", r.deployment},
		{"exposure", r.exposure},
		{"runtime service", r.service},
		{"ingress", r.ingress},
		{"httproute", r.httpRoute},
		{"pod disruption budget", r.pdb},
		{"network policy", r.networkPolicies},
		{"monitoring", r.monitoring},
	}
	var phaseErr error
	for _, p := range phases {
		start := time.Now()
		err := p.run(ctx, st)
		r.Metrics.observePhase(p.name, time.Since(start), err)
		if err != nil {
			phaseErr = fmt.Errorf("%s: %w", p.name, err)
			break
		}
	}

	start := time.Now()
	err := r.updateStatus(ctx, st, phaseErr)
	r.Metrics.observePhase("status", time.Since(start), err)
	if err != nil {
		return ctrl.Result{}, errors.Join(phaseErr, err)
	}
	r.Metrics.setPhase(cc.Namespace, cc.Name, cc.Status.Phase)
	var degraded *degradedError
	if errors.As(phaseErr, &degraded) {
		return ctrl.Result{RequeueAfter: degradedRequeue}, nil
	}
	return ctrl.Result{}, phaseErr
}

// credentials generates the managed stores' passwords and the JWT key once.
// An existing Secret is never regenerated, so a restart or a spec change
// cannot rotate a password the stored data depends on.
func (r *CollabClusterReconciler) credentials(ctx context.Context, st *state) error {
	cc := specs.WithDefaults(st.cc)
	if cc.Spec.Redis.Managed != nil {
		if err := r.ensureSecret(ctx, st, specs.RedisSecretName(cc), specs.KeyPassword,
			func(p string) *corev1.Secret { return specs.RedisAuthSecret(cc, p) }); err != nil {
			return err
		}
	}
	if cc.Spec.Postgres.Managed != nil {
		if err := r.ensureSecret(ctx, st, specs.PostgresSecretName(cc), specs.KeyPassword,
			func(p string) *corev1.Secret { return specs.PostgresAuthSecret(cc, p) }); err != nil {
			return err
		}
	}
	if cc.Spec.Runtime.Auth.Mode == collabv1.AuthModeJWT && cc.Spec.Runtime.Auth.SecretRef == nil {
		if err := r.ensureSecret(ctx, st, specs.JWTSecretName(cc), specs.KeyJWT,
			func(k string) *corev1.Secret { return specs.JWTSecret(cc, k) }); err != nil {
			return err
		}
	}
	if len(st.created) > 0 {
		// One event for all of them: the events API folds events with the
		// same reason into a series that keeps only the first note.
		names := slices.Sorted(maps.Keys(st.created))
		r.Recorder.Eventf(st.cc, nil, corev1.EventTypeNormal, "SecretGenerated", "GenerateCredentials",
			"generated Secrets %s", strings.Join(names, ", "))
	}
	return nil
}

// ensureSecret creates a generated Secret if it does not exist. If it
// exists, the generated value under key is kept and only the derived keys
// (the URL built from the password) are brought back in line.
func (r *CollabClusterReconciler) ensureSecret(ctx context.Context, st *state, name, key string,
	build func(value string) *corev1.Secret) error {
	cc := st.cc
	existing := &corev1.Secret{}
	objKey := client.ObjectKey{Namespace: cc.Namespace, Name: name}
	err := r.Get(ctx, objKey, existing)
	switch {
	case apierrors.IsNotFound(err):
		// Not in the cache: create it. A Secret that exists all the same
		// (created a moment ago and not cached yet, or not labelled by
		// the operator) makes the create fail, and is then read around
		// the cache; creating first spares a read per Secret on every
		// new CollabCluster.
		value, err := randomHex(32)
		if err != nil {
			return err
		}
		created := build(value)
		err = r.Create(ctx, created, client.FieldOwner(specs.FieldManager))
		if err == nil {
			// Later phases read Secrets through the cache, which may
			// not have this one yet.
			st.created[name] = created
			return nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create Secret %s: %w", name, err)
		}
		reader := client.Reader(r.Client)
		if r.APIReader != nil {
			reader = r.APIReader
		}
		if err := reader.Get(ctx, objKey, existing); err != nil {
			return fmt.Errorf("get Secret %s: %w", name, err)
		}
	case err != nil:
		return fmt.Errorf("get Secret %s: %w", name, err)
	}
	value, ok := existing.Data[key]
	if !ok || len(value) == 0 {
		return &degradedError{Reason: "GeneratedSecretInvalid", Message: fmt.Sprintf(
			"Secret %s has no %q key; the operator will not replace it because stored data may depend on it: restore the key or delete the Secret to generate a new one",
			name, key)}
	}
	if !isControlledBy(existing, cc) {
		return &degradedError{Reason: "SecretNotOwned", Message: fmt.Sprintf(
			"Secret %s exists but is not owned by this CollabCluster: delete it or rename the CollabCluster", name)}
	}
	want := build(string(value))
	changed := false
	for k, v := range want.Data {
		if string(existing.Data[k]) != string(v) {
			existing.Data[k] = v
			changed = true
		}
	}
	if changed {
		if err := r.Update(ctx, existing, client.FieldOwner(specs.FieldManager)); err != nil {
			return fmt.Errorf("update Secret %s: %w", name, err)
		}
	}
	return nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate random bytes: %w", err)
	}
	return hex.EncodeToString(b), nil
}

func (r *CollabClusterReconciler) postgres(ctx context.Context, st *state) error {
	sts, err := specs.PostgresStatefulSet(st.cc)
	if err != nil {
		return err
	}
	return r.store(ctx, st, specs.ComponentPostgres, specs.PostgresName(st.cc), sts)
}

func (r *CollabClusterReconciler) redis(ctx context.Context, st *state) error {
	sts, err := specs.RedisStatefulSet(st.cc)
	if err != nil {
		return err
	}
	return r.store(ctx, st, specs.ComponentRedis, specs.RedisName(st.cc), sts)
}

// store applies a managed store's Service and StatefulSet, or removes them
// when the store became external.
func (r *CollabClusterReconciler) store(ctx context.Context, st *state, component, name string,
	sts *appsv1.StatefulSet) error {
	cc := st.cc
	if sts == nil {
		for _, obj := range []client.Object{
			&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: name}},
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}},
		} {
			if _, err := deleteIfOwned(ctx, r.Client, cc, obj); err != nil {
				return err
			}
		}
		return nil
	}
	if err := apply(ctx, r.Client, specs.StoreService(cc, component)); err != nil {
		return err
	}
	created, err := applyChild(ctx, r.Client, sts)
	st.applied[sts.Name] = created
	return err
}

// runtimeConfig applies the runtime ConfigMap and reads every Secret key
// the runtime mounts; their contents feed the pod template hash.
func (r *CollabClusterReconciler) runtimeConfig(ctx context.Context, st *state) error {
	for _, use := range specs.RuntimeSecrets(st.cc) {
		if created, ok := st.created[use.Ref.Name]; ok {
			st.secretValues[specs.SecretValueKey(use.Ref)] = created.Data[use.Ref.Key]
			continue
		}
		value, err := r.secretValue(ctx, st.cc.Namespace, use)
		if isCNPGAppSecret(st.cc, use, err) {
			// CloudNativePG creates it once the Cluster bootstraps; the
			// Secret's creation brings the CollabCluster back, and
			// PostgresReady says what is awaited meanwhile.
			continue
		}
		if err != nil {
			return err
		}
		st.secretValues[specs.SecretValueKey(use.Ref)] = value
	}
	return apply(ctx, r.Client, specs.RuntimeConfigMap(st.cc))
}

func (r *CollabClusterReconciler) secretValue(ctx context.Context, namespace string, use specs.SecretUse) ([]byte, error) {
	field := use.Field
	if field == "" {
		field = "the operator"
	}
	s, err := r.readSecret(ctx, namespace, use.Ref.Name, use.Field != "")
	if apierrors.IsNotFound(err) {
		return nil, &degradedError{Reason: "SecretMissing", Message: fmt.Sprintf(
			"Secret %q (named by %s) not found in namespace %q: create it", use.Ref.Name, field, namespace)}
	}
	if err != nil {
		return nil, err
	}
	v, ok := s.Data[use.Ref.Key]
	if !ok || len(v) == 0 {
		return nil, &degradedError{Reason: "SecretKeyMissing", Message: fmt.Sprintf(
			"Secret %q (named by %s) has no key %q: add the key or fix the reference", use.Ref.Name, field, use.Ref.Key)}
	}
	return v, nil
}

// readSecret reads a Secret. The cache holds only the Secrets the operator
// generated (they carry its managed-by label); a Secret a person or another
// operator made (an external store's URL, a TLS Secret, CloudNativePG's
// application Secret) is read around the cache, so the operator never
// caches the cluster's other Secrets.
func (r *CollabClusterReconciler) readSecret(ctx context.Context, namespace, name string, foreign bool) (*corev1.Secret, error) {
	reader := client.Reader(r.Client)
	if foreign && r.APIReader != nil {
		reader = r.APIReader
	}
	s := &corev1.Secret{}
	if err := reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, err
		}
		return nil, fmt.Errorf("get Secret %s: %w", name, err)
	}
	return s, nil
}

func (r *CollabClusterReconciler) deployment(ctx context.Context, st *state) error {
	image, err := specs.RuntimeImage(st.cc, r.OperatorImage)
	if err != nil {
		return &degradedError{Reason: "NoRuntimeImage", Message: err.Error()}
	}
	hash := specs.RuntimeConfigHash(st.cc, st.secretValues)
	dep := specs.RuntimeDeployment(st.cc, image, hash)
	// The replicas it had, from the cache, to tell a person it scaled.
	old := &appsv1.Deployment{}
	err = r.Get(ctx, client.ObjectKeyFromObject(dep), old)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("get Deployment %s: %w", dep.Name, err)
	}
	created, err := applyChild(ctx, r.Client, dep)
	st.applied[dep.Name] = created
	if err != nil {
		return err
	}
	if from, to := old.Spec.Replicas, dep.Spec.Replicas; from != nil && to != nil && *from != *to {
		unit := "replicas"
		if *to == 1 {
			unit = "replica"
		}
		// Two reasons, not one: the events API folds events with the same
		// reason into one series that keeps only the first note.
		reason := "ScaledUp"
		if *to < *from {
			reason = "ScaledDown"
		}
		r.Recorder.Eventf(st.cc, nil, corev1.EventTypeNormal, reason, "Scale",
			"runtime scaled from %d to %d %s", *from, *to, unit)
	}
	return nil
}

func (r *CollabClusterReconciler) service(ctx context.Context, st *state) error {
	svc := specs.RuntimeService(st.cc, st.ingressController)
	return apply(ctx, r.Client, svc)
}

func (r *CollabClusterReconciler) ingress(ctx context.Context, st *state) error {
	if ing := specs.RuntimeIngress(st.cc, st.ingressController); ing != nil {
		return apply(ctx, r.Client, ing)
	}
	_, err := deleteIfOwned(ctx, r.Client, st.cc,
		&networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: specs.IngressName(st.cc)}})
	return err
}

func (r *CollabClusterReconciler) pdb(ctx context.Context, st *state) error {
	if pdb := specs.RuntimePDB(st.cc); pdb != nil {
		return apply(ctx, r.Client, pdb)
	}
	deleted, err := deleteIfOwned(ctx, r.Client, st.cc,
		&policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: specs.PDBName(st.cc)}})
	if deleted {
		r.Recorder.Eventf(st.cc, nil, corev1.EventTypeNormal, "PodDisruptionBudgetDeleted", "Scale",
			"deleted PodDisruptionBudget %s: one runtime replica or fewer", specs.PDBName(st.cc))
	}
	return err
}

func (r *CollabClusterReconciler) networkPolicies(ctx context.Context, st *state) error {
	cc := specs.WithDefaults(st.cc)
	for _, s := range []struct {
		component string
		managed   bool
	}{
		{specs.ComponentPostgres, cc.Spec.Postgres.Managed != nil},
		{specs.ComponentRedis, cc.Spec.Redis.Managed != nil},
	} {
		np := specs.StoreNetworkPolicy(st.cc, s.component)
		if s.managed {
			if err := apply(ctx, r.Client, np); err != nil {
				return err
			}
			continue
		}
		if _, err := deleteIfOwned(ctx, r.Client, st.cc, &networkingv1.NetworkPolicy{ObjectMeta: np.ObjectMeta}); err != nil {
			return err
		}
	}
	return nil
}

// SetupWithManager registers the controller: the CollabCluster, everything
// it owns, and the Secrets it references.
func (r *CollabClusterReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &collabv1.CollabCluster{}, secretIndex,
		func(obj client.Object) []string {
			return specs.ReferencedSecretNames(obj.(*collabv1.CollabCluster))
		}); err != nil {
		return fmt.Errorf("index CollabClusters by Secret: %w", err)
	}
	r.statusWrites = newStatusWrites()
	workers := r.Workers
	if workers <= 0 {
		workers = DefaultWorkers
	}
	secrets, err := newSecretMetadataCache(mgr, r.Namespaces)
	if err != nil {
		return err
	}
	b := ctrl.NewControllerManagedBy(mgr).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		For(&collabv1.CollabCluster{}).
		Owns(&appsv1.Deployment{}).
		Owns(&appsv1.StatefulSet{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&networkingv1.Ingress{}).
		Owns(&networkingv1.NetworkPolicy{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		// The generated Secrets are read from the cache, so their events
		// must come from the same informer: an event from the metadata
		// watch below may arrive before this cache has the new data.
		Owns(&corev1.Secret{}).
		// The referenced Secrets carry no label of ours and are read
		// around the cache: a watch on every Secret's metadata, in a cache
		// of its own, maps them to their CollabClusters by index.
		WatchesRawSource(source.Kind(secrets, secretMetadata(),
			handler.TypedEnqueueRequestsFromMapFunc(func(ctx context.Context, s *metav1.PartialObjectMetadata) []reconcile.Request {
				return r.clustersForSecret(ctx, s)
			})))
	watchCRDs, err := mayWatch(ctx, mgr.GetClient(), crdGVK.Group, "customresourcedefinitions")
	if err != nil {
		return err
	}
	r.crdsCached = watchCRDs
	if watchCRDs {
		// Metadata only: CRD objects are large, and their schema is read
		// around the cache when needed.
		b = b.Watches(&metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{
			APIVersion: crdGVK.GroupVersion().String(), Kind: crdGVK.Kind}},
			handler.EnqueueRequestsFromMapFunc(r.clustersForCRD))
	} else {
		log.FromContext(ctx).Info("may not watch CustomResourceDefinitions (namespaced install): a CloudNativePG or Gateway API CRD installed later is noticed at the next reconcile")
	}
	watchClasses, err := mayWatch(ctx, mgr.GetClient(), networkingv1.GroupName, "ingressclasses")
	if err != nil {
		return err
	}
	r.ingressClassesCached = watchClasses
	if watchClasses {
		b = b.Watches(&networkingv1.IngressClass{}, handler.EnqueueRequestsFromMapFunc(r.clustersForIngressClass))
	} else {
		log.FromContext(ctx).Info("may not watch IngressClasses (namespaced install): spec.ingress.controller auto reads them around the cache, if allowed at all")
	}
	c, err := b.Named("collabcluster").Build(r)
	if err != nil {
		return err
	}
	r.optional = &optionalWatches{
		ctrl:  c,
		cache: mgr.GetCache(),
		owner: handler.EnqueueRequestForOwner(mgr.GetScheme(), mgr.GetRESTMapper(),
			&collabv1.CollabCluster{}, handler.OnlyControllerOwner()),
		started: map[schema.GroupVersionKind]bool{},
	}
	return nil
}

func (r *CollabClusterReconciler) clustersForSecret(ctx context.Context, obj client.Object) []reconcile.Request {
	var reqs []reconcile.Request
	if ref := metav1.GetControllerOf(obj); ref != nil && ref.Kind == "CollabCluster" &&
		ref.APIVersion == collabv1.GroupVersion.String() {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKey{Namespace: obj.GetNamespace(), Name: ref.Name}})
	}
	list := &collabv1.CollabClusterList{}
	if err := r.List(ctx, list, client.InNamespace(obj.GetNamespace()),
		client.MatchingFields{secretIndex: obj.GetName()}); err != nil {
		log.FromContext(ctx).Error(err, "list CollabClusters referencing Secret", "secret", obj.GetName())
		return reqs
	}
	for _, cc := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&cc)})
	}
	return reqs
}
