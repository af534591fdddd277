package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
)

// ConditionSessionAffinity reports whether the exposure (spec.ingress or
// spec.gateway) pins a browser to one runtime pod. False is not an error:
// every replica serves every document, only with more forwarding.
const ConditionSessionAffinity = "SessionAffinity"

// ConditionRouteAccepted reports whether the Gateways named in
// spec.gateway.parentRefs accepted the HTTPRoute and resolved its backend
// (the Accepted and ResolvedRefs conditions their controller writes in the
// HTTPRoute's status.parents). Unknown until a Gateway controller has
// written them. Like SessionAffinity it does not hold Ready back: the
// runtime serves inside the cluster either way.
const ConditionRouteAccepted = "RouteAccepted"

// IngressController selects which controller's annotations render the
// ingress's WebSocket timeouts and cookie affinity.
// +kubebuilder:validation:Enum=auto;ingress-nginx;nginx-inc;traefik;haproxy;haproxy-ingress
type IngressController string

// Ingress controllers the operator renders settings for.
const (
	// IngressControllerAuto reads the IngressClass's spec.controller.
	IngressControllerAuto IngressController = "auto"
	// IngressControllerIngressNGINX is kubernetes/ingress-nginx (k8s.io/ingress-nginx).
	IngressControllerIngressNGINX IngressController = "ingress-nginx"
	// IngressControllerNGINXInc is F5 NGINX Ingress Controller (nginx.org/ingress-controller).
	IngressControllerNGINXInc IngressController = "nginx-inc"
	// IngressControllerTraefik is Traefik (traefik.io/ingress-controller).
	IngressControllerTraefik IngressController = "traefik"
	// IngressControllerHAProxy is HAProxy Technologies' controller (haproxy.org/ingress-controller/...).
	IngressControllerHAProxy IngressController = "haproxy"
	// IngressControllerHAProxyIngress is the community HAProxy Ingress (haproxy-ingress.github.io/controller).
	IngressControllerHAProxyIngress IngressController = "haproxy-ingress"
)

// GatewaySpec exposes the runtime through a Gateway API HTTPRoute attached
// to a Gateway you run (Envoy Gateway, NGINX Gateway Fabric, Istio,
// Cilium, ...). The operator manages the HTTPRoute, never the Gateway.
type GatewaySpec struct {
	// ParentRefs are the Gateways (or listeners of them) the HTTPRoute
	// attaches to. A Gateway in another namespace must allow routes from
	// this one (its listeners' allowedRoutes).
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	// +required
	ParentRefs []GatewayParentRef `json:"parentRefs"`

	// Hostnames the HTTPRoute matches, such as docs.example.com. Empty
	// matches every host name the listener accepts. In anonymous mode the
	// runtime serves these host names too.
	// +kubebuilder:validation:MaxItems=16
	// +listType=set
	// +optional
	Hostnames []GatewayHostname `json:"hostnames,omitempty"`

	// RequestTimeoutSeconds is the HTTPRoute rule's request and backend
	// request timeout. WebSockets stay open for hours: it must be long,
	// and 0 asks the Gateway for no timeout at all. Written only when the
	// installed HTTPRoute CRD has rules[].timeouts.
	// +kubebuilder:default=3600
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=604800
	// +optional
	RequestTimeoutSeconds *int32 `json:"requestTimeoutSeconds,omitempty"`

	// SessionAffinity pins a browser to one runtime pod with a cookie
	// (HTTPRoute sessionPersistence, GEP-1619). It needs the Gateway API
	// experimental channel's HTTPRoute CRD and an implementation that
	// supports it; without the field the SessionAffinity condition says so.
	// +kubebuilder:default={}
	// +optional
	SessionAffinity SessionAffinitySpec `json:"sessionAffinity,omitempty"`
}

// The host name rule is a CEL rule rather than a Pattern so that a
// rejection explains itself instead of printing the regular expression;
// [.] and [*] spare the backslashes that the marker, CEL and the regular
// expression would each unescape.

// GatewayHostname is a host name as Gateway API accepts it (a leading
// "*." wildcard is allowed).
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=253
// +kubebuilder:validation:XValidation:rule="self.matches('^([*][.])?[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="hostnames must be DNS names such as docs.example.com, optionally starting with '*.': lowercase letters, digits, '-' and '.'"
type GatewayHostname string

// GatewayParentRef names a Gateway (kind Gateway of gateway.networking.k8s.io).
type GatewayParentRef struct {
	// Name of the Gateway.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	Name string `json:"name"`

	// Namespace of the Gateway; empty means the CollabCluster's namespace.
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Namespace string `json:"namespace,omitempty"`

	// SectionName is the Gateway listener to attach to; empty attaches to
	// every listener that allows the route.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	SectionName string `json:"sectionName,omitempty"`

	// Port of the Gateway listener to attach to; empty attaches to any.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port *int32 `json:"port,omitempty"`
}

// CloudNativePGPostgres runs PostgreSQL as a CloudNativePG Cluster: the
// CloudNativePG operator (installed separately) creates the instances,
// fails over, and generates the credentials.
type CloudNativePGPostgres struct {
	// Instances of PostgreSQL: one primary, the rest streaming replicas
	// that CloudNativePG promotes on failure.
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10
	// +optional
	Instances *int32 `json:"instances,omitempty"`

	// ImageName is the PostgreSQL operand image; empty uses the
	// CloudNativePG operator's default for its version.
	// +optional
	ImageName string `json:"imageName,omitempty"`

	// Storage of each instance's data directory. CloudNativePG can grow
	// the size in place when the storage class allows expansion.
	// +kubebuilder:default={}
	// +optional
	Storage CloudNativePGStorage `json:"storage,omitempty"`

	// Resources of each PostgreSQL instance's container.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
}

// CloudNativePGStorage is the volume of each CloudNativePG instance.
// +kubebuilder:validation:XValidation:rule="has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",message="storageClassName is immutable: create a new CollabCluster to use another storage class",fieldPath=".storageClassName"
type CloudNativePGStorage struct {
	// The format and the sign are one CEL rule rather than a Pattern and
	// a rule, so that every rejection reads one sentence instead of a
	// regular expression. CEL's && is false when the format check is, so
	// quantity() never reports its parse error.

	// Size of each instance's volume, a positive quantity such as 10Gi.
	// +kubebuilder:default="1Gi"
	// +kubebuilder:validation:XValidation:rule="self.matches('^[0-9]+([.][0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$') && quantity(self).isGreaterThan(quantity('0'))",message="size must be a positive quantity such as 10Gi: digits, then optionally a unit Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P or E"
	// +optional
	Size string `json:"size,omitempty"`

	// StorageClassName of the instances' PVCs; empty uses the cluster's default class.
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`
}
