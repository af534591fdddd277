// Package applied decides whether a child must be server-side applied
// again: it builds the apply body, stamps it with a hash of itself, and
// compares it with the child as the cache has it. It is pure, so the
// decision is unit-tested without a cluster.
package applied

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tandem-dev/tandem/internal/specs"
)

// Body is the apply request's body: obj without status and nulls,
// annotated with the hash of the rest.
func Body(obj client.Object) (map[string]any, error) {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("convert %T %s: %w", obj, obj.GetName(), err)
	}
	delete(u, "status")
	prune(u)
	hash, err := hash(u)
	if err != nil {
		return nil, fmt.Errorf("hash %T %s: %w", obj, obj.GetName(), err)
	}
	if err := unstructured.SetNestedField(u, hash, "metadata", "annotations", specs.AnnotationAppliedHash); err != nil {
		return nil, fmt.Errorf("annotate %T %s: %w", obj, obj.GetName(), err)
	}
	return u, nil
}

// hash digests an apply body. encoding/json writes map keys sorted,
// so equal objects hash alike.
func hash(u map[string]any) (string, error) {
	b, err := json.Marshal(u)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8]), nil
}

// Difference names the first field of want that live does not hold (the
// applied hash first), or "" when live is up to date. The operator logs it
// when it applies a child again.
func Difference(want, live map[string]any) string {
	wantHash, _, _ := unstructured.NestedString(want, "metadata", "annotations", specs.AnnotationAppliedHash)
	liveHash, _, _ := unstructured.NestedString(live, "metadata", "annotations", specs.AnnotationAppliedHash)
	if wantHash == "" || wantHash != liveHash {
		return "metadata.annotations." + specs.AnnotationAppliedHash
	}
	if d := difference(want, live); d != nil {
		return strings.Join(d, ".")
	}
	return ""
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// covers says whether have holds every value want sets.
func covers(want, have any) bool { return difference(want, have) == nil }

// difference returns the path below want and have of the first value
// want sets that have does not hold, nil when there is none: maps key by
// key (have may hold more keys: defaults, other managers' fields), lists
// item by item with the same length, scalars equal. An empty map or list
// in want is matched by an absent one, which is how the apiserver may
// return it. Anything not matched is sent again, so a false difference
// costs one apply, while a missed one would leave drift in place: hence
// lists of the same length only.
func difference(want, have any) []string {
	switch w := want.(type) {
	case map[string]any:
		h, ok := have.(map[string]any)
		if !ok {
			if len(w) == 0 && have == nil {
				return nil
			}
			return []string{}
		}
		for _, k := range sortedKeys(w) {
			if _, ok := h[k]; !ok && (k == "apiVersion" || k == "kind") {
				// Embedded objects (volume claim templates) lose their
				// TypeMeta in typed objects read from the cache.
				continue
			}
			if d := difference(w[k], h[k]); d != nil {
				return append([]string{k}, d...)
			}
		}
		return nil
	case []any:
		h, ok := have.([]any)
		if !ok {
			if len(w) == 0 && have == nil {
				return nil
			}
			return []string{}
		}
		if len(w) != len(h) {
			return []string{fmt.Sprintf("length %d, not %d", len(h), len(w))}
		}
		for i := range w {
			if d := difference(w[i], h[i]); d != nil {
				return append([]string{fmt.Sprint(i)}, d...)
			}
		}
		return nil
	case nil:
		return nil
	}
	if wn, ok := number(want); ok {
		if hn, ok := number(have); ok && wn == hn {
			return nil
		}
		return []string{}
	}
	if reflect.DeepEqual(want, have) {
		return nil
	}
	return []string{}
}

// number reads the numeric types an unstructured object may hold: int64
// from typed objects, int64 or float64 from decoded JSON.
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case int32:
		return float64(n), true
	case int:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
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
