package specs

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// loadSample reads the CollabCluster document of a file in config/samples.
func loadSample(t *testing.T, file string) *collabv1.CollabCluster {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "config", "samples", file))
	if err != nil {
		t.Fatalf("read sample: %v", err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	for {
		var cc collabv1.CollabCluster
		if err := dec.Decode(&cc); err != nil {
			t.Fatalf("no CollabCluster in %s: %v", file, err)
		}
		if cc.Kind == "CollabCluster" {
			cc.Namespace = "team-a"
			cc.UID = types.UID("00000000-0000-0000-0000-000000000001")
			return &cc
		}
	}
}

func fixedInputs(cc *collabv1.CollabCluster) Inputs {
	values := map[string][]byte{}
	for _, u := range RuntimeSecrets(cc) {
		values[SecretValueKey(u.Ref)] = []byte("value-of-" + u.Ref.Name)
	}
	return Inputs{
		OperatorImage: "ghcr.io/tandem-dev/tandem:v0.1.0",
		Generated: map[string]map[string][]byte{
			RedisSecretName(cc):    {KeyPassword: []byte("redis-password")},
			PostgresSecretName(cc): {KeyPassword: []byte("postgres-password")},
			JWTSecretName(cc):      {KeyJWT: []byte("jwt-signing-key")},
		},
		SecretValues: values,
	}
}

func TestGolden(t *testing.T) {
	tests := []struct {
		name   string
		sample string
		mutate func(*collabv1.CollabCluster)
		inputs func(*Inputs)
	}{
		{name: "managed", sample: "collab_v1alpha1_collabcluster.yaml"},
		// spec.gateway and CloudNativePG, on the experimental channel's
		// HTTPRoute (timeouts and sessionPersistence)...
		{name: "gateway-experimental-cloudnativepg", sample: "collab_v1alpha1_collabcluster_engines.yaml",
			inputs: func(in *Inputs) {
				in.HTTPRoute = HTTPRouteFeatures{Timeouts: true, SessionPersistence: true}
			}},
		// ...and on the standard channel's, which has no sessionPersistence;
		// anonymous mode lists the Gateway host names as served hosts.
		{name: "gateway-standard-anonymous", sample: "collab_v1alpha1_collabcluster_engines.yaml",
			mutate: func(cc *collabv1.CollabCluster) {
				cc.Spec.Runtime.Auth.Mode = collabv1.AuthModeAnonymous
				cc.Spec.Gateway.Hostnames = append(cc.Spec.Gateway.Hostnames, "*.docs.example.test")
				cc.Spec.Gateway.ParentRefs[0].Port = ptr.To[int32](443)
				cc.Spec.Postgres.CloudNativePG.ImageName = "ghcr.io/cloudnative-pg/postgresql:17"
				cc.Spec.Postgres.CloudNativePG.Storage.StorageClassName = ptr.To("fast")
				cc.Spec.Postgres.CloudNativePG.Resources = nil
			},
			inputs: func(in *Inputs) { in.HTTPRoute = HTTPRouteFeatures{Timeouts: true} }},
		{name: "ingress-nginx-inc", sample: "collab_v1alpha1_collabcluster.yaml",
			inputs: func(in *Inputs) { in.IngressController = collabv1.IngressControllerNGINXInc }},
		{name: "ingress-traefik", sample: "collab_v1alpha1_collabcluster.yaml",
			inputs: func(in *Inputs) { in.IngressController = collabv1.IngressControllerTraefik }},
		{name: "ingress-haproxy", sample: "collab_v1alpha1_collabcluster.yaml",
			inputs: func(in *Inputs) { in.IngressController = collabv1.IngressControllerHAProxy }},
		{name: "ingress-haproxy-ingress-no-affinity", sample: "collab_v1alpha1_collabcluster.yaml",
			mutate: func(cc *collabv1.CollabCluster) {
				cc.Spec.Ingress.SessionAffinity.Mode = collabv1.SessionAffinityNone
			},
			inputs: func(in *Inputs) { in.IngressController = collabv1.IngressControllerHAProxyIngress }},
		{name: "external", sample: "collab_v1alpha1_collabcluster_external.yaml"},
		// spec.monitoring: a PodMonitor and a PrometheusRule with the
		// Prometheus's selector label and one tuned threshold.
		{name: "monitoring", sample: "collab_v1alpha1_collabcluster.yaml",
			mutate: func(cc *collabv1.CollabCluster) {
				cc.Spec.Monitoring = &collabv1.MonitoringSpec{
					Labels: map[string]string{"release": "kube-prometheus-stack"},
					Alerts: collabv1.AlertsSpec{FlushStalledSeconds: ptr.To[int32](300)},
				}
			}},
		{name: "external-redis-cluster-tls", sample: "collab_v1alpha1_collabcluster_external.yaml",
			mutate: func(cc *collabv1.CollabCluster) {
				cc.Spec.Redis.External.Cluster = true
				cc.Spec.Redis.External.WaitReplicas = ptr.To[int32](1)
				cc.Spec.Redis.External.TLS = &collabv1.StoreTLS{SecretName: "notes-redis-tls", ClientCertificate: true}
				cc.Spec.Postgres.External.TLS = &collabv1.StoreTLS{SecretName: "notes-postgres-ca"}
			}},
		// PostgreSQL that wants a client certificate (clientcert=verify-full):
		// the Secret's tls.crt and tls.key are mounted next to ca.crt.
		{name: "external-postgres-client-certificate", sample: "collab_v1alpha1_collabcluster_external.yaml",
			mutate: func(cc *collabv1.CollabCluster) {
				cc.Spec.Postgres.External.TLS = &collabv1.StoreTLS{SecretName: "notes-postgres-tls", ClientCertificate: true}
			}},
		{name: "single-replica-tls-no-affinity-delete", sample: "collab_v1alpha1_collabcluster.yaml",
			mutate: func(cc *collabv1.CollabCluster) {
				cc.Spec.Runtime.Replicas = ptr.To[int32](1)
				cc.Spec.Runtime.Image = "registry.example/tandem:dev"
				cc.Spec.Ingress.TLSSecretName = "docs-tls"
				cc.Spec.Ingress.SessionAffinity.Mode = collabv1.SessionAffinityNone
				cc.Spec.Ingress.Annotations = map[string]string{"nginx.ingress.kubernetes.io/proxy-read-timeout": "7200"}
				cc.Spec.StorageRetentionPolicy = collabv1.StorageDelete
				cc.Spec.Redis.Managed.Storage.StorageClassName = ptr.To("fast")
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cc := loadSample(t, tc.sample)
			if tc.mutate != nil {
				tc.mutate(cc)
			}
			inputs := fixedInputs(cc)
			if tc.inputs != nil {
				tc.inputs(&inputs)
			}
			objs, err := All(cc, inputs)
			if err != nil {
				t.Fatalf("All: %v", err)
			}
			var out bytes.Buffer
			for _, o := range objs {
				b, err := yaml.Marshal(o)
				if err != nil {
					t.Fatalf("marshal %T: %v", o, err)
				}
				out.WriteString("---\n")
				out.Write(b)
			}
			golden := filepath.Join("testdata", tc.name+".golden.yaml")
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("read golden (run go test ./internal/specs -update): %v", err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("objects differ from %s; rerun with -update and review the diff:\n%s", golden, out.String())
			}
		})
	}
}

// config/prometheus/runtime-alerts.yaml is the rule group the operator
// writes into each CollabCluster's PrometheusRule, for a CollabCluster
// "notes" in namespace "tandem" with the default thresholds. promtool
// tests it (test/alerts), so the rules the operator writes are the rules
// that are tested.
func TestRuntimeAlertsFile(t *testing.T) {
	cc := &collabv1.CollabCluster{}
	cc.Name, cc.Namespace = "notes", "tandem"
	cc.Spec.Monitoring = &collabv1.MonitoringSpec{}
	b, err := yaml.Marshal(map[string]any{"groups": []any{RuntimeRuleGroup(cc)}})
	if err != nil {
		t.Fatal(err)
	}
	out := append([]byte("# Generated by go test ./internal/specs -update from RuntimeRuleGroup: the\n"+
		"# alerts the operator writes into a CollabCluster's PrometheusRule, here for\n"+
		"# CollabCluster tandem/notes with the default thresholds. DO NOT EDIT.\n"), b...)
	file := filepath.Join("..", "..", "config", "prometheus", "runtime-alerts.yaml")
	if *update {
		if err := os.WriteFile(file, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("read %s (run go test ./internal/specs -update): %v", file, err)
	}
	if !bytes.Equal(out, want) {
		t.Errorf("%s is stale; rerun go test ./internal/specs -update", file)
	}
}

// Monitoring children exist only when asked for, and the alerts can be
// turned off on their own.
func TestMonitoringChildren(t *testing.T) {
	tests := []struct {
		name            string
		monitoring      *collabv1.MonitoringSpec
		monitor, alerts bool
	}{
		{"absent", nil, false, false},
		{"defaults", &collabv1.MonitoringSpec{}, true, true},
		{"disabled", &collabv1.MonitoringSpec{Enabled: ptr.To(false)}, false, false},
		{"alerts off", &collabv1.MonitoringSpec{Alerts: collabv1.AlertsSpec{Enabled: ptr.To(false)}}, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cc := loadSample(t, "collab_v1alpha1_collabcluster.yaml")
			cc.Spec.Monitoring = tc.monitoring
			if got := RuntimePodMonitor(cc) != nil; got != tc.monitor {
				t.Errorf("PodMonitor built = %v, want %v", got, tc.monitor)
			}
			if got := RuntimePrometheusRule(cc) != nil; got != tc.alerts {
				t.Errorf("PrometheusRule built = %v, want %v", got, tc.alerts)
			}
		})
	}
}

// Scraping works in a namespace with no default-deny policy because
// nothing the operator writes restricts traffic to the runtime pods: no
// NetworkPolicy of its own selects them. The managed sample writes the
// store policies, so the check is not vacuous; and the PodMonitor selects
// the pods the Deployment runs.
func TestNoNetworkPolicySelectsRuntimePods(t *testing.T) {
	policies := 0
	for _, sample := range []string{"collab_v1alpha1_collabcluster.yaml", "collab_v1alpha1_collabcluster_external.yaml",
		"collab_v1alpha1_collabcluster_engines.yaml"} {
		t.Run(sample, func(t *testing.T) {
			cc := loadSample(t, sample)
			cc.Spec.Monitoring = &collabv1.MonitoringSpec{}
			objs, err := All(cc, fixedInputs(cc))
			if err != nil {
				t.Fatal(err)
			}
			var pods labels.Set
			for _, o := range objs {
				if d, ok := o.(*appsv1.Deployment); ok && d.Name == RuntimeName(cc) {
					pods = d.Spec.Template.Labels
				}
			}
			if pods == nil {
				t.Fatal("no runtime Deployment")
			}
			for _, o := range objs {
				switch o := o.(type) {
				case *networkingv1.NetworkPolicy:
					policies++
					sel, err := metav1.LabelSelectorAsSelector(&o.Spec.PodSelector)
					if err != nil {
						t.Fatalf("NetworkPolicy %s: %v", o.Name, err)
					}
					if sel.Matches(pods) {
						t.Errorf("NetworkPolicy %s selects the runtime pods (%v): Prometheus could no longer scrape them", o.Name, pods)
					}
				case *unstructured.Unstructured:
					if o.GroupVersionKind() != PodMonitorGVK {
						continue
					}
					ml, _, _ := unstructured.NestedStringMap(o.Object, "spec", "selector", "matchLabels")
					if len(ml) == 0 || !labels.SelectorFromSet(ml).Matches(pods) {
						t.Errorf("PodMonitor selects %v; the runtime pods are labelled %v", ml, pods)
					}
				}
			}
		})
	}
	if policies == 0 {
		t.Error("no sample wrote a NetworkPolicy; the check above checked nothing")
	}
}

func TestChildrenPresence(t *testing.T) {
	tests := []struct {
		name      string
		sample    string
		mutate    func(*collabv1.CollabCluster)
		wantKinds []string
	}{
		{name: "managed", sample: "collab_v1alpha1_collabcluster.yaml", wantKinds: []string{
			"Secret", "Secret", "Secret", "Service", "StatefulSet", "Service", "StatefulSet",
			"ConfigMap", "Deployment", "Service", "Ingress", "PodDisruptionBudget", "NetworkPolicy", "NetworkPolicy"}},
		{name: "external has no StatefulSet", sample: "collab_v1alpha1_collabcluster_external.yaml", wantKinds: []string{
			"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}},
		{name: "empty spec defaults to managed stores", sample: "collab_v1alpha1_collabcluster.yaml",
			mutate: func(cc *collabv1.CollabCluster) { cc.Spec = collabv1.CollabClusterSpec{} },
			wantKinds: []string{"Secret", "Secret", "Secret", "Service", "StatefulSet", "Service", "StatefulSet",
				"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "NetworkPolicy"}},
		{name: "one replica has no PDB, no ingress", sample: "collab_v1alpha1_collabcluster_external.yaml",
			mutate:    func(cc *collabv1.CollabCluster) { cc.Spec.Runtime.Replicas = ptr.To[int32](1) },
			wantKinds: []string{"ConfigMap", "Deployment", "Service"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cc := loadSample(t, tc.sample)
			if tc.mutate != nil {
				tc.mutate(cc)
			}
			objs, err := All(cc, fixedInputs(cc))
			if err != nil {
				t.Fatal(err)
			}
			var kinds []string
			for _, o := range objs {
				kinds = append(kinds, o.GetObjectKind().GroupVersionKind().Kind)
				refs := o.GetOwnerReferences()
				if len(refs) != 1 || refs[0].UID != cc.UID || !ptr.Deref(refs[0].Controller, false) {
					t.Errorf("%T %s: owner references %+v, want one controller reference to the CollabCluster", o, o.GetName(), refs)
				}
			}
			if got, want := strings.Join(kinds, ","), strings.Join(tc.wantKinds, ","); got != want {
				t.Errorf("kinds = %s, want %s", got, want)
			}
		})
	}
}

func TestConfigHash(t *testing.T) {
	cfg := map[string]string{"TANDEM_AUTH": "jwt"}
	base := ConfigHash(cfg, map[string][]byte{"a/key": []byte("1")})
	tests := []struct {
		name   string
		cfg    map[string]string
		values map[string][]byte
		same   bool
	}{
		{"identical input", cfg, map[string][]byte{"a/key": []byte("1")}, true},
		{"secret value changed", cfg, map[string][]byte{"a/key": []byte("2")}, false},
		{"config changed", map[string]string{"TANDEM_AUTH": "anonymous"}, map[string][]byte{"a/key": []byte("1")}, false},
		{"boundary moved between key and value", cfg, map[string][]byte{"a/ke": []byte("y1")}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ConfigHash(tc.cfg, tc.values); (got == base) != tc.same {
				t.Errorf("hash %s vs base %s: same=%v, want %v", got, base, got == base, tc.same)
			}
		})
	}
}

func TestRuntimeImage(t *testing.T) {
	tests := []struct {
		spec, operator, want string
		err                  error
	}{
		{"", "op:1", "op:1", nil},
		{"mine:2", "op:1", "mine:2", nil},
		{"", "", "", ErrNoImage},
	}
	for _, tc := range tests {
		cc := &collabv1.CollabCluster{Spec: collabv1.CollabClusterSpec{Runtime: collabv1.RuntimeSpec{Image: tc.spec}}}
		got, err := RuntimeImage(cc, tc.operator)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("RuntimeImage(%q, %q) = %q, %v; want %q, %v", tc.spec, tc.operator, got, err, tc.want, tc.err)
		}
	}
}

func TestEndpointAndSelector(t *testing.T) {
	cc := &collabv1.CollabCluster{}
	cc.Name, cc.Namespace = "docs", "ns"
	tests := []struct {
		name string
		ing  collabv1.IngressSpec
		want string
	}{
		{"service when ingress disabled", collabv1.IngressSpec{Host: "ignored.example"}, "http://docs.ns.svc:80"},
		{"http ingress", collabv1.IngressSpec{Enabled: true, Host: "d.example"}, "http://d.example"},
		{"https ingress", collabv1.IngressSpec{Enabled: true, Host: "d.example", TLSSecretName: "t"}, "https://d.example"},
	}
	for _, tc := range tests {
		cc.Spec.Ingress = tc.ing
		if got := Endpoint(cc); got != tc.want {
			t.Errorf("%s: Endpoint = %q, want %q", tc.name, got, tc.want)
		}
	}
	want := "app.kubernetes.io/component=runtime,app.kubernetes.io/instance=docs,app.kubernetes.io/name=tandem"
	if got := Selector(cc); got != want {
		t.Errorf("Selector = %q, want %q", got, want)
	}
}

func TestRuntimePodHardening(t *testing.T) {
	cc := loadSample(t, "collab_v1alpha1_collabcluster.yaml")
	d := RuntimeDeployment(cc, "img", "h")
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	sc := c.SecurityContext
	checks := []struct {
		name string
		ok   bool
	}{
		{"non-root pod", ptr.Deref(pod.SecurityContext.RunAsNonRoot, false)},
		{"RuntimeDefault seccomp", pod.SecurityContext.SeccompProfile.Type == "RuntimeDefault"},
		{"read-only root fs", ptr.Deref(sc.ReadOnlyRootFilesystem, false)},
		{"no privilege escalation", !ptr.Deref(sc.AllowPrivilegeEscalation, true)},
		{"all capabilities dropped", len(sc.Capabilities.Drop) == 1 && sc.Capabilities.Drop[0] == "ALL"},
		{"preStop sleep", c.Lifecycle.PreStop.Sleep != nil && c.Lifecycle.PreStop.Sleep.Seconds > 0},
		{"grace period covers preStop", *pod.TerminationGracePeriodSeconds > c.Lifecycle.PreStop.Sleep.Seconds},
		{"readiness on /readyz", c.ReadinessProbe.HTTPGet.Path == "/readyz"},
		{"liveness on /healthz", c.LivenessProbe.HTTPGet.Path == "/healthz"},
		{"resource requests", !c.Resources.Requests.Cpu().IsZero() && !c.Resources.Requests.Memory().IsZero()},
		{"spread across nodes", len(pod.TopologySpreadConstraints) == 1 && pod.TopologySpreadConstraints[0].TopologyKey == "kubernetes.io/hostname"},
		{"hash annotation", d.Spec.Template.Annotations[AnnotationConfigHash] == "h"},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("runtime pod: %s not satisfied", c.name)
		}
	}
}

// An anonymous runtime serves only the host names it is told (DNS
// rebinding defence): the operator names the Service and the Ingress host.
func TestAllowedHostsInAnonymousMode(t *testing.T) {
	tests := []struct {
		name    string
		mode    collabv1.AuthMode
		ingress string
		want    string
	}{
		{"jwt", collabv1.AuthModeJWT, "notes.example.test", ""},
		{"anonymous", collabv1.AuthModeAnonymous, "", "notes,notes.team-a,notes.team-a.svc,notes.team-a.svc.cluster.local"},
		{"anonymous with ingress", collabv1.AuthModeAnonymous, "notes.example.test", "notes,notes.team-a,notes.team-a.svc,notes.team-a.svc.cluster.local,notes.example.test"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cc := loadSample(t, "collab_v1alpha1_collabcluster_external.yaml")
			cc.Spec.Runtime.Auth.Mode = tc.mode
			cc.Spec.Ingress.Enabled = tc.ingress != ""
			cc.Spec.Ingress.Host = tc.ingress
			if got := RuntimeConfig(cc)["TANDEM_ALLOWED_HOSTS"]; got != tc.want {
				t.Fatalf("TANDEM_ALLOWED_HOSTS = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHistoryRetentionConfig(t *testing.T) {
	period := &metav1.Duration{Duration: 720 * time.Hour}
	revs := int64(10000)
	interval := int32(200)
	tests := []struct {
		name                    string
		history                 collabv1.HistorySpec
		wantRetention, wantSnap string
	}{
		{"unset keeps everything", collabv1.HistorySpec{}, "", ""},
		{"period", collabv1.HistorySpec{RetentionPeriod: period}, "720h0m0s", ""},
		{"revisions", collabv1.HistorySpec{RetentionRevisions: &revs}, "10000", ""},
		{"both and an interval", collabv1.HistorySpec{RetentionPeriod: period, RetentionRevisions: &revs, SnapshotInterval: &interval}, "720h0m0s,10000", "200"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cc := loadSample(t, "collab_v1alpha1_collabcluster_external.yaml")
			cc.Spec.Runtime.History = tc.history
			env := RuntimeConfig(cc)
			if got := env["TANDEM_HISTORY_RETENTION"]; got != tc.wantRetention {
				t.Fatalf("TANDEM_HISTORY_RETENTION = %q, want %q", got, tc.wantRetention)
			}
			if got := env["TANDEM_SNAPSHOT_INTERVAL"]; got != tc.wantSnap {
				t.Fatalf("TANDEM_SNAPSHOT_INTERVAL = %q, want %q", got, tc.wantSnap)
			}
		})
	}
}

func TestGatewayDuration(t *testing.T) {
	for _, tc := range []struct {
		seconds int32
		want    string
	}{
		{0, "0s"}, {-5, "0s"}, {59, "59s"}, {60, "1m"}, {3600, "1h"}, {86400, "24h"},
		{604800, "168h"}, {90061, "25h1m1s"}, {2147483647, "99999h"},
	} {
		if got := GatewayDuration(tc.seconds); got != tc.want {
			t.Errorf("GatewayDuration(%d) = %q, want %q", tc.seconds, got, tc.want)
		}
	}
}

// The operator caches only objects with its managed-by label, so every
// child must carry it, whatever labels the spec adds.
func TestEveryChildIsSelectable(t *testing.T) {
	tests := []struct {
		name   string
		sample string
		mutate func(*collabv1.CollabCluster)
	}{
		{"managed", "collab_v1alpha1_collabcluster.yaml", nil},
		{"external", "collab_v1alpha1_collabcluster_external.yaml", nil},
		{"gateway and CloudNativePG", "collab_v1alpha1_collabcluster_engines.yaml", nil},
		{"monitoring labels naming managed-by", "collab_v1alpha1_collabcluster.yaml", func(cc *collabv1.CollabCluster) {
			cc.Spec.Monitoring = &collabv1.MonitoringSpec{Labels: map[string]string{LabelManagedBy: "someone-else"}}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cc := loadSample(t, tc.sample)
			if tc.mutate != nil {
				tc.mutate(cc)
			}
			inputs := fixedInputs(cc)
			inputs.HTTPRoute = HTTPRouteFeatures{Timeouts: true, SessionPersistence: true}
			objs, err := All(cc, inputs)
			if err != nil {
				t.Fatal(err)
			}
			for _, obj := range objs {
				if v := obj.GetLabels()[LabelManagedBy]; v != FieldManager {
					t.Errorf("%T %s: %s=%q, want %q", obj, obj.GetName(), LabelManagedBy, v, FieldManager)
				}
			}
		})
	}
}
