package specs

import (
	"errors"
	"maps"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
)

// ErrNoImage means neither spec.runtime.image nor the operator's
// RUNTIME_IMAGE names the runtime image.
var ErrNoImage = errors.New("no runtime image: set spec.runtime.image or RUNTIME_IMAGE on the operator")

// Where the runtime finds the Secret files.
const (
	redisURLDir     = "/etc/tandem/redis"
	postgresURLDir  = "/etc/tandem/postgres"
	jwtKeyDir       = "/etc/tandem/jwt"
	redisTLSDir     = "/etc/tandem/tls/redis"
	postgresTLSDir  = "/etc/tandem/tls/postgres"
	secretFileName  = "value"
	runtimeBinary   = "/tandem-runtime"
	runtimeUID      = 65532 // distroless "nonroot"
	containerName   = "runtime"
	ingressNginxPfx = "nginx.ingress.kubernetes.io/"
)

// RuntimeConfig is the runtime's non-secret configuration, as the TANDEM_*
// environment variables it reads (see cmd/tandem-runtime).
func RuntimeConfig(in *collabv1.CollabCluster) map[string]string {
	cc := WithDefaults(in)
	r := cc.Spec.Runtime
	env := map[string]string{
		"TANDEM_ADDR":              ":" + strconv.Itoa(RuntimePort),
		"TANDEM_AUTH":              string(r.Auth.Mode),
		"TANDEM_REDIS_URL_FILE":    redisURLDir + "/" + secretFileName,
		"TANDEM_POSTGRES_URL_FILE": postgresURLDir + "/" + secretFileName,
		"TANDEM_FLUSH_INTERVAL":    r.Flush.Interval.Duration.String(),
		"TANDEM_FLUSH_BATCH":       strconv.Itoa(int(*r.Flush.BatchSize)),
	}
	if r.Auth.Mode == collabv1.AuthModeJWT {
		env["TANDEM_JWT_KEY_FILE"] = jwtKeyDir + "/" + secretFileName
	}
	if ext := cc.Spec.Redis.External; ext != nil {
		if ext.Cluster {
			env["TANDEM_REDIS_CLUSTER"] = "true"
		}
		if ext.WaitReplicas != nil {
			env["TANDEM_REDIS_WAIT_REPLICAS"] = strconv.Itoa(int(*ext.WaitReplicas))
		}
		tlsEnv(env, "REDIS", redisTLSDir, ext.TLS)
	}
	if ext := cc.Spec.Postgres.External; ext != nil {
		tlsEnv(env, "POSTGRES", postgresTLSDir, ext.TLS)
	}
	setInt := func(name string, v *int64) {
		if v != nil {
			env[name] = strconv.FormatInt(*v, 10)
		}
	}
	setInt32 := func(name string, v *int32) {
		if v != nil {
			env[name] = strconv.Itoa(int(*v))
		}
	}
	setInt("TANDEM_MAX_MESSAGE_BYTES", r.Limits.MaxMessageBytes)
	setInt("TANDEM_MAX_OP_BYTES", r.Limits.MaxOpBytes)
	setInt("TANDEM_MAX_DOC_BYTES", r.Limits.MaxDocBytes)
	setInt32("TANDEM_OPS_PER_SECOND", r.Limits.OpsPerSecond)
	setInt32("TANDEM_MAX_CONNS_PER_DOC", r.Limits.MaxConnsPerDoc)
	setInt32("TANDEM_SNAPSHOT_INTERVAL", r.History.SnapshotInterval)
	var retention []string
	if p := r.History.RetentionPeriod; p != nil {
		retention = append(retention, p.Duration.String())
	}
	if n := r.History.RetentionRevisions; n != nil {
		retention = append(retention, strconv.FormatInt(*n, 10))
	}
	if len(retention) > 0 {
		env["TANDEM_HISTORY_RETENTION"] = strings.Join(retention, ",")
	}
	if len(r.AllowedOrigins) > 0 {
		env["TANDEM_ALLOWED_ORIGINS"] = strings.Join(r.AllowedOrigins, ",")
	}
	if r.Auth.Mode == collabv1.AuthModeAnonymous {
		// In anonymous mode the runtime serves only IP addresses,
		// localhost and the configured host names (a DNS rebinding
		// defence): name the Service and the Ingress host.
		svc := ServiceName(cc)
		hosts := []string{svc, svc + "." + cc.Namespace, svc + "." + cc.Namespace + ".svc", svc + "." + cc.Namespace + ".svc.cluster.local"}
		if cc.Spec.Ingress.Enabled && cc.Spec.Ingress.Host != "" {
			hosts = append(hosts, cc.Spec.Ingress.Host)
		}
		hosts = append(hosts, gatewayHosts(cc)...)
		env["TANDEM_ALLOWED_HOSTS"] = strings.Join(hosts, ",")
	}
	return env
}

// tlsEnv points the runtime at the mounted TLS files of one store.
func tlsEnv(env map[string]string, store, dir string, t *collabv1.StoreTLS) {
	if t == nil {
		return
	}
	env["TANDEM_"+store+"_CA_FILE"] = dir + "/" + KeyCACert
	if t.ClientCertificate {
		env["TANDEM_"+store+"_CERT_FILE"] = dir + "/" + KeyTLSCert
		env["TANDEM_"+store+"_KEY_FILE"] = dir + "/" + KeyTLSKey
	}
}

