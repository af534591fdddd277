package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	authorizationv1 "k8s.io/api/authorization/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
	"github.com/tandem-dev/tandem/internal/specs"
)

// Kinds from other projects (CloudNativePG, Gateway API) are optional: the
// operator starts without their CRDs, refuses a spec that needs a missing
// one with a Degraded condition, and starts watching a kind the first time
// a CollabCluster uses it after its CRD appeared. A watch on the CRDs'
// metadata brings the CollabClusters back when one is installed or changed.

// +kubebuilder:rbac:groups=apiextensions.k8s.io,resources=customresourcedefinitions,verbs=get;list;watch
// +kubebuilder:rbac:groups=networking.k8s.io,resources=ingressclasses,verbs=get;list;watch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=httproutes,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=postgresql.cnpg.io,resources=clusters,verbs=get;list;watch;create;update;patch;delete

// crdGVK is the CustomResourceDefinition kind, read as metadata or unstructured
// so that the operator needs no apiextensions Go types in its scheme.
var crdGVK = schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"}

// optionalCRDs are the CRDs whose appearance re-reconciles CollabClusters.
var optionalCRDs = map[string]bool{specs.HTTPRouteCRDName: true, specs.CNPGClusterCRDName: true,
	specs.PodMonitorCRDName: true, specs.PrometheusRuleCRDName: true}

// optionalWatches starts a watch on an optional kind once, after its CRD exists.
type optionalWatches struct {
	ctrl  controller.Controller
	cache cache.Cache
	owner handler.EventHandler

	mu      sync.Mutex
	started map[schema.GroupVersionKind]bool
}

func (w *optionalWatches) ensure(gvk schema.GroupVersionKind) error {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started[gvk] {
		return nil
	}
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(gvk)
	if err := w.ctrl.Watch(source.Kind[client.Object](w.cache, obj, w.owner)); err != nil {
		return fmt.Errorf("watch %s: %w", gvk.Kind, err)
	}
	w.started[gvk] = true
	return nil
}

// errCRDsForbidden means the operator may not read CustomResourceDefinitions:
// a namespaced install (the chart's watchNamespaces) has no cluster-wide
// rules. Presence then comes from discovery, which every client may read.
var errCRDsForbidden = errors.New("the operator may not read CustomResourceDefinitions")

// crd reads a CustomResourceDefinition around the cache; nil when it is
// not installed or not yet established.
func (r *CollabClusterReconciler) crd(ctx context.Context, name string) (*unstructured.Unstructured, error) {
	reader := client.Reader(r.Client)
	if r.APIReader != nil {
		reader = r.APIReader
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(crdGVK)
	if err := reader.Get(ctx, client.ObjectKey{Name: name}, u); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		if apierrors.IsForbidden(err) {
			return nil, errCRDsForbidden
		}
		return nil, fmt.Errorf("get CustomResourceDefinition %s: %w", name, err)
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
			return u, nil
		}
	}
	return nil, nil
}

// servedSchema returns the openAPIV3Schema of a served version of a CRD.
func servedSchema(crd *unstructured.Unstructured, version string) map[string]any {
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	for _, v := range versions {
		m, ok := v.(map[string]any)
		if !ok || m["name"] != version || m["served"] != true {
			continue
		}
		s, _, _ := unstructured.NestedMap(m, "schema", "openAPIV3Schema")
		return s
	}
	return nil
}

// served asks discovery whether the API server serves gvk; used when the
// CRD itself may not be read.
func (r *CollabClusterReconciler) served(gvk schema.GroupVersionKind) (bool, error) {
	_, err := r.Client.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discover %s: %w", gvk, err)
	}
	return true, nil
}

// optionalKindServed says whether gvk's CRD is installed, established and
// serves gvk's version: from the CRD, or from discovery when the CRD may not
// be read.
func (r *CollabClusterReconciler) optionalKindServed(ctx context.Context, crdName string, gvk schema.GroupVersionKind) (bool, error) {
	crd, err := r.crd(ctx, crdName)
	if errors.Is(err, errCRDsForbidden) {
		return r.served(gvk)
	}
	if err != nil {
		return false, err
	}
	return crd != nil && servedSchema(crd, gvk.Version) != nil, nil
}

