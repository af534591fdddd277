package controllers

import (
	"fmt"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
	"github.com/tandem-dev/tandem/internal/specs"
)

// What the operator caches, and why it is little:
//
//   - CollabClusters: all of them (in the watched namespaces).
//   - Its children (Deployments, StatefulSets, Services, ConfigMaps,
//     Ingresses, NetworkPolicies, PodDisruptionBudgets, the Secrets it
//     generates, HTTPRoutes, CloudNativePG Clusters, PodMonitors,
//     PrometheusRules): only objects with its managed-by label, which every
//     child carries. The cluster's other Services, Secrets and so on are
//     neither listed nor watched.
//   - CustomResourceDefinitions: metadata only.
//   - IngressClasses: all of them, unless a namespaced install may not
//     watch them. They are cluster-scoped and few, and spec.ingress
//     .controller auto reads one on every reconcile.
//   - Every Secret's name, namespace and controller, in a cache of its own:
//     a Secret a CollabCluster names (an external store's URL, a TLS
//     Secret) is not labelled by the operator, and a change to it must
//     still bring the CollabCluster back. Its data is read around the cache
//     when a reconcile needs it.
//   - Pods: nothing; readiness comes from the Deployments' and
//     StatefulSets' status.
//
// Every cached object loses its managedFields and the
// last-applied-configuration annotation, which the operator never reads
// and which are often most of an object's size.

// managedBy selects the operator's children.
func managedBy() labels.Selector {
	return labels.SelectorFromSet(labels.Set{specs.LabelManagedBy: specs.FieldManager})
}

// CacheOptions are the manager's cache options: the watched namespaces
// (all when empty), the children selected by the managed-by label, and the
// transforms that keep cached objects small.
func CacheOptions(namespaces []string) cache.Options {
	opts := cache.Options{
		DefaultLabelSelector: managedBy(),
		DefaultTransform:     trimForCache,
		ByObject: map[client.Object]cache.ByObject{
			&collabv1.CollabCluster{}:    {Label: labels.Everything()},
			crdMetadata():                {Label: labels.Everything()},
			&networkingv1.IngressClass{}: {Label: labels.Everything()},
		},
	}
	opts.DefaultNamespaces = namespaceConfigs(namespaces)
	return opts
}

// namespaceConfigs restricts a cache to the watched namespaces; nil (all
// namespaces) when none are given.
func namespaceConfigs(namespaces []string) map[string]cache.Config {
	if len(namespaces) == 0 {
		return nil
	}
	out := make(map[string]cache.Config, len(namespaces))
	for _, ns := range namespaces {
		out[ns] = cache.Config{}
	}
	return out
}

func crdMetadata() *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{
		APIVersion: crdGVK.GroupVersion().String(), Kind: crdGVK.Kind}}
}

func secretMetadata() *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"}}
}

// lastApplied is kubectl's copy of the whole object it applied.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// trimForCache drops what the operator never reads from a cached object.
func trimForCache(in any) (any, error) {
	obj, ok := in.(metav1.Object)
	if !ok {
		return in, nil // a tombstone: stored as it is
	}
	if obj.GetManagedFields() != nil {
		obj.SetManagedFields(nil)
	}
	if a := obj.GetAnnotations(); a != nil {
		if _, ok := a[lastApplied]; ok {
			delete(a, lastApplied)
			obj.SetAnnotations(a)
		}
	}
	return in, nil
}

// trimSecretMetadata keeps of a Secret's metadata what maps it to its
// CollabClusters: its name and namespace (the index of referenced
// Secrets) and its controller (generated Secrets).
func trimSecretMetadata(in any) (any, error) {
	m, ok := in.(*metav1.PartialObjectMetadata)
	if !ok {
		return in, nil
	}
	out := &metav1.PartialObjectMetadata{TypeMeta: m.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
	}}
	if ref := metav1.GetControllerOfNoCopy(m); ref != nil {
		out.OwnerReferences = []metav1.OwnerReference{*ref}
	}
	return out, nil
}

// newSecretMetadataCache is the cache of every Secret's trimmed metadata
// in the watched namespaces, run by the manager.
func newSecretMetadataCache(mgr ctrl.Manager, namespaces []string) (cache.Cache, error) {
	opts := cache.Options{
		HTTPClient:       mgr.GetHTTPClient(),
		Scheme:           mgr.GetScheme(),
		Mapper:           mgr.GetRESTMapper(),
		DefaultTransform: trimSecretMetadata,
		// Nothing but the metadata informer may be started on it.
		ReaderFailOnMissingInformer: true,
	}
	opts.DefaultNamespaces = namespaceConfigs(namespaces)
	c, err := cache.New(mgr.GetConfig(), opts)
	if err != nil {
		return nil, fmt.Errorf("create the Secret metadata cache: %w", err)
	}
	if err := mgr.Add(c); err != nil {
		return nil, fmt.Errorf("add the Secret metadata cache: %w", err)
	}
	return c, nil
}