// tlsVolume mounts the keys of a TLS Secret the runtime reads under their
// own names.
func tlsVolume(name string, t *collabv1.StoreTLS) corev1.Volume {
	items := []corev1.KeyToPath{{Key: KeyCACert, Path: KeyCACert}}
	if t.ClientCertificate {
		items = append(items, corev1.KeyToPath{Key: KeyTLSCert, Path: KeyTLSCert}, corev1.KeyToPath{Key: KeyTLSKey, Path: KeyTLSKey})
	}
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName:  t.SecretName,
		Items:       items,
		DefaultMode: ptr.To[int32](0o440),
	}}}
}

// RuntimeConfigMap carries RuntimeConfig; the pods load it with envFrom.
func RuntimeConfigMap(cc *collabv1.CollabCluster) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: objectMeta(cc, ConfigMapName(cc), ComponentRuntime),
		Data:       RuntimeConfig(cc),
	}
}

// RuntimeImage picks spec.runtime.image, else the operator's own image.
func RuntimeImage(cc *collabv1.CollabCluster, operatorImage string) (string, error) {
	if cc.Spec.Runtime.Image != "" {
		return cc.Spec.Runtime.Image, nil
	}
	if operatorImage != "" {
		return operatorImage, nil
	}
	return "", ErrNoImage
}

// RuntimeDeployment runs tandem-runtime. configHash is ConfigHash of the
// runtime configuration and the Secrets it reads.
func RuntimeDeployment(in *collabv1.CollabCluster, image, configHash string) *appsv1.Deployment {
	cc := WithDefaults(in)
	r := cc.Spec.Runtime
	selector := SelectorLabels(cc, ComponentRuntime)
	podLabels := Labels(cc, ComponentRuntime)

	resources := corev1.ResourceRequirements{Requests: corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("100m"),
		corev1.ResourceMemory: resource.MustParse("128Mi"),
	}}
	if r.Resources != nil {
		resources = *r.Resources
	}

	spread := r.TopologySpreadConstraints
	if len(spread) == 0 {
		// Best effort: prefer different nodes, but still schedule on a
		// single-node cluster.
		spread = []corev1.TopologySpreadConstraint{{
			MaxSkew:           1,
			TopologyKey:       "kubernetes.io/hostname",
			WhenUnsatisfiable: corev1.ScheduleAnyway,
			LabelSelector:     &metav1.LabelSelector{MatchLabels: selector},
		}}
	}

	volumes := []corev1.Volume{
		secretVolume("redis-url", RuntimeSecrets(cc)[0].Ref),
		secretVolume("postgres-url", RuntimeSecrets(cc)[1].Ref),
		{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	mounts := []corev1.VolumeMount{
		{Name: "redis-url", MountPath: redisURLDir, ReadOnly: true},
		{Name: "postgres-url", MountPath: postgresURLDir, ReadOnly: true},
		{Name: "tmp", MountPath: "/tmp"},
	}
	if r.Auth.Mode == collabv1.AuthModeJWT {
		volumes = append(volumes, secretVolume("jwt-key", RuntimeSecrets(cc)[2].Ref))
		mounts = append(mounts, corev1.VolumeMount{Name: "jwt-key", MountPath: jwtKeyDir, ReadOnly: true})
	}
	if ext := cc.Spec.Redis.External; ext != nil && ext.TLS != nil {
		volumes = append(volumes, tlsVolume("redis-tls", ext.TLS))
		mounts = append(mounts, corev1.VolumeMount{Name: "redis-tls", MountPath: redisTLSDir, ReadOnly: true})
	}
	if ext := cc.Spec.Postgres.External; ext != nil && ext.TLS != nil {
		volumes = append(volumes, tlsVolume("postgres-tls", ext.TLS))
		mounts = append(mounts, corev1.VolumeMount{Name: "postgres-tls", MountPath: postgresTLSDir, ReadOnly: true})
	}

	httpProbe := func(path string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: path, Port: intstr.FromString("http"),
			}},
			PeriodSeconds:    period,
			TimeoutSeconds:   2,
			FailureThreshold: failures,
		}
	}

	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: objectMeta(cc, RuntimeName(cc), ComponentRuntime),
		Spec: appsv1.DeploymentSpec{
			Replicas: r.Replicas,
			Selector: &metav1.LabelSelector{MatchLabels: selector},
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				// Never go below the desired capacity during a roll: every
				// terminating pod drops its WebSockets.
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxUnavailable: ptr.To(intstr.FromInt32(0)),
					MaxSurge:       ptr.To(intstr.FromInt32(1)),
				},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      podLabels,
					Annotations: podAnnotations(configHash),
				},
				Spec: corev1.PodSpec{
					// The runtime never talks to the Kubernetes API.
					AutomountServiceAccountToken: ptr.To(false),
					// A Service named like a TANDEM_ prefix would otherwise
					// inject TANDEM_PORT=tcp://... into the environment.
					EnableServiceLinks:            ptr.To(false),
					TerminationGracePeriodSeconds: r.TerminationGracePeriodSeconds,
					NodeSelector:                  r.NodeSelector,
					Tolerations:                   r.Tolerations,
					TopologySpreadConstraints:     spread,
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						RunAsUser:      ptr.To[int64](runtimeUID),
						RunAsGroup:     ptr.To[int64](runtimeUID),
						FSGroup:        ptr.To[int64](runtimeUID),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name:            containerName,
						Image:           image,
						ImagePullPolicy: r.ImagePullPolicy,
						Command:         []string{runtimeBinary},
						Ports: []corev1.ContainerPort{{
							Name: "http", ContainerPort: RuntimePort, Protocol: corev1.ProtocolTCP,
						}},
						EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: ConfigMapName(cc)},
						}}},
						Env:            r.ExtraEnv,
						Resources:      resources,
						VolumeMounts:   mounts,
						ReadinessProbe: httpProbe("/readyz", 5, 2),
						LivenessProbe:  httpProbe("/healthz", 10, 3),
						// The runtime drains and flushes on SIGTERM; the
						// sleep first lets Service endpoints and the ingress
						// stop sending new connections. distroless has no
						// shell, hence the sleep action rather than exec.
						Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{
							Sleep: &corev1.SleepAction{Seconds: PreStopSleepSeconds},
						}},
						SecurityContext: restrictedContainer(),
					}},
					Volumes: volumes,
				},
			},
		},
	}
}

