package specs

import (
	"sigs.k8s.io/controller-runtime/pkg/client"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
)

// Inputs is everything besides the CollabCluster that the children depend on.
type Inputs struct {
	// OperatorImage is the operator's RUNTIME_IMAGE, used when
	// spec.runtime.image is empty.
	OperatorImage string
	// Generated holds the generated credentials by Secret name
	// (RedisSecretName, PostgresSecretName, JWTSecretName) and key.
	Generated map[string]map[string][]byte
	// SecretValues maps "secret/key" to the bytes of every key in
	// RuntimeSecrets; it feeds the pod template hash.
	SecretValues map[string][]byte
	// IngressController is the controller the Ingress annotations are
	// for, resolved from spec.ingress.controller and the IngressClass;
	// empty renders ingress-nginx's.
	IngressController collabv1.IngressController
	// HTTPRoute is what the installed HTTPRoute CRD supports.
	HTTPRoute HTTPRouteFeatures
}

// SecretValueKey is the key of Inputs.SecretValues for one Secret key.
func SecretValueKey(ref collabv1.SecretKeyRef) string { return ref.Name + "/" + ref.Key }

// RuntimeConfigHash is the pod template hash for cc given the Secret values.
func RuntimeConfigHash(cc *collabv1.CollabCluster, secretValues map[string][]byte) string {
	return ConfigHash(RuntimeConfig(cc), secretValues)
}

// All builds every child of cc in reconcile order; objects that are not
// wanted (external stores, disabled ingress, a PDB for one replica) are
// absent. The reconciler applies the same builders phase by phase; All is
// what the golden files record.
func All(in *collabv1.CollabCluster, inputs Inputs) ([]client.Object, error) {
	cc := WithDefaults(in)
	var objs []client.Object
	if cc.Spec.Redis.Managed != nil {
		objs = append(objs, RedisAuthSecret(cc, string(inputs.Generated[RedisSecretName(cc)][KeyPassword])))
	}
	if cc.Spec.Postgres.Managed != nil {
		objs = append(objs, PostgresAuthSecret(cc, string(inputs.Generated[PostgresSecretName(cc)][KeyPassword])))
	}
	if cc.Spec.Runtime.Auth.Mode == collabv1.AuthModeJWT && cc.Spec.Runtime.Auth.SecretRef == nil {
		objs = append(objs, JWTSecret(cc, string(inputs.Generated[JWTSecretName(cc)][KeyJWT])))
	}
	pg, err := PostgresStatefulSet(cc)
	if err != nil {
		return nil, err
	}
	if pg != nil {
		objs = append(objs, StoreService(cc, ComponentPostgres), pg)
	}
	cnpg, err := CNPGCluster(cc)
	if err != nil {
		return nil, err
	}
	if cnpg != nil {
		objs = append(objs, cnpg)
	}
	redis, err := RedisStatefulSet(cc)
	if err != nil {
		return nil, err
	}
	if redis != nil {
		objs = append(objs, StoreService(cc, ComponentRedis), redis)
	}
	image, err := RuntimeImage(cc, inputs.OperatorImage)
	if err != nil {
		return nil, err
	}
	svc := RuntimeService(cc, inputs.IngressController)
	objs = append(objs,
		RuntimeConfigMap(cc),
		RuntimeDeployment(cc, image, RuntimeConfigHash(cc, inputs.SecretValues)),
		svc,
	)
	if ing := RuntimeIngress(cc, inputs.IngressController); ing != nil {
		objs = append(objs, ing)
	}
	if route := RuntimeHTTPRoute(cc, inputs.HTTPRoute); route != nil {
		objs = append(objs, route)
	}
	if pdb := RuntimePDB(cc); pdb != nil {
		objs = append(objs, pdb)
	}
	if pm := RuntimePodMonitor(cc); pm != nil {
		objs = append(objs, pm)
	}
	if rule := RuntimePrometheusRule(cc); rule != nil {
		objs = append(objs, rule)
	}
	if pg != nil {
		objs = append(objs, StoreNetworkPolicy(cc, ComponentPostgres))
	}
	if redis != nil {
		objs = append(objs, StoreNetworkPolicy(cc, ComponentRedis))
	}
	return objs, nil
}
