package specs

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
)

// The official redis and postgres images both run as uid/gid 999.
const storeUID = 999

// RedisStatefulSet runs the managed Redis with the append-only file on a
// PVC; nil when Redis is external.
func RedisStatefulSet(in *collabv1.CollabCluster) (*appsv1.StatefulSet, error) {
	cc := WithDefaults(in)
	m := cc.Spec.Redis.Managed
	if m == nil {
		return nil, nil
	}
	passwordEnv := func(name string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: RedisSecretName(cc)},
			Key:                  KeyPassword,
		}}}
	}
	c := corev1.Container{
		Name:    "redis",
		Image:   m.Image,
		Command: []string{"redis-server"},
		// $(REDIS_PASSWORD) is expanded by the kubelet, so the password
		// never appears in the object.
		Args: []string{
			"--port", fmt.Sprint(RedisPort),
			"--dir", "/data",
			"--appendonly", "yes",
			"--appendfsync", string(m.AppendFsync),
			"--requirepass", "$(REDIS_PASSWORD)",
		},
		// REDISCLI_AUTH lets the probe's redis-cli authenticate without
		// the password on its command line.
		Env:   []corev1.EnvVar{passwordEnv("REDIS_PASSWORD"), passwordEnv("REDISCLI_AUTH")},
		Ports: []corev1.ContainerPort{{Name: "redis", ContainerPort: RedisPort, Protocol: corev1.ProtocolTCP}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{
				Command: []string{"sh", "-c", "redis-cli -h 127.0.0.1 ping | grep -q PONG"},
			}},
			PeriodSeconds: 5, TimeoutSeconds: 3, FailureThreshold: 3,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("redis")}},
			PeriodSeconds: 10, TimeoutSeconds: 3, FailureThreshold: 6, InitialDelaySeconds: 10,
		},
		VolumeMounts:    []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
		Resources:       resourcesOr(m.Resources, "50m", "64Mi"),
		SecurityContext: restrictedContainer(),
	}
	return statefulSet(cc, RedisName(cc), ComponentRedis, c, m.Storage, nil)
}

// PostgresStatefulSet runs the managed PostgreSQL; nil when it is external.
func PostgresStatefulSet(in *collabv1.CollabCluster) (*appsv1.StatefulSet, error) {
	cc := WithDefaults(in)
	m := cc.Spec.Postgres.Managed
	if m == nil {
		return nil, nil
	}
	isReady := []string{"pg_isready", "-h", "127.0.0.1", "-U", PostgresUser, "-d", PostgresDatabase}
	c := corev1.Container{
		Name:  "postgres",
		Image: m.Image,
		Env: []corev1.EnvVar{
			{Name: "POSTGRES_USER", Value: PostgresUser},
			{Name: "POSTGRES_DB", Value: PostgresDatabase},
			{Name: "POSTGRES_PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: PostgresSecretName(cc)},
				Key:                  KeyPassword,
			}}},
			// A subdirectory, because initdb refuses a mount point that
			// holds lost+found.
			{Name: "PGDATA", Value: "/var/lib/postgresql/data/pgdata"},
		},
		Ports: []corev1.ContainerPort{{Name: "postgres", ContainerPort: PostgresPort, Protocol: corev1.ProtocolTCP}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: isReady}},
			PeriodSeconds: 5, TimeoutSeconds: 3, FailureThreshold: 3,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: isReady}},
			PeriodSeconds: 10, TimeoutSeconds: 5, FailureThreshold: 6, InitialDelaySeconds: 30,
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: "data", MountPath: "/var/lib/postgresql/data"},
			// The root file system is read-only; PostgreSQL needs these.
			{Name: "run", MountPath: "/var/run/postgresql"},
			{Name: "tmp", MountPath: "/tmp"},
		},
		Resources:       resourcesOr(m.Resources, "100m", "256Mi"),
		SecurityContext: restrictedContainer(),
	}
	extra := []corev1.Volume{
		{Name: "run", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	return statefulSet(cc, PostgresName(cc), ComponentPostgres, c, m.Storage, extra)
}

func resourcesOr(r *corev1.ResourceRequirements, cpu, memory string) corev1.ResourceRequirements {
	if r != nil {
		return *r
	}
	return corev1.ResourceRequirements{Requests: corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse(cpu),
		corev1.ResourceMemory: resource.MustParse(memory),
	}}
}