func restrictedContainer() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		RunAsNonRoot:             ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// secretVolume mounts one Secret key as the file "value", so the runtime's
// *_FILE paths do not depend on the key name the user chose.
func secretVolume(name string, ref collabv1.SecretKeyRef) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName:  ref.Name,
		Items:       []corev1.KeyToPath{{Key: ref.Key, Path: secretFileName}},
		DefaultMode: ptr.To[int32](0o440),
	}}}
}

// podAnnotations are the runtime pods' annotations: the configuration's
// hash (a change rolls the pods) and where to scrape them.
func podAnnotations(configHash string) map[string]string {
	a := scrapeAnnotations()
	a[AnnotationConfigHash] = configHash
	return a
}

// RuntimeService is the ClusterIP Service in front of the runtime pods,
// annotated for annotation-based scrapers and for ingress controller c
// (ServiceAnnotations).
func RuntimeService(cc *collabv1.CollabCluster, c collabv1.IngressController) *corev1.Service {
	meta := objectMeta(cc, ServiceName(cc), ComponentRuntime)
	meta.Annotations = scrapeAnnotations()
	maps.Copy(meta.Annotations, ServiceAnnotations(cc, c))
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: meta,
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: SelectorLabels(cc, ComponentRuntime),
			Ports: []corev1.ServicePort{{
				Name: "http", Port: ServicePort, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP,
			}},
		},
	}
}

// RuntimeIngress exposes the runtime Service; nil when the ingress is
// disabled. controller is the resolved ingress controller (see
// IngressControllerFor); its annotations carry the WebSocket timeouts and
// the cookie affinity, and spec.ingress.annotations override them.
func RuntimeIngress(in *collabv1.CollabCluster, controller collabv1.IngressController) *networkingv1.Ingress {
	cc := WithDefaults(in)
	ing := cc.Spec.Ingress
	if !ing.Enabled {
		return nil
	}
	annotations := ingressAnnotations(cc, controller)
	for k, v := range ing.Annotations {
		annotations[k] = v
	}
	meta := objectMeta(cc, IngressName(cc), ComponentRuntime)
	meta.Annotations = annotations

	obj := &networkingv1.Ingress{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "Ingress"},
		ObjectMeta: meta,
		Spec: networkingv1.IngressSpec{
			IngressClassName: ing.ClassName,
			Rules: []networkingv1.IngressRule{{
				Host: ing.Host,
				IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
					Paths: []networkingv1.HTTPIngressPath{{
						Path:     "/",
						PathType: ptr.To(networkingv1.PathTypePrefix),
						Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
							Name: ServiceName(cc),
							Port: networkingv1.ServiceBackendPort{Name: "http"},
						}},
					}},
				}},
			}},
		},
	}
	if ing.TLSSecretName != "" {
		obj.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{ing.Host}, SecretName: ing.TLSSecretName}}
	}
	return obj
}

// RuntimePDB keeps at least replicas-1 runtime pods through voluntary
// disruptions; nil when there is at most one replica, where a PDB would
// block node drains forever.
func RuntimePDB(in *collabv1.CollabCluster) *policyv1.PodDisruptionBudget {
	cc := WithDefaults(in)
	if *cc.Spec.Runtime.Replicas <= 1 {
		return nil
	}
	return &policyv1.PodDisruptionBudget{
		TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: objectMeta(cc, PDBName(cc), ComponentRuntime),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable: ptr.To(intstr.FromInt32(1)),
			Selector:       &metav1.LabelSelector{MatchLabels: SelectorLabels(cc, ComponentRuntime)},
		},
	}
}
