package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types reported in CollabClusterStatus.Conditions.
const (
	// ConditionReady is true when every component is ready and nothing is degraded.
	ConditionReady = "Ready"
	// ConditionProgressing is true while the operator waits for children to converge.
	ConditionProgressing = "Progressing"
	// ConditionDegraded is true when the operator cannot reach the desired state
	// without a human (missing Secret, rejected child, no runtime image).
	ConditionDegraded = "Degraded"
	// ConditionRuntimeReady reports the runtime Deployment.
	ConditionRuntimeReady = "RuntimeReady"
	// ConditionRedisReady reports the managed Redis StatefulSet or the external Redis Secret.
	ConditionRedisReady = "RedisReady"
	// ConditionPostgresReady reports the managed PostgreSQL StatefulSet or the external DSN Secret.
	ConditionPostgresReady = "PostgresReady"
)

// Phase is the one-word summary shown in the Status printer column.
type Phase string

// Phases, derived from the conditions.
const (
	PhaseReady       Phase = "Ready"
	PhaseProgressing Phase = "Progressing"
	PhaseDegraded    Phase = "Degraded"
)

// AuthMode selects how the runtime authenticates WebSocket clients.
// +kubebuilder:validation:Enum=jwt;anonymous
type AuthMode string

// Authentication modes understood by tandem-runtime (TANDEM_AUTH).
const (
	AuthModeJWT       AuthMode = "jwt"
	AuthModeAnonymous AuthMode = "anonymous"
)

// AppendFsync is Redis' appendfsync setting.
// +kubebuilder:validation:Enum=always;everysec;no
type AppendFsync string

// SessionAffinityMode selects how the ingress pins a browser to one runtime pod.
// +kubebuilder:validation:Enum=cookie;none
type SessionAffinityMode string

// Session affinity modes.
const (
	SessionAffinityCookie SessionAffinityMode = "cookie"
	SessionAffinityNone   SessionAffinityMode = "none"
)

// StorageRetentionPolicy says what happens to the managed StatefulSets' PVCs.
// +kubebuilder:validation:Enum=Retain;Delete
type StorageRetentionPolicy string

// Storage retention policies, mapped onto the StatefulSet PVC retention policy.
const (
	StorageRetain StorageRetentionPolicy = "Retain"
	StorageDelete StorageRetentionPolicy = "Delete"
)

// SecretKeyRef names one key of a Secret in the CollabCluster's namespace.
type SecretKeyRef struct {
	// Name of the Secret, in the same namespace as the CollabCluster.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	Name string `json:"name"`

	// Key inside the Secret's data.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	Key string `json:"key"`
}

// CollabClusterSpec is the desired state of a Tandem collaboration cluster:
// the runtime Deployment, its Redis and PostgreSQL, and how it is exposed.
// +kubebuilder:validation:XValidation:rule="!has(self.gateway) || !has(self.ingress) || !has(self.ingress.enabled) || !self.ingress.enabled",message="spec.gateway and spec.ingress are exclusive: expose the runtime through a Gateway API HTTPRoute or an Ingress, not both (set spec.ingress.enabled: false or remove spec.gateway)"
type CollabClusterSpec struct {
	// Runtime configures the tandem-runtime Deployment.
	// +kubebuilder:default={}
	// +optional
	Runtime RuntimeSpec `json:"runtime,omitempty"`

	// Redis is the operation log and presence store: exactly one of managed or external.
	// +kubebuilder:default={managed:{}}
	// +optional
	Redis *RedisSpec `json:"redis,omitempty"`

	// Postgres is the durable document store: exactly one of managed (a
	// StatefulSet the operator runs), external (a DSN in a Secret) or
	// cloudNativePG (a CloudNativePG Cluster; needs its operator).
	// +kubebuilder:default={managed:{}}
	// +optional
	Postgres *PostgresSpec `json:"postgres,omitempty"`

	// Ingress exposes the runtime through an Ingress, with WebSocket
	// timeouts and cookie affinity for the IngressClass's controller.
	// Exclusive with gateway.
	// +kubebuilder:default={}
	// +optional
	Ingress IngressSpec `json:"ingress,omitempty"`

	// Gateway exposes the runtime through a Gateway API HTTPRoute attached
	// to a Gateway you run. Exclusive with an enabled ingress.
	// +optional
	Gateway *GatewaySpec `json:"gateway,omitempty"`

	// Monitoring has the runtime pods scraped and alerted on by a
	// prometheus-operator: a PodMonitor and a PrometheusRule.
	// +optional
	Monitoring *MonitoringSpec `json:"monitoring,omitempty"`

	// StorageRetentionPolicy applies to the PVCs of the managed Redis and
	// PostgreSQL StatefulSets when the CollabCluster is deleted or they are
	// scaled down: Retain keeps the data, Delete removes it.
	// +kubebuilder:default=Retain
	// +optional
	StorageRetentionPolicy StorageRetentionPolicy `json:"storageRetentionPolicy,omitempty"`
}