// httpRouteFeatures reads which optional rule fields the installed
// HTTPRoute CRD has; ok is false when HTTPRoute v1 is not served.
func httpRouteFeatures(crd *unstructured.Unstructured) (specs.HTTPRouteFeatures, bool) {
	s := servedSchema(crd, specs.HTTPRouteGVK.Version)
	if s == nil {
		return specs.HTTPRouteFeatures{}, false
	}
	rule, _, _ := unstructured.NestedMap(s, "properties", "spec", "properties", "rules", "items", "properties")
	_, timeouts := rule["timeouts"]
	_, persistence := rule["sessionPersistence"]
	return specs.HTTPRouteFeatures{Timeouts: timeouts, SessionPersistence: persistence}, true
}

// exposure resolves how the runtime is exposed before the Service, the
// Ingress and the HTTPRoute are built: the Ingress controller whose
// annotations to render and the HTTPRoute fields the cluster has. It
// records the SessionAffinity condition.
func (r *CollabClusterReconciler) exposure(ctx context.Context, st *state) error {
	cc := specs.WithDefaults(st.cc)
	st.affinity = nil
	if gw := cc.Spec.Gateway; gw != nil {
		crd, err := r.crd(ctx, specs.HTTPRouteCRDName)
		blind := errors.Is(err, errCRDsForbidden)
		if err != nil && !blind {
			return err
		}
		features, served := specs.HTTPRouteFeatures{}, false
		switch {
		case blind:
			// Without the schema: timeouts are in every HTTPRoute v1
			// release people still run; sessionPersistence may not be.
			if served, err = r.served(specs.HTTPRouteGVK); err != nil {
				return err
			}
			features.Timeouts = true
		case crd != nil:
			features, served = httpRouteFeatures(crd)
		}
		if !served {
			return &degradedError{Reason: "GatewayAPINotInstalled", Message: fmt.Sprintf(
				"spec.gateway needs the Gateway API: CustomResourceDefinition %s (serving %s) is not installed; install the Gateway API CRDs of your Gateway implementation, or use spec.ingress instead",
				specs.HTTPRouteCRDName, specs.HTTPRouteGVK.Version)}
		}
		if err := r.optional.ensure(specs.HTTPRouteGVK); err != nil {
			return err
		}
		st.httpRoute = features
		c := metav1.Condition{Type: collabv1.ConditionSessionAffinity}
		switch {
		case gw.SessionAffinity.Mode == collabv1.SessionAffinityNone:
			c.Status, c.Reason = metav1.ConditionFalse, "HTTPRouteAffinityDisabled"
			c.Message = "spec.gateway.sessionAffinity.mode is none: browsers reach any replica, which forwards their edits to the document's owner"
		case blind:
			c.Status, c.Reason = metav1.ConditionFalse, "HTTPRouteSchemaUnreadable"
			c.Message = fmt.Sprintf("the operator may not read CustomResourceDefinitions (a namespaced install), so it cannot tell whether %s has sessionPersistence: the HTTPRoute has no cookie affinity; editing still works with more forwarding to the document's owner", specs.HTTPRouteCRDName)
		case !features.SessionPersistence:
			c.Status, c.Reason = metav1.ConditionFalse, "HTTPRouteSessionPersistenceUnavailable"
			c.Message = fmt.Sprintf("the installed %s has no rules[].sessionPersistence (Gateway API experimental channel): the HTTPRoute has no cookie affinity, browsers reach any replica, editing still works with more forwarding to the document's owner", specs.HTTPRouteCRDName)
		default:
			c.Status, c.Reason = metav1.ConditionTrue, "HTTPRouteSessionPersistence"
			c.Message = fmt.Sprintf("HTTPRoute %s asks for cookie %s (sessionPersistence); the Gateway implementation must support it", specs.HTTPRouteName(cc), gw.SessionAffinity.CookieName)
		}
		st.affinity = &c
		return nil
	}
	if !cc.Spec.Ingress.Enabled {
		return nil
	}
	controllerKind, c, err := r.ingressController(ctx, cc)
	if err != nil {
		return err
	}
	st.ingressController = controllerKind
	st.affinity = &c
	return nil
}