func statefulSet(cc *collabv1.CollabCluster, name, component string, c corev1.Container,
	storage collabv1.StorageSpec, volumes []corev1.Volume) (*appsv1.StatefulSet, error) {
	size, err := storage.StorageQuantity()
	if err != nil {
		return nil, fmt.Errorf("%s storage size %q: %w", component, storage.Size, err)
	}
	policy := appsv1.RetainPersistentVolumeClaimRetentionPolicyType
	if cc.Spec.StorageRetentionPolicy == collabv1.StorageDelete {
		policy = appsv1.DeletePersistentVolumeClaimRetentionPolicyType
	}
	return &appsv1.StatefulSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "StatefulSet"},
		ObjectMeta: objectMeta(cc, name, component),
		Spec: appsv1.StatefulSetSpec{
			Replicas:    ptr.To[int32](1),
			ServiceName: name,
			Selector:    &metav1.LabelSelector{MatchLabels: SelectorLabels(cc, component)},
			PersistentVolumeClaimRetentionPolicy: &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
				WhenDeleted: policy,
				WhenScaled:  policy,
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: Labels(cc, component)},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken:  ptr.To(false),
					EnableServiceLinks:            ptr.To(false),
					TerminationGracePeriodSeconds: ptr.To[int64](30),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						RunAsUser:      ptr.To[int64](storeUID),
						RunAsGroup:     ptr.To[int64](storeUID),
						FSGroup:        ptr.To[int64](storeUID),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{c},
					Volumes:    volumes,
				},
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolumeClaim"},
				ObjectMeta: metav1.ObjectMeta{Name: "data", Labels: Labels(cc, component)},
				Spec: corev1.PersistentVolumeClaimSpec{
					AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					StorageClassName: storage.StorageClassName,
					Resources: corev1.VolumeResourceRequirements{
						Requests: corev1.ResourceList{corev1.ResourceStorage: size},
					},
				},
			}},
		},
	}, nil
}

// StoreService is the headless Service of a managed store; its DNS name is
// the host in the URLs of RedisAuthSecret and PostgresAuthSecret.
func StoreService(cc *collabv1.CollabCluster, component string) *corev1.Service {
	name, port := RedisName(cc), int32(RedisPort)
	if component == ComponentPostgres {
		name, port = PostgresName(cc), PostgresPort
	}
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: objectMeta(cc, name, component),
		Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone,
			Selector:  SelectorLabels(cc, component),
			Ports: []corev1.ServicePort{{
				Name: component, Port: port, TargetPort: intstr.FromString(component), Protocol: corev1.ProtocolTCP,
			}},
		},
	}
}

// StoreNetworkPolicy admits connections to a managed store only from the
// runtime pods of the same CollabCluster.
func StoreNetworkPolicy(cc *collabv1.CollabCluster, component string) *networkingv1.NetworkPolicy {
	name, port := RedisName(cc), int32(RedisPort)
	if component == ComponentPostgres {
		name, port = PostgresName(cc), PostgresPort
	}
	return &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: objectMeta(cc, name, component),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: SelectorLabels(cc, component)},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{
					PodSelector: &metav1.LabelSelector{MatchLabels: SelectorLabels(cc, ComponentRuntime)},
				}},
				Ports: []networkingv1.NetworkPolicyPort{{
					Protocol: ptr.To(corev1.ProtocolTCP),
					Port:     ptr.To(intstr.FromInt32(port)),
				}},
			}},
		},
	}
}