// RuntimeSpec configures the tandem-runtime pods.
type RuntimeSpec struct {
	// Image of tandem-runtime. Empty means the operator's own image
	// (RUNTIME_IMAGE), so the runtime is version-locked to the operator.
	// +optional
	Image string `json:"image,omitempty"`

	// ImagePullPolicy of the runtime container.
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// Replicas of the runtime Deployment; the scale subresource writes here.
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// Resources of the runtime container. Defaults to requests of 100m CPU and 128Mi memory.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// Auth selects how clients authenticate.
	// +kubebuilder:default={}
	// +optional
	Auth AuthSpec `json:"auth,omitempty"`

	// Flush controls how often the runtime writes the operation log to PostgreSQL.
	// +kubebuilder:default={}
	// +optional
	Flush FlushSpec `json:"flush,omitempty"`

	// Limits protect the runtime from oversized or abusive clients. Unset
	// fields keep the runtime's built-in defaults.
	// +optional
	Limits LimitsSpec `json:"limits,omitempty"`

	// History controls how much document history is kept. Unset keeps
	// every operation (the runtime's default).
	// +optional
	History HistorySpec `json:"history,omitempty"`

	// AllowedOrigins are the browser origins allowed to open WebSockets
	// (TANDEM_ALLOWED_ORIGINS). Empty means the runtime's default (same origin).
	// +optional
	AllowedOrigins []string `json:"allowedOrigins,omitempty"`

	// TerminationGracePeriodSeconds gives the runtime time to drain WebSockets
	// and flush the operation log on shutdown.
	// +kubebuilder:default=60
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=3600
	// +optional
	TerminationGracePeriodSeconds *int64 `json:"terminationGracePeriodSeconds,omitempty"`

	// ExtraEnv is appended to the runtime container's environment; it can
	// override the operator's TANDEM_* variables.
	// +optional
	ExtraEnv []corev1.EnvVar `json:"extraEnv,omitempty"`

	// NodeSelector of the runtime pods.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Tolerations of the runtime pods.
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// TopologySpreadConstraints of the runtime pods. Empty means a best-effort
	// spread across nodes (kubernetes.io/hostname, ScheduleAnyway).
	// +optional
	TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`
}

// AuthSpec selects the runtime's client authentication.
// +kubebuilder:validation:XValidation:rule="!has(self.secretRef) || !has(self.mode) || self.mode == 'jwt'",message="spec.runtime.auth.secretRef is only used with mode jwt: remove secretRef or set mode: jwt"
type AuthSpec struct {
	// Mode is jwt (clients present a token signed with the key) or anonymous.
	// +kubebuilder:default=jwt
	// +optional
	Mode AuthMode `json:"mode,omitempty"`

	// SecretRef names the JWT signing key. Empty means the operator generates
	// a random key once into the owned Secret <name>-jwt (key "key").
	// +optional
	SecretRef *SecretKeyRef `json:"secretRef,omitempty"`
}

// HistorySpec controls document history: the snapshots old revisions are
// read from and the retention compaction keeps (docs/operations.md).
// An operation is compacted away only when it is outside every window set.
type HistorySpec struct {
	// RetentionPeriod keeps operations younger than this Go duration
	// (TANDEM_HISTORY_RETENTION); unset keeps them regardless of age.
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="spec.runtime.history.retentionPeriod must be a positive duration such as 720h"
	// +optional
	RetentionPeriod *metav1.Duration `json:"retentionPeriod,omitempty"`

	// RetentionRevisions keeps at least this many of each document's latest
	// revisions (TANDEM_HISTORY_RETENTION); unset keeps them regardless of
	// number.
	// +kubebuilder:validation:Minimum=1
	// +optional
	RetentionRevisions *int64 `json:"retentionRevisions,omitempty"`

	// SnapshotInterval is how many revisions apart the text is snapshotted
	// (TANDEM_SNAPSHOT_INTERVAL); reading an old revision replays at most
	// this many operations. Unset keeps the runtime's default (500).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	SnapshotInterval *int32 `json:"snapshotInterval,omitempty"`
}

// FlushSpec controls the write-behind from Redis to PostgreSQL.
type FlushSpec struct {
	// Interval between flushes (TANDEM_FLUSH_INTERVAL), a Go duration.
	// +kubebuilder:default="500ms"
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="spec.runtime.flush.interval must be a positive duration such as 500ms"
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`

	// BatchSize is the maximum number of operations written per flush (TANDEM_FLUSH_BATCH).
	// +kubebuilder:default=500
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	BatchSize *int32 `json:"batchSize,omitempty"`
}

