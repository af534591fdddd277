// Package specs turns a CollabCluster into the Kubernetes objects that run
// it. Every function here is pure: the same CollabCluster (and the same
// Secret contents) always gives the same objects, so the builders are
// unit-tested without a cluster and the reconciler only applies their output.
package specs

import (
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
)

// FieldManager is the server-side apply field manager of every child.
const FieldManager = "tandem-operator"

// Component label values.
const (
	ComponentRuntime  = "runtime"
	ComponentRedis    = "redis"
	ComponentPostgres = "postgres"
)

// Label and annotation keys.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelComponent = "app.kubernetes.io/component"
	LabelManagedBy = "app.kubernetes.io/managed-by"

	// AnnotationConfigHash on the runtime pod template changes whenever the
	// runtime configuration or a Secret it reads changes, which rolls the pods.
	AnnotationConfigHash = "collab.tandem.dev/config-hash"

	// AnnotationAppliedHash on every child the operator applies is a
	// digest of the object it last applied. A reconcile that builds the
	// same object, and finds the child still holding every value it set,
	// sends no request at all.
	AnnotationAppliedHash = "collab.tandem.dev/applied-hash"
)

// Secret keys of the Secrets the operator generates.
const (
	KeyPassword = "password"
	KeyURL      = "url"
	KeyDSN      = "dsn"
	KeyJWT      = "key"
)

// Keys of a TLS Secret named by spec.redis.external.tls or
// spec.postgres.external.tls (the kubernetes.io/tls and cert-manager layout).
const (
	KeyCACert  = "ca.crt"
	KeyTLSCert = "tls.crt"
	KeyTLSKey  = "tls.key"
)

// Ports.
const (
	RuntimePort  = 8080
	ServicePort  = 80
	RedisPort    = 6379
	PostgresPort = 5432
)

// PostgresUser and PostgresDatabase are used by the managed PostgreSQL.
const (
	PostgresUser     = "tandem"
	PostgresDatabase = "tandem"
)

// Names of the children, all derived from the CollabCluster name.
func RuntimeName(cc *collabv1.CollabCluster) string        { return cc.Name + "-runtime" }
func ServiceName(cc *collabv1.CollabCluster) string        { return cc.Name }
func IngressName(cc *collabv1.CollabCluster) string        { return cc.Name }
func ConfigMapName(cc *collabv1.CollabCluster) string      { return cc.Name + "-runtime" }
func PDBName(cc *collabv1.CollabCluster) string            { return cc.Name + "-runtime" }
func RedisName(cc *collabv1.CollabCluster) string          { return cc.Name + "-redis" }
func PostgresName(cc *collabv1.CollabCluster) string       { return cc.Name + "-postgres" }
func RedisSecretName(cc *collabv1.CollabCluster) string    { return cc.Name + "-redis-auth" }
func PostgresSecretName(cc *collabv1.CollabCluster) string { return cc.Name + "-postgres-auth" }
func JWTSecretName(cc *collabv1.CollabCluster) string      { return cc.Name + "-jwt" }

// Labels are the labels of every object belonging to one component.
func Labels(cc *collabv1.CollabCluster, component string) map[string]string {
	l := SelectorLabels(cc, component)
	l[LabelManagedBy] = FieldManager
	return l
}

// SelectorLabels select the pods of one component. They never change over
// the life of a CollabCluster because Deployment selectors are immutable.
func SelectorLabels(cc *collabv1.CollabCluster, component string) map[string]string {
	return map[string]string{
		LabelName:      "tandem",
		LabelInstance:  cc.Name,
		LabelComponent: component,
	}
}

// Selector is the runtime pods' selector in string form, reported in
// status.selector for the scale subresource.
func Selector(cc *collabv1.CollabCluster) string {
	l := SelectorLabels(cc, ComponentRuntime)
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+l[k])
	}
	return strings.Join(parts, ",")
}

// Endpoint is the address clients use: the Ingress URL when enabled, else
// the in-cluster Service address.
func Endpoint(cc *collabv1.CollabCluster) string {
	if cc.Spec.Ingress.Enabled && cc.Spec.Ingress.Host != "" {
		scheme := "http"
		if cc.Spec.Ingress.TLSSecretName != "" {
			scheme = "https"
		}
		return scheme + "://" + cc.Spec.Ingress.Host
	}
	return fmt.Sprintf("http://%s.%s.svc:%d", ServiceName(cc), cc.Namespace, ServicePort)
}

// objectMeta is the metadata shared by every child: name, namespace, labels
// and a controller owner reference so that deleting the CollabCluster
// garbage-collects the child.
func objectMeta(cc *collabv1.CollabCluster, name, component string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:            name,
		Namespace:       cc.Namespace,
		Labels:          Labels(cc, component),
		OwnerReferences: []metav1.OwnerReference{OwnerReference(cc)},
	}
}

// OwnerReference makes cc the controlling owner of a child.
func OwnerReference(cc *collabv1.CollabCluster) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion:         collabv1.GroupVersion.String(),
		Kind:               "CollabCluster",
		Name:               cc.Name,
		UID:                cc.UID,
		Controller:         ptr.To(true),
		BlockOwnerDeletion: ptr.To(true),
	}
}
