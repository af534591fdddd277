package specs

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
)

// routeWithParents is the HTTPRoute as a Gateway controller leaves it:
// generation 2, and one status.parents entry per parent given.
func routeWithParents(parents ...map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(HTTPRouteGVK)
	u.SetName("notes")
	u.SetNamespace("team-a")
	u.SetGeneration(2)
	items := make([]any, 0, len(parents))
	for _, p := range parents {
		items = append(items, p)
	}
	if len(items) > 0 {
		u.Object["status"] = map[string]any{"parents": items}
	}
	return u
}

func parentStatus(name, ns, section string, gen int64, conds ...[3]string) map[string]any {
	ref := map[string]any{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name}
	if ns != "" {
		ref["namespace"] = ns
	}
	if section != "" {
		ref["sectionName"] = section
	}
	var cs []any
	for _, c := range conds {
		cs = append(cs, map[string]any{"type": c[0], "status": c[1], "reason": c[2], "message": c[2] + " by the test", "observedGeneration": gen})
	}
	return map[string]any{"parentRef": ref, "controllerName": "gateway.example.test/controller", "conditions": cs}
}

func TestHTTPRouteAcceptance(t *testing.T) {
	cc := &collabv1.CollabCluster{ObjectMeta: metav1.ObjectMeta{Name: "notes", Namespace: "team-a"}}
	cc.Spec.Gateway = &collabv1.GatewaySpec{ParentRefs: []collabv1.GatewayParentRef{
		{Name: "public", Namespace: "gateway-system", SectionName: "https"},
		{Name: "internal"},
	}}
	ok := [][3]string{{"Accepted", "True", "Accepted"}, {"ResolvedRefs", "True", "ResolvedRefs"}}
	for _, tc := range []struct {
		name       string
		route      *unstructured.Unstructured
		status     metav1.ConditionStatus
		reason     string
		inMessages []string
	}{
		{"no route yet", &unstructured.Unstructured{}, metav1.ConditionUnknown, "HTTPRouteMissing", []string{"HTTPRoute notes"}},
		{"no controller answered", routeWithParents(), metav1.ConditionUnknown, "Pending",
			[]string{"gateway-system/public listener https", "team-a/internal", "implementation is running"}},
		{"one of two answered", routeWithParents(parentStatus("public", "gateway-system", "https", 2, ok...)), metav1.ConditionUnknown, "Pending",
			[]string{"team-a/internal"}},
		{"both accepted", routeWithParents(parentStatus("public", "gateway-system", "https", 2, ok...), parentStatus("internal", "", "", 2, ok...)),
			metav1.ConditionTrue, "Accepted", []string{"gateway-system/public listener https (controller gateway.example.test/controller)", "team-a/internal"}},
		{"a status for an older spec is not an answer", routeWithParents(parentStatus("public", "gateway-system", "https", 1, ok...), parentStatus("internal", "", "", 2, ok...)),
			metav1.ConditionUnknown, "Pending", []string{"gateway-system/public"}},
		{"a status for another listener is not an answer", routeWithParents(parentStatus("public", "gateway-system", "http", 2, ok...), parentStatus("internal", "", "", 2, ok...)),
			metav1.ConditionUnknown, "Pending", []string{"gateway-system/public listener https"}},
		{"refused by a Gateway", routeWithParents(
			parentStatus("public", "gateway-system", "https", 2, [3]string{"Accepted", "False", "NotAllowedByListeners"}, [3]string{"ResolvedRefs", "True", "ResolvedRefs"}),
			parentStatus("internal", "", "", 2, ok...)),
			metav1.ConditionFalse, "NotAccepted", []string{"Gateway gateway-system/public listener https", "did not accept HTTPRoute notes", "NotAllowedByListeners: NotAllowedByListeners by the test"}},
		{"backend not resolved", routeWithParents(
			parentStatus("public", "gateway-system", "https", 2, ok...),
			parentStatus("internal", "", "", 2, [3]string{"Accepted", "True", "Accepted"}, [3]string{"ResolvedRefs", "False", "BackendNotFound"})),
			metav1.ConditionFalse, "RefsNotResolved", []string{"Gateway team-a/internal", "Service notes", "BackendNotFound"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := HTTPRouteAcceptance(cc, tc.route)
			if c.Type != collabv1.ConditionRouteAccepted || c.Status != tc.status || c.Reason != tc.reason {
				t.Fatalf("condition %s=%s/%s (%s), want %s/%s", c.Type, c.Status, c.Reason, c.Message, tc.status, tc.reason)
			}
			for _, want := range tc.inMessages {
				if !strings.Contains(c.Message, want) {
					t.Errorf("message %q does not mention %q", c.Message, want)
				}
			}
		})
	}
}