// ingressController resolves spec.ingress.controller: an explicit one as
// given, auto from the IngressClass.
func (r *CollabClusterReconciler) ingressController(ctx context.Context, cc *collabv1.CollabCluster) (collabv1.IngressController, metav1.Condition, error) {
	ing := cc.Spec.Ingress
	c := metav1.Condition{Type: collabv1.ConditionSessionAffinity}
	kind := ing.Controller
	from := "spec.ingress.controller"
	if kind == collabv1.IngressControllerAuto {
		className, classController, err := r.ingressClass(ctx, ing.ClassName)
		if apierrors.IsForbidden(err) {
			c.Status, c.Reason = metav1.ConditionFalse, "UnknownIngressController"
			c.Message = "the operator may not read IngressClasses (a namespaced install): rendered ingress-nginx's annotations; set spec.ingress.controller"
			return collabv1.IngressControllerIngressNGINX, c, nil
		}
		if err != nil {
			return "", c, err
		}
		known := false
		kind, known = specs.IngressControllerFor(classController)
		if !known {
			what := fmt.Sprintf("IngressClass %s has controller %q", className, classController)
			switch {
			case className == "":
				what = "no IngressClass is named and none is marked default"
			case classController == "":
				what = fmt.Sprintf("IngressClass %s does not exist", className)
			}
			c.Status, c.Reason = metav1.ConditionFalse, "UnknownIngressController"
			c.Message = what + ": rendered ingress-nginx's annotations; set spec.ingress.controller to ingress-nginx, nginx-inc, traefik, haproxy or haproxy-ingress, or add your controller's annotations in spec.ingress.annotations"
			return collabv1.IngressControllerIngressNGINX, c, nil
		}
		from = fmt.Sprintf("IngressClass %s (%s)", className, classController)
	}
	switch {
	case ing.SessionAffinity.Mode == collabv1.SessionAffinityNone:
		c.Status, c.Reason = metav1.ConditionFalse, "Disabled"
		c.Message = "spec.ingress.sessionAffinity.mode is none: browsers reach any replica, which forwards their edits to the document's owner"
	case !specs.IngressSupportsAffinity(kind):
		c.Status, c.Reason = metav1.ConditionFalse, "NotSupported"
		c.Message = fmt.Sprintf("no cookie affinity for ingress controller %s", kind)
	default:
		c.Status, c.Reason = metav1.ConditionTrue, "CookieAffinity"
		c.Message = fmt.Sprintf("cookie %s rendered for ingress controller %s, from %s", ing.SessionAffinity.CookieName, kind, from)
		if kind == collabv1.IngressControllerNGINXInc {
			c.Message += "; NGINX Inc honours it with NGINX Plus only"
		}
	}
	return kind, c, nil
}

// ingressClass returns the class name and its spec.controller: the named
// class, else the one marked default. Empty controller: no such class.
// IngressClasses come from the cache, where the operator may watch them
// (they are cluster-scoped and few, and a reconcile must not cost a
// request for them); a namespaced install reads them around the cache,
// which its RBAC forbids unless a cluster admin granted it.
func (r *CollabClusterReconciler) ingressClass(ctx context.Context, name *string) (string, string, error) {
	reader := client.Reader(r.Client)
	if !r.ingressClassesCached && r.APIReader != nil {
		reader = r.APIReader
	}
	if name != nil && *name != "" {
		ic := &networkingv1.IngressClass{}
		err := reader.Get(ctx, client.ObjectKey{Name: *name}, ic)
		if apierrors.IsNotFound(err) {
			return *name, "", nil
		}
		if err != nil {
			return *name, "", err
		}
		return *name, ic.Spec.Controller, nil
	}
	list := &networkingv1.IngressClassList{}
	if err := reader.List(ctx, list); err != nil {
		return "", "", err
	}
	for _, ic := range list.Items {
		if ic.Annotations[networkingv1.AnnotationIsDefaultIngressClass] == "true" {
			return ic.Name, ic.Spec.Controller, nil
		}
	}
	return "", "", nil
}

