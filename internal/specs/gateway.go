package specs

import (
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
)

// HTTPRouteGVK is the Gateway API HTTPRoute the operator writes (v1, in
// the standard and the experimental channel alike).
var HTTPRouteGVK = schema.GroupVersionKind{Group: "gateway.networking.k8s.io", Version: "v1", Kind: "HTTPRoute"}

// HTTPRouteCRDName is the CustomResourceDefinition whose schema says which
// optional HTTPRoute fields the cluster's Gateway API version has.
const HTTPRouteCRDName = "httproutes.gateway.networking.k8s.io"

// HTTPRouteFeatures are the optional HTTPRoute rule fields the installed
// CRD has. A field the CRD lacks cannot be written: server-side apply
// rejects unknown fields.
type HTTPRouteFeatures struct {
	// Timeouts: rules[].timeouts (GEP-1742).
	Timeouts bool
	// SessionPersistence: rules[].sessionPersistence (GEP-1619, experimental channel).
	SessionPersistence bool
}

// HTTPRouteName is the name of the runtime's HTTPRoute.
func HTTPRouteName(cc *collabv1.CollabCluster) string { return cc.Name }

// gatewayHosts are the exact (non-wildcard) host names of spec.gateway.
func gatewayHosts(cc *collabv1.CollabCluster) []string {
	if cc.Spec.Gateway == nil {
		return nil
	}
	var hosts []string
	for _, h := range cc.Spec.Gateway.Hostnames {
		if !strings.HasPrefix(string(h), "*") {
			hosts = append(hosts, string(h))
		}
	}
	return hosts
}

// HTTPRouteSessionPersistence says whether the route built for cc with
// features f pins browsers with a cookie.
func HTTPRouteSessionPersistence(in *collabv1.CollabCluster, f HTTPRouteFeatures) bool {
	cc := WithDefaults(in)
	return cc.Spec.Gateway != nil && f.SessionPersistence &&
		cc.Spec.Gateway.SessionAffinity.Mode == collabv1.SessionAffinityCookie
}

// RuntimeHTTPRoute routes every path of spec.gateway's host names to the
// runtime Service; nil without spec.gateway. It is unstructured so that
// the operator needs no Gateway API Go module, and writes only the fields
// the installed CRD has (f).
func RuntimeHTTPRoute(in *collabv1.CollabCluster, f HTTPRouteFeatures) *unstructured.Unstructured {
	cc := WithDefaults(in)
	gw := cc.Spec.Gateway
	if gw == nil {
		return nil
	}
	parents := make([]any, 0, len(gw.ParentRefs))
	for _, p := range gw.ParentRefs {
		ref := map[string]any{
			"group": HTTPRouteGVK.Group,
			"kind":  "Gateway",
			"name":  p.Name,
		}
		if p.Namespace != "" {
			ref["namespace"] = p.Namespace
		}
		if p.SectionName != "" {
			ref["sectionName"] = p.SectionName
		}
		if p.Port != nil {
			ref["port"] = int64(*p.Port)
		}
		parents = append(parents, ref)
	}
	rule := map[string]any{
		"matches": []any{map[string]any{"path": map[string]any{"type": "PathPrefix", "value": "/"}}},
		"backendRefs": []any{map[string]any{
			"group": "", "kind": "Service",
			"name": ServiceName(cc), "port": int64(ServicePort),
		}},
	}
	if f.Timeouts {
		// The request timeout covers a whole upgraded WebSocket on most
		// implementations; "0s" disables it.
		t := GatewayDuration(*gw.RequestTimeoutSeconds)
		rule["timeouts"] = map[string]any{"request": t, "backendRequest": t}
	}
	if HTTPRouteSessionPersistence(cc, f) {
		rule["sessionPersistence"] = map[string]any{
			"sessionName":     gw.SessionAffinity.CookieName,
			"type":            "Cookie",
			"absoluteTimeout": GatewayDuration(gw.SessionAffinity.CookieMaxAgeSeconds),
			"cookieConfig":    map[string]any{"lifetimeType": "Permanent"},
		}
	}
	spec := map[string]any{
		"parentRefs": parents,
		"rules":      []any{rule},
	}
	if len(gw.Hostnames) > 0 {
		hosts := make([]any, 0, len(gw.Hostnames))
		for _, h := range gw.Hostnames {
			hosts = append(hosts, string(h))
		}
		spec["hostnames"] = hosts
	}
	return unstructuredChild(cc, HTTPRouteGVK, HTTPRouteName(cc), ComponentRuntime, spec)
}

