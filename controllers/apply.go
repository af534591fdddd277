package controllers

import (
	"context"
	"fmt"
	"reflect"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/tandem-dev/tandem/internal/applied"
	"github.com/tandem-dev/tandem/internal/specs"
)

// apply server-side applies a built object with the operator's field
// manager, unless the child in the cache already is what it would become.
// Forcing ownership is what corrects drift: a field someone edited by hand
// is taken back and reset to the built value, while fields the operator
// does not set (defaults, other controllers' fields) are left alone.
//
// Skipping is what lets a resync of converged CollabClusters make no
// request: an apply that changes nothing is still a write request, which
// the apiserver decodes, admits and diffs. The child is skipped only when
// it carries the hash of this very object (so nothing the operator once set
// and no longer sets is left to remove) and still holds every value the
// object sets (so a hand edit of an owned field is still corrected).
func apply(ctx context.Context, c client.Client, obj client.Object) error {
	_, err := applyChild(ctx, c, obj)
	return err
}

// applyChild is apply, and says whether the child was not in the cache,
// so the apply most likely created it.
func applyChild(ctx context.Context, c client.Client, obj client.Object) (bool, error) {
	u, err := applied.Body(obj)
	if err != nil {
		return false, err
	}
	kind := obj.GetObjectKind().GroupVersionKind().Kind
	live, err := liveObject(ctx, c, obj)
	if err != nil {
		return false, fmt.Errorf("get %s %s: %w", kind, obj.GetName(), err)
	}
	if live != nil {
		diff := applied.Difference(u, live)
		if diff == "" {
			return false, nil
		}
		log.FromContext(ctx).V(1).Info("applying a child that differs", "kind", kind, "name", obj.GetName(), "field", diff)
	}
	ac := client.ApplyConfigurationFromUnstructured(&unstructured.Unstructured{Object: u})
	if err := c.Apply(ctx, ac, client.FieldOwner(specs.FieldManager), client.ForceOwnership); err != nil {
		return false, fmt.Errorf("apply %s %s: %w", kind, obj.GetName(), err)
	}
	return live == nil, nil
}

// liveObject reads the child obj names from the cache, as a map; nil when
// it does not exist.
func liveObject(ctx context.Context, c client.Client, obj client.Object) (map[string]any, error) {
	var live client.Object
	if u, ok := obj.(*unstructured.Unstructured); ok {
		l := &unstructured.Unstructured{}
		l.SetGroupVersionKind(u.GroupVersionKind())
		live = l
	} else {
		l, ok := reflect.New(reflect.TypeOf(obj).Elem()).Interface().(client.Object)
		if !ok {
			return nil, fmt.Errorf("%T is not a client.Object", obj)
		}
		live = l
	}
	err := c.Get(ctx, client.ObjectKeyFromObject(obj), live)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if u, ok := live.(*unstructured.Unstructured); ok {
		return u.Object, nil
	}
	return runtime.DefaultUnstructuredConverter.ToUnstructured(live)
}

// deleteIfOwned removes a child that the current spec no longer wants (a
// PDB after scaling to one replica, a managed store after switching to an
// external one). Objects the CollabCluster does not control are left alone.
func deleteIfOwned(ctx context.Context, c client.Client, owner client.Object, obj client.Object) (bool, error) {
	err := c.Get(ctx, client.ObjectKey{Namespace: owner.GetNamespace(), Name: obj.GetName()}, obj)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("get %T %s: %w", obj, obj.GetName(), err)
	}
	if !isControlledBy(obj, owner) {
		return false, nil
	}
	if err := c.Delete(ctx, obj, client.PropagationPolicy("Background")); err != nil && !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("delete %T %s: %w", obj, obj.GetName(), err)
	}
	return true, nil
}

func isControlledBy(obj, owner client.Object) bool {
	for _, ref := range obj.GetOwnerReferences() {
		if ref.Controller != nil && *ref.Controller && ref.UID == owner.GetUID() {
			return true
		}
	}
	return false
}
