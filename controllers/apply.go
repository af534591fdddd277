package controllers

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tandem-dev/tandem/internal/specs"
)

// apply server-side applies a built object with the operator's field
// manager. Forcing ownership is what corrects drift: a field someone edited
// by hand is taken back and reset to the built value, while fields the
// operator does not set (defaults, other controllers' fields) are left alone.
func apply(ctx context.Context, c client.Client, obj client.Object) error {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return fmt.Errorf("convert %T %s: %w", obj, obj.GetName(), err)
	}
	delete(u, "status")
	prune(u)
	ac := client.ApplyConfigurationFromUnstructured(&unstructured.Unstructured{Object: u})
	if err := c.Apply(ctx, ac, client.FieldOwner(specs.FieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply %s %s: %w", obj.GetObjectKind().GroupVersionKind().Kind, obj.GetName(), err)
	}
	return nil
}

// prune drops what typed structs serialise but an apply request must not
// claim: null values (creationTimestamp: null) and empty nested status
// objects (in volume claim templates).
func prune(m map[string]any) {
	for k, v := range m {
		switch val := v.(type) {
		case nil:
			delete(m, k)
		case map[string]any:
			prune(val)
			if k == "status" && len(val) == 0 {
				delete(m, k)
			}
		case []any:
			for _, item := range val {
				if im, ok := item.(map[string]any); ok {
					prune(im)
				}
			}
		}
	}
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