// HTTPRouteAcceptance is the RouteAccepted condition: it reads the Accepted and ResolvedRefs conditions that the
// Gateways' controllers write for each parentRef in the HTTPRoute's
// status.parents. A refusal names the Gateway, the controller and its
// reason; a Gateway nobody has answered for yet (no implementation
// running, a Gateway that does not exist, or a status older than the
// route's spec) leaves the condition Unknown.
func HTTPRouteAcceptance(in *collabv1.CollabCluster, route *unstructured.Unstructured) metav1.Condition {
	cc := WithDefaults(in)
	name := HTTPRouteName(cc)
	c := metav1.Condition{Type: collabv1.ConditionRouteAccepted, Status: metav1.ConditionUnknown}
	if cc.Spec.Gateway == nil {
		c.Reason, c.Message = "NoGateway", "spec.gateway is not set"
		return c
	}
	if route == nil || route.GetName() == "" {
		c.Reason, c.Message = "HTTPRouteMissing", fmt.Sprintf("HTTPRoute %s does not exist yet", name)
		return c
	}
	parents, _, _ := unstructured.NestedSlice(route.Object, "status", "parents")
	var accepted, pending []string
	for _, want := range cc.Spec.Gateway.ParentRefs {
		gw := want.Namespace
		if gw == "" {
			gw = cc.Namespace
		}
		gw += "/" + want.Name
		if want.SectionName != "" {
			gw += " listener " + want.SectionName
		}
		st, ok := routeParentStatus(parents, cc.Namespace, want)
		if !ok {
			pending = append(pending, gw)
			continue
		}
		conds := st.conditions
		acc := meta.FindStatusCondition(conds, "Accepted")
		refs := meta.FindStatusCondition(conds, "ResolvedRefs")
		stale := func(x *metav1.Condition) bool {
			return x.ObservedGeneration != 0 && x.ObservedGeneration < route.GetGeneration()
		}
		switch {
		case acc == nil || stale(acc):
			pending = append(pending, gw)
		case acc.Status == metav1.ConditionFalse:
			c.Status, c.Reason = metav1.ConditionFalse, "NotAccepted"
			c.Message = fmt.Sprintf("Gateway %s (controller %s) did not accept HTTPRoute %s: %s", gw, st.controller, name, because(acc))
			return c
		case refs != nil && !stale(refs) && refs.Status == metav1.ConditionFalse:
			c.Status, c.Reason = metav1.ConditionFalse, "RefsNotResolved"
			c.Message = fmt.Sprintf("Gateway %s (controller %s) accepted HTTPRoute %s but cannot resolve its backend, Service %s: %s", gw, st.controller, name, ServiceName(cc), because(refs))
			return c
		case acc.Status == metav1.ConditionTrue:
			accepted = append(accepted, fmt.Sprintf("%s (controller %s)", gw, st.controller))
		default:
			pending = append(pending, gw)
		}
	}
	if len(pending) > 0 {
		c.Reason = "Pending"
		c.Message = fmt.Sprintf("HTTPRoute %s: no Gateway controller has answered for %s yet; check that the Gateway exists and that its implementation is running", name, strings.Join(pending, ", "))
		return c
	}
	c.Status, c.Reason = metav1.ConditionTrue, "Accepted"
	c.Message = fmt.Sprintf("HTTPRoute %s accepted by Gateway %s", name, strings.Join(accepted, ", "))
	return c
}

// because is a Gateway condition's reason, with its message when it has one.
func because(c *metav1.Condition) string {
	if c.Message == "" {
		return c.Reason
	}
	return c.Reason + ": " + c.Message
}

// routeParent is one entry of an HTTPRoute's status.parents.
type routeParent struct {
	controller string
	conditions []metav1.Condition
}

// routeParentStatus finds the status.parents entry for a parentRef of the
// spec: the same Gateway name and namespace (empty: the route's) and
// listener.
func routeParentStatus(parents []any, namespace string, want collabv1.GatewayParentRef) (routeParent, bool) {
	wantNS := want.Namespace
	if wantNS == "" {
		wantNS = namespace
	}
	for _, item := range parents {
		m, ok := item.(map[string]any)
		if !ok {
			continue
		}
		ref, _, _ := unstructured.NestedMap(m, "parentRef")
		n, _ := ref["name"].(string)
		ns, _ := ref["namespace"].(string)
		section, _ := ref["sectionName"].(string)
		if ns == "" {
			ns = namespace
		}
		if n != want.Name || ns != wantNS || section != want.SectionName {
			continue
		}
		p := routeParent{}
		p.controller, _ = m["controllerName"].(string)
		raw, _, _ := unstructured.NestedSlice(m, "conditions")
		for _, ci := range raw {
			cm, ok := ci.(map[string]any)
			if !ok {
				continue
			}
			t, _ := cm["type"].(string)
			s, _ := cm["status"].(string)
			reason, _ := cm["reason"].(string)
			msg, _ := cm["message"].(string)
			gen, _, _ := unstructured.NestedInt64(cm, "observedGeneration")
			p.conditions = append(p.conditions, metav1.Condition{Type: t, Status: metav1.ConditionStatus(s), Reason: reason, Message: msg, ObservedGeneration: gen})
		}
		return p, true
	}
	return routeParent{}, false
}

// GatewayDuration writes seconds as a Gateway API Duration (GEP-2257:
// at most four parts of up to five digits each, such as 1h or 25h1m1s).
// Seconds alone would overflow five digits past 99999; hours past 99999
// (over eleven years) are capped.
func GatewayDuration(seconds int32) string {
	if seconds <= 0 {
		return "0s"
	}
	h, m, s := seconds/3600, seconds/60%60, seconds%60
	if h > 99999 {
		return "99999h"
	}
	var b strings.Builder
	for _, p := range []struct {
		v    int32
		unit string
	}{{h, "h"}, {m, "m"}, {s, "s"}} {
		if p.v > 0 {
			b.WriteString(strconv.Itoa(int(p.v)) + p.unit)
		}
	}
	return b.String()
}

// unstructuredChild is a child of a kind the operator has no Go types for,
// with the same metadata as every other child.
func unstructuredChild(cc *collabv1.CollabCluster, gvk schema.GroupVersionKind, name, component string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetGroupVersionKind(gvk)
	meta := objectMeta(cc, name, component)
	u.SetName(meta.Name)
	u.SetNamespace(meta.Namespace)
	u.SetLabels(meta.Labels)
	u.SetOwnerReferences(meta.OwnerReferences)
	return u
}