// LimitsSpec bounds what one client may do. Each maps to a TANDEM_MAX_* variable.
type LimitsSpec struct {
	// MaxMessageBytes is the largest WebSocket message accepted.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxMessageBytes *int64 `json:"maxMessageBytes,omitempty"`

	// MaxOpBytes is the largest single operation accepted.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxOpBytes *int64 `json:"maxOpBytes,omitempty"`

	// MaxDocBytes is the largest document size an operation may produce.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxDocBytes *int64 `json:"maxDocBytes,omitempty"`

	// OpsPerSecond is the per-connection operation rate limit.
	// +kubebuilder:validation:Minimum=1
	// +optional
	OpsPerSecond *int32 `json:"opsPerSecond,omitempty"`

	// MaxConnsPerDoc is the number of simultaneous connections per document.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxConnsPerDoc *int32 `json:"maxConnsPerDoc,omitempty"`
}

// StorageSpec is the persistent volume of a managed StatefulSet. It cannot
// change after creation because StatefulSet volume claim templates are immutable.
// +kubebuilder:validation:XValidation:rule="has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",message="storageClassName is immutable: create a new CollabCluster to use another storage class",fieldPath=".storageClassName"
// +kubebuilder:validation:XValidation:rule="!has(self.size) || !has(oldSelf.size) || quantity(self.size) == quantity(oldSelf.size)",message="size is immutable: expand the PersistentVolumeClaim directly instead",fieldPath=".size"
type StorageSpec struct {
	// The format and the sign are one CEL rule rather than a Pattern and
	// a rule, so that every rejection reads one sentence instead of a
	// regular expression. CEL's && is false when the format check is, so
	// quantity() never reports its parse error.

	// Size of the volume, a positive quantity such as 1Gi.
	// +kubebuilder:default="1Gi"
	// +kubebuilder:validation:XValidation:rule="self.matches('^[0-9]+([.][0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$') && quantity(self).isGreaterThan(quantity('0'))",message="size must be a positive quantity such as 1Gi: digits, then optionally a unit Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P or E"
	// +kubebuilder:validation:Type=string
	// +optional
	Size string `json:"size,omitempty"`

	// StorageClassName of the PVC; empty uses the cluster's default class.
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`
}

// RedisSpec chooses a managed or an external Redis.
// +kubebuilder:validation:XValidation:rule="has(self.managed) != has(self.external)",message="spec.redis: set exactly one of managed or external"
type RedisSpec struct {
	// Managed runs Redis as a one-replica StatefulSet owned by the CollabCluster.
	// +optional
	Managed *ManagedRedis `json:"managed,omitempty"`

	// External points at a Redis you run.
	// +optional
	External *ExternalRedis `json:"external,omitempty"`
}

// ManagedRedis configures the operator-run Redis.
type ManagedRedis struct {
	// Image of Redis.
	// +kubebuilder:default="redis:7.0"
	// +optional
	Image string `json:"image,omitempty"`

	// Storage of the append-only file.
	// +kubebuilder:default={}
	// +optional
	Storage StorageSpec `json:"storage,omitempty"`

	// Resources of the Redis container.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// AppendFsync is Redis' appendfsync: always, everysec or no.
	// +kubebuilder:default=everysec
	// +optional
	AppendFsync AppendFsync `json:"appendFsync,omitempty"`
}

// ExternalRedis points at a Redis outside the operator's control.
type ExternalRedis struct {
	// URLSecretRef names the Secret key holding the full Redis URL:
	// redis://[:password@]host:port/db or rediss://... for one Redis;
	// redis-cluster://[:password@]host:port[,host:port...] or
	// rediss-cluster://... for a Redis Cluster (seed nodes).
	// +required
	URLSecretRef SecretKeyRef `json:"urlSecretRef"`

	// Cluster says the Redis is a Redis Cluster, for a URL in the
	// redis:// or rediss:// form (such as one written by another
	// operator or chart): its host is then a seed node, and more seeds
	// may follow as ?addr=host:port parameters. Documents are spread over
	// the cluster's shards by hash slot. Not needed with a
	// redis-cluster:// URL.
	// +optional
	Cluster bool `json:"cluster,omitempty"`

	// WaitReplicas is how many Redis replicas must confirm each edit
	// before it is acknowledged (Redis WAIT), so that a failover loses no
	// acknowledged edit. Unset: 1 on a Redis Cluster, 0 on a single Redis.
	// Set 0 to trade that guarantee for latency; an edit that is not
	// confirmed in 2 s is retried by the client.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=5
	// +optional
	WaitReplicas *int32 `json:"waitReplicas,omitempty"`

	// TLS names the CA (and optionally a client certificate) for a
	// rediss:// or rediss-cluster:// URL. Without it a TLS URL trusts the
	// runtime image's system CAs.
	// +optional
	TLS *StoreTLS `json:"tls,omitempty"`
}

// StoreTLS names the certificates the runtime uses to connect to an
// external store over TLS. The operator mounts the Secret into the runtime
// pods and rolls them when it changes.
// +kubebuilder:validation:XValidation:rule="self.secretName.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')",message="tls.secretName must be the name of a Secret in this namespace: lowercase letters, digits, '-' and '.'",fieldPath=".secretName"
type StoreTLS struct {
	// SecretName names a Secret in the CollabCluster's namespace with the
	// key ca.crt: the CA certificate(s), PEM, that signed the server's
	// certificate. With clientCertificate it must also hold tls.crt and
	// tls.key. This is the layout cert-manager writes, so a cert-manager
	// Certificate's Secret can be named directly.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	SecretName string `json:"secretName"`

	// ClientCertificate presents the Secret's tls.crt and tls.key to the
	// server, for servers that require client certificates.
	// +optional
	ClientCertificate bool `json:"clientCertificate,omitempty"`
}

// PostgresSpec chooses a managed, an external or a CloudNativePG PostgreSQL.
// +kubebuilder:validation:XValidation:rule="(has(self.managed) ? 1 : 0) + (has(self.external) ? 1 : 0) + (has(self.cloudNativePG) ? 1 : 0) == 1",message="spec.postgres: set exactly one of managed, external or cloudNativePG"
type PostgresSpec struct {
	// Managed runs PostgreSQL as a one-replica StatefulSet owned by the CollabCluster.
	// +optional
	Managed *ManagedPostgres `json:"managed,omitempty"`

	// External points at a PostgreSQL you run.
	// +optional
	External *ExternalPostgres `json:"external,omitempty"`

	// CloudNativePG has the operator create a CloudNativePG Cluster and
	// point the runtime at its read-write Service with the credentials
	// CloudNativePG generates. Needs the CloudNativePG operator installed.
	// +optional
	CloudNativePG *CloudNativePGPostgres `json:"cloudNativePG,omitempty"`
}

// ManagedPostgres configures the operator-run PostgreSQL.
type ManagedPostgres struct {
	// Image of PostgreSQL.
	// +kubebuilder:default="postgres:15"
	// +optional
	Image string `json:"image,omitempty"`

	// Storage of the data directory.
	// +kubebuilder:default={}
	// +optional
	Storage StorageSpec `json:"storage,omitempty"`

	// Resources of the PostgreSQL container.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
}

// ExternalPostgres points at a PostgreSQL outside the operator's control.
type ExternalPostgres struct {
	// DSNSecretRef names the Secret key holding the full connection URL
	// (postgres://user:password@host:5432/db?sslmode=...).
	// +required
	DSNSecretRef SecretKeyRef `json:"dsnSecretRef"`

	// TLS names the CA (and optionally a client certificate) the runtime
	// verifies PostgreSQL's certificate against. The connection then uses
	// sslmode=verify-full (the certificate must chain to the CA and name
	// the host in the URL) unless the URL names another verifying mode
	// (verify-ca or require); a URL with sslmode=disable, allow or prefer
	// is refused by the runtime rather than left unencrypted.
	// +optional
	TLS *StoreTLS `json:"tls,omitempty"`
}

// IngressSpec exposes the runtime.
// +kubebuilder:validation:XValidation:rule="!has(self.enabled) || !self.enabled || (has(self.host) && size(self.host) > 0)",message="spec.ingress.host is required when spec.ingress.enabled is true: set the public host name"
type IngressSpec struct {
	// Enabled creates an Ingress for the runtime Service.
	// +kubebuilder:default=false
	// +optional
	Enabled bool `json:"enabled"`

	// ClassName is the IngressClass; empty uses the cluster default.
	// +optional
	ClassName *string `json:"className,omitempty"`

	// Host is the public host name; required when enabled.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Host string `json:"host,omitempty"`

	// TLSSecretName is the Secret with the certificate for Host; when set the
	// endpoint is https.
	// +optional
	TLSSecretName string `json:"tlsSecretName,omitempty"`

	// Annotations are added to the Ingress; they override the operator's.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`

	// SessionAffinity keeps a browser on one runtime pod.
	// +kubebuilder:default={}
	// +optional
	SessionAffinity SessionAffinitySpec `json:"sessionAffinity,omitempty"`

	// Controller selects whose annotations render the timeouts and the
	// affinity: auto reads the IngressClass's spec.controller (className,
	// else the default IngressClass); ingress-nginx, nginx-inc, traefik,
	// haproxy (HAProxy Technologies) or haproxy-ingress (community) name
	// one. An unknown controller under auto gets ingress-nginx's
	// annotations and a SessionAffinity condition that says so.
	// +kubebuilder:default=auto
	// +optional
	Controller IngressController `json:"controller,omitempty"`

	// ProxyTimeoutSeconds is the proxy's read, send or tunnel timeout for
	// the controller that supports one per Ingress; long so that idle
	// WebSockets are not cut.
	// +kubebuilder:default=3600
	// +kubebuilder:validation:Minimum=1
	// +optional
	ProxyTimeoutSeconds int32 `json:"proxyTimeoutSeconds,omitempty"`
}

