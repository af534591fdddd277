package specs

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
)

// RedisAuthSecret holds the managed Redis password and the full URL the
// runtime reads (TANDEM_REDIS_URL_FILE).
func RedisAuthSecret(cc *collabv1.CollabCluster, password string) *corev1.Secret {
	u := url.URL{Scheme: "redis", User: url.UserPassword("", password),
		Host: fmt.Sprintf("%s:%d", RedisName(cc), RedisPort), Path: "/0"}
	return secret(cc, RedisSecretName(cc), ComponentRedis, map[string][]byte{
		KeyPassword: []byte(password),
		KeyURL:      []byte(u.String()),
	})
}

// PostgresAuthSecret holds the managed PostgreSQL password and the DSN the
// runtime reads (TANDEM_POSTGRES_URL_FILE).
func PostgresAuthSecret(cc *collabv1.CollabCluster, password string) *corev1.Secret {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(PostgresUser, password),
		Host: fmt.Sprintf("%s:%d", PostgresName(cc), PostgresPort), Path: "/" + PostgresDatabase,
		RawQuery: "sslmode=disable"}
	return secret(cc, PostgresSecretName(cc), ComponentPostgres, map[string][]byte{
		KeyPassword: []byte(password),
		KeyDSN:      []byte(u.String()),
	})
}

// JWTSecret holds the generated JWT signing key (TANDEM_JWT_KEY_FILE).
func JWTSecret(cc *collabv1.CollabCluster, key string) *corev1.Secret {
	return secret(cc, JWTSecretName(cc), ComponentRuntime, map[string][]byte{KeyJWT: []byte(key)})
}

func secret(cc *collabv1.CollabCluster, name, component string, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: objectMeta(cc, name, component),
		Type:       corev1.SecretTypeOpaque,
		Data:       data,
	}
}

// SecretUse is one Secret key the runtime pods read, with why.
type SecretUse struct {
	Ref collabv1.SecretKeyRef
	// Field is the spec field that names the Secret, for error messages.
	// Empty for Secrets the operator generates.
	Field string
}

// RuntimeSecrets lists every Secret key mounted into the runtime pods, in a
// stable order: the Redis URL, the PostgreSQL DSN, the JWT key (jwt mode),
// then the TLS files of an external Redis and PostgreSQL.
func RuntimeSecrets(in *collabv1.CollabCluster) []SecretUse {
	cc := WithDefaults(in)
	var uses []SecretUse
	if ext := cc.Spec.Redis.External; ext != nil {
		uses = append(uses, SecretUse{Ref: ext.URLSecretRef, Field: "spec.redis.external.urlSecretRef"})
	} else {
		uses = append(uses, SecretUse{Ref: collabv1.SecretKeyRef{Name: RedisSecretName(cc), Key: KeyURL}})
	}
	if ext := cc.Spec.Postgres.External; ext != nil {
		uses = append(uses, SecretUse{Ref: ext.DSNSecretRef, Field: "spec.postgres.external.dsnSecretRef"})
	} else {
		uses = append(uses, SecretUse{Ref: collabv1.SecretKeyRef{Name: PostgresSecretName(cc), Key: KeyDSN}})
	}
	if cc.Spec.Runtime.Auth.Mode == collabv1.AuthModeJWT {
		if ref := cc.Spec.Runtime.Auth.SecretRef; ref != nil {
			uses = append(uses, SecretUse{Ref: *ref, Field: "spec.runtime.auth.secretRef"})
		} else {
			uses = append(uses, SecretUse{Ref: collabv1.SecretKeyRef{Name: JWTSecretName(cc), Key: KeyJWT}})
		}
	}
	tlsUses := func(t *collabv1.StoreTLS, field string) {
		if t == nil {
			return
		}
		keys := []string{KeyCACert}
		if t.ClientCertificate {
			keys = append(keys, KeyTLSCert, KeyTLSKey)
		}
		for _, k := range keys {
			uses = append(uses, SecretUse{Ref: collabv1.SecretKeyRef{Name: t.SecretName, Key: k}, Field: field})
		}
	}
	if ext := cc.Spec.Redis.External; ext != nil {
		tlsUses(ext.TLS, "spec.redis.external.tls.secretName")
	}
	if ext := cc.Spec.Postgres.External; ext != nil {
		tlsUses(ext.TLS, "spec.postgres.external.tls.secretName")
	}
	return uses
}

// ReferencedSecretNames are the user-provided Secrets a CollabCluster names,
// used to index CollabClusters so a change to one of them is reconciled.
func ReferencedSecretNames(cc *collabv1.CollabCluster) []string {
	var names []string
	for _, u := range RuntimeSecrets(cc) {
		if u.Field != "" {
			names = append(names, u.Ref.Name)
		}
	}
	sort.Strings(names)
	return slices.Compact(names)
}

// ConfigHash digests the runtime configuration and the contents of the
// Secret keys the pods read. values maps "secret/key" to the key's bytes.
func ConfigHash(config map[string]string, values map[string][]byte) string {
	h := sha256.New()
	write := func(kind, k string, v []byte) {
		// Length-prefixed so that no two different inputs hash alike.
		fmt.Fprintf(h, "%s %d:%s %d:", kind, len(k), k, len(v))
		h.Write(v)
	}
	for _, k := range sortedKeys(config) {
		write("config", k, []byte(config[k]))
	}
	for _, k := range sortedKeys(values) {
		write("secret", k, values[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