// clustersForIngressClass brings back the CollabClusters whose Ingress
// controller is read from IngressClasses when one is created, changed or
// deleted: the one naming it, and those using the default class, which
// any class may have become or stopped being.
func (r *CollabClusterReconciler) clustersForIngressClass(ctx context.Context, obj client.Object) []reconcile.Request {
	list := &collabv1.CollabClusterList{}
	if err := r.List(ctx, list); err != nil {
		log.FromContext(ctx).Error(err, "list CollabClusters for an IngressClass change", "ingressClass", obj.GetName())
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		ing := specs.WithDefaults(&list.Items[i]).Spec.Ingress
		if !ing.Enabled || ing.Controller != collabv1.IngressControllerAuto {
			continue
		}
		if ing.ClassName == nil || *ing.ClassName == "" || *ing.ClassName == obj.GetName() {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return reqs
}

// httpRoute applies the HTTPRoute for spec.gateway, or removes the one
// this CollabCluster owns when spec.gateway is gone. Whether there may be
// one comes from the status: every SessionAffinity reason of an HTTPRoute
// starts with "HTTPRoute", so a cluster that never had one costs no
// request here.
func (r *CollabClusterReconciler) httpRoute(ctx context.Context, st *state) error {
	if route := specs.RuntimeHTTPRoute(st.cc, st.httpRoute); route != nil {
		if err := apply(ctx, r.Client, route); err != nil {
			return err
		}
		// The status comes from the cache: a Gateway controller's status
		// write is a watch event that brings the CollabCluster back here.
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(specs.HTTPRouteGVK)
		if err := r.Get(ctx, client.ObjectKeyFromObject(route), got); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("get HTTPRoute %s: %w", route.GetName(), err)
		}
		c := specs.HTTPRouteAcceptance(st.cc, got)
		st.routeAccepted = &c
		return nil
	}
	if c := meta.FindStatusCondition(st.cc.Status.Conditions, collabv1.ConditionSessionAffinity); c == nil ||
		!strings.HasPrefix(c.Reason, "HTTPRoute") {
		return nil
	}
	present, err := r.optionalKindServed(ctx, specs.HTTPRouteCRDName, specs.HTTPRouteGVK)
	if err != nil || !present {
		return err
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(specs.HTTPRouteGVK)
	u.SetName(specs.HTTPRouteName(st.cc))
	_, err = deleteIfOwned(ctx, r.Client, st.cc, u)
	return err
}

// cloudNativePG applies the CloudNativePG Cluster. Switching away from
// cloudNativePG leaves the Cluster alone: deleting it would delete its
// volumes, and the data in them is a person's to keep or drop.
func (r *CollabClusterReconciler) cloudNativePG(ctx context.Context, st *state) error {
	cluster, err := specs.CNPGCluster(st.cc)
	if err != nil || cluster == nil {
		return err
	}
	present, err := r.optionalKindServed(ctx, specs.CNPGClusterCRDName, specs.CNPGClusterGVK)
	if err != nil {
		return err
	}
	if !present {
		return &degradedError{Reason: "CloudNativePGNotInstalled", Message: fmt.Sprintf(
			"spec.postgres.cloudNativePG needs the CloudNativePG operator: CustomResourceDefinition %s (serving %s) is not installed; install CloudNativePG, or use spec.postgres.managed or external",
			specs.CNPGClusterCRDName, specs.CNPGClusterGVK.Version)}
	}
	if err := r.optional.ensure(specs.CNPGClusterGVK); err != nil {
		return err
	}
	return apply(ctx, r.Client, cluster)
}

// cnpgCondition reports PostgresReady from the CloudNativePG Cluster's
// Ready condition and the application Secret CloudNativePG generates.
func (r *CollabClusterReconciler) cnpgCondition(ctx context.Context, cc *collabv1.CollabCluster) (metav1.Condition, error) {
	c := metav1.Condition{Type: collabv1.ConditionPostgresReady, Status: metav1.ConditionFalse}
	name := specs.CNPGClusterName(cc)
	present, err := r.optionalKindServed(ctx, specs.CNPGClusterCRDName, specs.CNPGClusterGVK)
	if err != nil {
		return c, err
	}
	if !present {
		c.Reason, c.Message = "CloudNativePGNotInstalled", "the CloudNativePG CRDs are not installed"
		return c, nil
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(specs.CNPGClusterGVK)
	err = r.Get(ctx, client.ObjectKey{Namespace: cc.Namespace, Name: name}, u)
	if apierrors.IsNotFound(err) {
		c.Reason, c.Message = "ClusterMissing", fmt.Sprintf("CloudNativePG Cluster %s does not exist yet", name)
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("get CloudNativePG Cluster %s: %w", name, err)
	}
	instances, _, _ := unstructured.NestedInt64(u.Object, "spec", "instances")
	readyInstances, _, _ := unstructured.NestedInt64(u.Object, "status", "readyInstances")
	phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
	var ready *metav1.Condition
	if raw, ok, _ := unstructured.NestedSlice(u.Object, "status", "conditions"); ok {
		var conds []metav1.Condition
		for _, item := range raw {
			m, ok := item.(map[string]any)
			if !ok {
				continue
			}
			s, _ := m["status"].(string)
			t, _ := m["type"].(string)
			msg, _ := m["message"].(string)
			conds = append(conds, metav1.Condition{Type: t, Status: metav1.ConditionStatus(s), Message: msg})
		}
		ready = meta.FindStatusCondition(conds, "Ready")
	}
	if phase == "" {
		phase = "no phase reported yet"
	}
	counts := fmt.Sprintf("%d/%d instances ready", readyInstances, instances)
	if ready == nil || ready.Status != metav1.ConditionTrue {
		c.Reason = "ClusterNotReady"
		c.Message = fmt.Sprintf("CloudNativePG Cluster %s: %s, %s", name, counts, phase)
		return c, nil
	}
	secret := specs.CNPGAppSecretName(cc)
	s, err := r.readSecret(ctx, cc.Namespace, secret, true)
	switch {
	case apierrors.IsNotFound(err) || (err == nil && len(s.Data[specs.CNPGURIKey]) == 0):
		c.Reason = "AppSecretMissing"
		c.Message = fmt.Sprintf("CloudNativePG Cluster %s is ready but its Secret %s has no %q key yet", name, secret, specs.CNPGURIKey)
	case err != nil:
		return c, err
	default:
		c.Status, c.Reason = metav1.ConditionTrue, "CloudNativePGClusterReady"
		c.Message = fmt.Sprintf("CloudNativePG Cluster %s: %s; the runtime uses Service %s", name, counts, specs.CNPGRWServiceName(cc))
	}
	return c, nil
}

// isCNPGAppSecret says whether a missing Secret is CloudNativePG's to
// create: the runtime waits for it instead of the CollabCluster degrading.
func isCNPGAppSecret(cc *collabv1.CollabCluster, use specs.SecretUse, err error) bool {
	var d *degradedError
	return err != nil && errors.As(err, &d) && specs.WithDefaults(cc).Spec.Postgres.CloudNativePG != nil &&
		use.Ref.Name == specs.CNPGAppSecretName(cc)
}

// mayWatch asks the API server whether the operator may list and watch a
// cluster-scoped resource (CustomResourceDefinitions, IngressClasses): a
// namespaced install may not, and a watch it may not start would keep the
// manager from starting.
func mayWatch(ctx context.Context, c client.Client, group, resource string) (bool, error) {
	for _, verb := range []string{"list", "watch"} {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{Group: group, Resource: resource, Verb: verb},
		}}
		if err := c.Create(ctx, review); err != nil {
			return false, fmt.Errorf("review access to %s: %w", resource, err)
		}
		if !review.Status.Allowed {
			return false, nil
		}
	}
	return true, nil
}

// clustersForCRD brings back every CollabCluster when an optional CRD is
// created or changes (a new Gateway API channel adds sessionPersistence).
func (r *CollabClusterReconciler) clustersForCRD(ctx context.Context, obj client.Object) []reconcile.Request {
	if !optionalCRDs[obj.GetName()] {
		return nil
	}
	list := &collabv1.CollabClusterList{}
	if err := r.List(ctx, list); err != nil {
		log.FromContext(ctx).Error(err, "list CollabClusters for a CRD change", "crd", obj.GetName())
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, cc := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&cc)})
	}
	return reqs
}
