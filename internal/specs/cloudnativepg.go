package specs

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
)

// CNPGClusterGVK is CloudNativePG's Cluster.
var CNPGClusterGVK = schema.GroupVersionKind{Group: "postgresql.cnpg.io", Version: "v1", Kind: "Cluster"}

// CNPGClusterCRDName is the CustomResourceDefinition that must exist for
// spec.postgres.cloudNativePG.
const CNPGClusterCRDName = "clusters.postgresql.cnpg.io"

// CNPGURIKey is the key of CloudNativePG's application Secret
// (<cluster>-app) holding postgresql://user:password@<cluster>-rw.<namespace>:5432/db,
// the read-write Service, which always leads to the primary.
const CNPGURIKey = "uri"

// CNPGClusterName is the CloudNativePG Cluster of cc. CloudNativePG names
// its Services <name>-rw, -ro, -r and its application Secret <name>-app.
func CNPGClusterName(cc *collabv1.CollabCluster) string { return PostgresName(cc) }

// CNPGAppSecretName is the Secret CloudNativePG generates for the
// application's database owner.
func CNPGAppSecretName(cc *collabv1.CollabCluster) string { return CNPGClusterName(cc) + "-app" }

// CNPGRWServiceName is CloudNativePG's read-write Service (the primary).
func CNPGRWServiceName(cc *collabv1.CollabCluster) string { return CNPGClusterName(cc) + "-rw" }

// CNPGCluster is the CloudNativePG Cluster for spec.postgres.cloudNativePG;
// nil when PostgreSQL is not run by CloudNativePG. It bootstraps the
// database tandem owned by the user tandem, so the application Secret
// names both.
func CNPGCluster(in *collabv1.CollabCluster) (*unstructured.Unstructured, error) {
	cc := WithDefaults(in)
	c := cc.Spec.Postgres.CloudNativePG
	if c == nil {
		return nil, nil
	}
	storage := map[string]any{"size": c.Storage.Size}
	if c.Storage.StorageClassName != nil {
		storage["storageClass"] = *c.Storage.StorageClassName
	}
	spec := map[string]any{
		"instances": int64(*c.Instances),
		"storage":   storage,
		"bootstrap": map[string]any{"initdb": map[string]any{
			"database": PostgresDatabase,
			"owner":    PostgresUser,
		}},
		// Pods carry the CollabCluster's labels, so the runtime's
		// NetworkPolicies and people's selectors find them.
		"inheritedMetadata": map[string]any{"labels": toAny(Labels(cc, ComponentPostgres))},
	}
	if c.ImageName != "" {
		spec["imageName"] = c.ImageName
	}
	res := resourcesOr(c.Resources, "100m", "256Mi")
	r, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&res)
	if err != nil {
		return nil, fmt.Errorf("convert CloudNativePG resources: %w", err)
	}
	spec["resources"] = r
	return unstructuredChild(cc, CNPGClusterGVK, CNPGClusterName(cc), ComponentPostgres, spec), nil
}

func toAny(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