// SessionAffinitySpec renders cookie affinity for the ingress controller or
// the HTTPRoute.
type SessionAffinitySpec struct {
	// Mode is cookie (the proxy sets a cookie naming the pod) or none.
	// +kubebuilder:default=cookie
	// +optional
	Mode SessionAffinityMode `json:"mode,omitempty"`

	// CookieName of the affinity cookie: letters, digits, '_' and '-'.
	// +kubebuilder:default=tandem-affinity
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9_-]+$')",message="cookieName must be letters, digits, '_' and '-' only, such as tandem-affinity"
	// +optional
	CookieName string `json:"cookieName,omitempty"`

	// CookieMaxAgeSeconds of the affinity cookie.
	// +kubebuilder:default=86400
	// +kubebuilder:validation:Minimum=1
	// +optional
	CookieMaxAgeSeconds int32 `json:"cookieMaxAgeSeconds,omitempty"`
}

// CollabClusterStatus is the observed state, written only by the operator.
type CollabClusterStatus struct {
	// Conditions: Ready, Progressing, Degraded, RuntimeReady, RedisReady
	// and PostgresReady always; SessionAffinity when an ingress or a
	// gateway exposes the runtime; RouteAccepted with spec.gateway;
	// MonitoringReady with spec.monitoring enabled. SessionAffinity,
	// RouteAccepted and MonitoringReady never hold Ready back.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Phase summarises the conditions: Ready, Progressing or Degraded.
	// +optional
	Phase Phase `json:"phase,omitempty"`

	// Replicas is the number of runtime pods.
	// +optional
	Replicas int32 `json:"replicas"`

	// ReadyReplicas is the number of ready runtime pods.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas"`

	// Selector is the runtime pods' label selector, for the scale subresource (HPA, KEDA).
	// +optional
	Selector string `json:"selector,omitempty"`

	// Endpoint is the URL clients use: the Ingress URL, else the Service address.
	// +optional
	Endpoint string `json:"endpoint,omitempty"`
}

// CollabCluster is a Tandem collaborative-editing cluster: runtime pods,
// Redis, PostgreSQL and their exposure.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.runtime.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=collab,categories=tandem
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.spec.runtime.replicas`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Endpoint",type=string,JSONPath=`.status.endpoint`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type CollabCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec   CollabClusterSpec   `json:"spec"`
	Status CollabClusterStatus `json:"status,omitempty"`
}

// CollabClusterList is a list of CollabClusters.
// +kubebuilder:object:root=true
type CollabClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CollabCluster `json:"items"`
}

func init() {
	SchemeBuilder.Register(&CollabCluster{}, &CollabClusterList{})
}

// StorageQuantity parses Size; the CRD pattern guarantees it parses, the
// error is for objects that bypassed validation.
func (s StorageSpec) StorageQuantity() (resource.Quantity, error) {
	return resource.ParseQuantity(s.Size)
}
