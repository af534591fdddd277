package specs

import (
	"strconv"
	"strings"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
)

// ingressControllerNames maps an IngressClass's spec.controller to the
// controller whose annotations the operator renders.
var ingressControllerNames = map[string]collabv1.IngressController{
	"k8s.io/ingress-nginx":                 collabv1.IngressControllerIngressNGINX,
	"nginx.org/ingress-controller":         collabv1.IngressControllerNGINXInc,
	"traefik.io/ingress-controller":        collabv1.IngressControllerTraefik,
	"haproxy-ingress.github.io/controller": collabv1.IngressControllerHAProxyIngress,
}

// IngressControllerFor names the controller an IngressClass's
// spec.controller belongs to; ok is false for a controller the operator
// has no annotations for.
func IngressControllerFor(classController string) (collabv1.IngressController, bool) {
	if c, ok := ingressControllerNames[classController]; ok {
		return c, true
	}
	// HAProxy Technologies' controller names its class controller
	// haproxy.org/ingress-controller/<class>.
	if strings.HasPrefix(classController, "haproxy.org/ingress-controller") {
		return collabv1.IngressControllerHAProxy, true
	}
	return "", false
}

// IngressSupportsAffinity says whether the operator's annotations for c
// pin a browser with a cookie. NGINX Inc's cookie affinity
// (nginx.com/sticky-cookie-services) needs NGINX Plus: the annotation is
// rendered, an open-source NGINX Inc controller ignores it.
func IngressSupportsAffinity(c collabv1.IngressController) bool {
	switch c {
	case collabv1.IngressControllerIngressNGINX, collabv1.IngressControllerNGINXInc,
		collabv1.IngressControllerTraefik, collabv1.IngressControllerHAProxy,
		collabv1.IngressControllerHAProxyIngress:
		return true
	}
	return false
}

// ingressAnnotations are the Ingress annotations for controller c: the
// WebSocket timeouts and, with cookie affinity, the sticky cookie.
func ingressAnnotations(cc *collabv1.CollabCluster, c collabv1.IngressController) map[string]string {
	ing := cc.Spec.Ingress
	timeout := strconv.Itoa(int(ing.ProxyTimeoutSeconds))
	cookie := ing.SessionAffinity.Mode == collabv1.SessionAffinityCookie
	maxAge := strconv.Itoa(int(ing.SessionAffinity.CookieMaxAgeSeconds))
	name := ing.SessionAffinity.CookieName
	a := map[string]string{}
	switch c {
	case collabv1.IngressControllerNGINXInc:
		// WebSockets need the service named in websocket-services; the
		// timeouts take NGINX time units.
		a["nginx.org/websocket-services"] = ServiceName(cc)
		a["nginx.org/proxy-read-timeout"] = timeout + "s"
		a["nginx.org/proxy-send-timeout"] = timeout + "s"
		if cookie {
			a["nginx.com/sticky-cookie-services"] = "serviceName=" + ServiceName(cc) + " " + name +
				" expires=" + maxAge + "s path=/"
		}
	case collabv1.IngressControllerTraefik:
		// Traefik reads stickiness from the Service (serviceAnnotations)
		// and has no per-Ingress timeouts: its entry points' timeouts
		// apply.
	case collabv1.IngressControllerHAProxy:
		// After the upgrade HAProxy applies the tunnel timeout.
		a["haproxy.org/timeout-tunnel"] = timeout + "s"
		if cookie {
			a["haproxy.org/cookie-persistence"] = name
		}
	case collabv1.IngressControllerHAProxyIngress:
		a["haproxy-ingress.github.io/timeout-tunnel"] = timeout + "s"
		if cookie {
			a["haproxy-ingress.github.io/affinity"] = "cookie"
			a["haproxy-ingress.github.io/session-cookie-name"] = name
		}
	default: // ingress-nginx, also the fallback for unknown controllers
		// WebSockets stay open for hours; ingress-nginx's default 60s
		// timeouts would cut every idle editor.
		a[ingressNginxPfx+"proxy-read-timeout"] = timeout
		a[ingressNginxPfx+"proxy-send-timeout"] = timeout
		if cookie {
			// A browser's reconnects land on the same pod, which still
			// holds the document in memory.
			a[ingressNginxPfx+"affinity"] = "cookie"
			a[ingressNginxPfx+"affinity-mode"] = "persistent"
			a[ingressNginxPfx+"session-cookie-name"] = name
			a[ingressNginxPfx+"session-cookie-max-age"] = maxAge
			a[ingressNginxPfx+"session-cookie-expires"] = maxAge
		}
	}
	return a
}

// ServiceAnnotations are the runtime Service's annotations for the
// ingress controller c; only Traefik reads stickiness from the Service.
// nil when there are none.
func ServiceAnnotations(in *collabv1.CollabCluster, c collabv1.IngressController) map[string]string {
	cc := WithDefaults(in)
	ing := cc.Spec.Ingress
	if !ing.Enabled || c != collabv1.IngressControllerTraefik || ing.SessionAffinity.Mode != collabv1.SessionAffinityCookie {
		return nil
	}
	const pfx = "traefik.ingress.kubernetes.io/service.sticky.cookie"
	return map[string]string{
		pfx:             "true",
		pfx + ".name":   ing.SessionAffinity.CookieName,
		pfx + ".maxage": strconv.Itoa(int(ing.SessionAffinity.CookieMaxAgeSeconds)),
		// The editor page is served over plain HTTP in development;
		// HttpOnly costs nothing since no script reads the cookie.
		pfx + ".httponly": "true",
	}
}
