package specs

import (
	"strconv"
	"strings"

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
