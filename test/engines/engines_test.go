// Package engines_test runs the operator against a real kube-apiserver
// (envtest) that starts without the CloudNativePG and Gateway API CRDs and
// gets them, at the versions hack/tools.sh pins, from their Go modules
// during the test: the operator must start without them, refuse a spec
// that needs them, and pick them up once installed. CloudNativePG's status
// is written by the test, as no CloudNativePG operator runs here.
package engines_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
	"github.com/tandem-dev/tandem/controllers"
	"github.com/tandem-dev/tandem/internal/specs"
)

var (
	cfg *rest.Config
	k8s client.Client
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		msg := "KUBEBUILDER_ASSETS is not set; run `make test` (hack/tools.sh builds kube-apiserver and etcd)"
		if os.Getenv("CI") == "true" {
			fmt.Fprintln(os.Stderr, "FAIL:", msg)
			return 1
		}
		fmt.Fprintln(os.Stderr, "SKIP:", msg)
		return 0
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapLevel())))
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := collabv1.AddToScheme(scheme); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
	}
	var err error
	if cfg, err = env.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "start envtest:", err)
		return 1
	}
	defer func() { _ = env.Stop() }()

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Cache:                  controllers.CacheOptions(nil),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "create manager:", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &controllers.CollabClusterReconciler{
		Client:        mgr.GetClient(),
		APIReader:     mgr.GetAPIReader(),
		Recorder:      mgr.GetEventRecorder("tandem-operator"),
		OperatorImage: "registry.example.test/tandem:engines",
	}
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		cancel()
		fmt.Fprintln(os.Stderr, "set up controller:", err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
	}()
	if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		return 1
	}
	return m.Run()
}

func zapLevel() zapcore.Level {
	if os.Getenv("SUITE_VERBOSE") != "" {
		return zapcore.DebugLevel
	}
	return zapcore.ErrorLevel
}

// crdFile is one CRD file of a set hack/tools.sh fetches from the Go
// module proxy at its pinned version.
func crdFile(t *testing.T, set, file string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command("bash", filepath.Join("..", "..", "hack", "tools.sh"), "crds", set)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("hack/tools.sh crds %s: %v\n%s", set, err, errb.String())
	}
	path := filepath.Join(strings.TrimSpace(out.String()), file)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("CRD file of %s: %v", set, err)
	}
	return path
}

func installCRD(t *testing.T, path string) {
	t.Helper()
	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{Paths: []string{path}, ErrorIfPathMissing: true}); err != nil {
		t.Fatalf("install %s: %v", filepath.Base(path), err)
	}
}

func namespace(t *testing.T) string {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-", " ", "-").Replace(t.Name()))
	if len(name) > 50 {
		name = name[:50]
	}
	name = strings.Trim(name, "-") + fmt.Sprintf("-%d", time.Now().UnixNano()%100000)
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	return name
}

func eventually(t *testing.T, what string, check func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var last error
	for {
		if last = check(ctx); last == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s: %v", what, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func wantCondition(t *testing.T, ns, name, condType string, status metav1.ConditionStatus, reason string) *metav1.Condition {
	t.Helper()
	var got *metav1.Condition
	eventually(t, fmt.Sprintf("%s=%s/%s", condType, status, reason), func(ctx context.Context) error {
		cc := &collabv1.CollabCluster{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, cc); err != nil {
			return err
		}
		c := meta.FindStatusCondition(cc.Status.Conditions, condType)
		if c == nil {
			return fmt.Errorf("no %s condition", condType)
		}
		if c.Status != status || c.Reason != reason {
			return fmt.Errorf("%s is %s/%s: %s", condType, c.Status, c.Reason, c.Message)
		}
		got = c
		return nil
	})
	return got
}

func collab(ns, name string, mutate func(*collabv1.CollabCluster)) *collabv1.CollabCluster {
	cc := &collabv1.CollabCluster{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: collabv1.CollabClusterSpec{
			Runtime: collabv1.RuntimeSpec{Replicas: ptr.To[int32](2)},
		},
	}
	if mutate != nil {
		mutate(cc)
	}
	return cc
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

func getUnstructured(ctx context.Context, gvkObj *unstructured.Unstructured, ns, name string) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvkObj.GroupVersionKind())
	return u, k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, u)
}

func httpRoute() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(specs.HTTPRouteGVK)
	return u
}

func cnpgCluster() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(specs.CNPGClusterGVK)
	return u
}

// writeRouteStatus writes the HTTPRoute's status.parents as a Gateway
// controller would for the parentRef withGateway names.
func writeRouteStatus(t *testing.T, ns, name, accepted, reason, message string) {
	t.Helper()
	eventually(t, "HTTPRoute status written", func(ctx context.Context) error {
		u, err := getUnstructured(ctx, httpRoute(), ns, name)
		if err != nil {
			return err
		}
		now := time.Now().UTC().Format(time.RFC3339)
		u.Object["status"] = map[string]any{"parents": []any{map[string]any{
			"parentRef":      map[string]any{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public", "namespace": "gateway-system", "sectionName": "https"},
			"controllerName": "gateway.example.test/controller",
			"conditions": []any{
				map[string]any{"type": "Accepted", "status": accepted, "reason": reason, "message": message, "observedGeneration": u.GetGeneration(), "lastTransitionTime": now},
				map[string]any{"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "message": "", "observedGeneration": u.GetGeneration(), "lastTransitionTime": now},
			},
		}}}
		return k8s.Status().Update(ctx, u)
	})
}

func withGateway(cc *collabv1.CollabCluster) {
	cc.Spec.Gateway = &collabv1.GatewaySpec{
		ParentRefs: []collabv1.GatewayParentRef{{Name: "public", Namespace: "gateway-system", SectionName: "https"}},
		Hostnames:  []collabv1.GatewayHostname{"docs.example.test"},
	}
}

func withCNPG(cc *collabv1.CollabCluster) {
	cc.Spec.Postgres = &collabv1.PostgresSpec{CloudNativePG: &collabv1.CloudNativePGPostgres{
		Instances: ptr.To[int32](3),
		Storage:   collabv1.CloudNativePGStorage{Size: "5Gi"},
	}}
}

// TestEngines runs in order: each step changes which CRDs the apiserver has.
func TestEngines(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()

	t.Run("without the CRDs the specs are refused and the rest still runs", func(t *testing.T) {
		create(t, collab(ns, "gw", withGateway))
		create(t, collab(ns, "pg", withCNPG))
		c := wantCondition(t, ns, "gw", collabv1.ConditionDegraded, metav1.ConditionTrue, "GatewayAPINotInstalled")
		if !strings.Contains(c.Message, specs.HTTPRouteCRDName) {
			t.Errorf("Degraded message does not name the missing CRD: %s", c.Message)
		}
		c = wantCondition(t, ns, "pg", collabv1.ConditionDegraded, metav1.ConditionTrue, "CloudNativePGNotInstalled")
		if !strings.Contains(c.Message, "CloudNativePG operator") {
			t.Errorf("Degraded message does not say what to install: %s", c.Message)
		}
		wantCondition(t, ns, "pg", collabv1.ConditionPostgresReady, metav1.ConditionFalse, "CloudNativePGNotInstalled")
		// The runtime's Secrets and Redis are made before the refusal.
		eventually(t, "the gw cluster's Redis", func(ctx context.Context) error {
			return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "gw-redis"}, &appsv1.StatefulSet{})
		})
	})

	t.Run("standard channel: HTTPRoute with timeouts, no stickiness", func(t *testing.T) {
		installCRD(t, crdFile(t, "gateway-api-standard", "gateway.networking.k8s.io_httproutes.yaml"))
		wantCondition(t, ns, "gw", collabv1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")
		c := wantCondition(t, ns, "gw", collabv1.ConditionSessionAffinity, metav1.ConditionFalse, "HTTPRouteSessionPersistenceUnavailable")
		if !strings.Contains(c.Message, "experimental") {
			t.Errorf("SessionAffinity does not say where the field is: %s", c.Message)
		}
		eventually(t, "HTTPRoute gw", func(ctx context.Context) error {
			u, err := getUnstructured(ctx, httpRoute(), ns, "gw")
			if err != nil {
				return err
			}
			rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
			if len(rules) != 1 {
				return fmt.Errorf("rules: %v", rules)
			}
			rule := rules[0].(map[string]any)
			if got, _, _ := unstructured.NestedString(rule, "timeouts", "request"); got != "1h" {
				return fmt.Errorf("request timeout %q, want 1h", got)
			}
			if _, has := rule["sessionPersistence"]; has {
				return fmt.Errorf("sessionPersistence written although the CRD has no such field")
			}
			parents, _, _ := unstructured.NestedSlice(u.Object, "spec", "parentRefs")
			p := parents[0].(map[string]any)
			if p["name"] != "public" || p["namespace"] != "gateway-system" || p["sectionName"] != "https" {
				return fmt.Errorf("parentRefs %v", parents)
			}
			hosts, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "hostnames")
			if strings.Join(hosts, ",") != "docs.example.test" {
				return fmt.Errorf("hostnames %v", hosts)
			}
			backends, _, _ := unstructured.NestedSlice(rule, "backendRefs")
			if b := backends[0].(map[string]any); b["name"] != "gw" || b["port"] != int64(specs.ServicePort) {
				return fmt.Errorf("backendRefs %v", backends)
			}
			return nil
		})
	})

	t.Run("experimental channel: cookie sessionPersistence", func(t *testing.T) {
		installCRD(t, crdFile(t, "gateway-api-experimental", "gateway.networking.k8s.io_httproutes.yaml"))
		wantCondition(t, ns, "gw", collabv1.ConditionSessionAffinity, metav1.ConditionTrue, "HTTPRouteSessionPersistence")
		eventually(t, "sessionPersistence on HTTPRoute gw", func(ctx context.Context) error {
			u, err := getUnstructured(ctx, httpRoute(), ns, "gw")
			if err != nil {
				return err
			}
			rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
			sp, _, _ := unstructured.NestedMap(rules[0].(map[string]any), "sessionPersistence")
			if sp["type"] != "Cookie" || sp["sessionName"] != specs.DefaultCookieName || sp["absoluteTimeout"] != "24h" {
				return fmt.Errorf("sessionPersistence %v", sp)
			}
			return nil
		})
	})

	t.Run("the Gateway's answer shows in RouteAccepted", func(t *testing.T) {
		c := wantCondition(t, ns, "gw", collabv1.ConditionRouteAccepted, metav1.ConditionUnknown, "Pending")
		if !strings.Contains(c.Message, "gateway-system/public listener https") {
			t.Errorf("RouteAccepted does not name the Gateway waited for: %s", c.Message)
		}
		// What a Gateway controller writes: first a refusal, then acceptance.
		writeRouteStatus(t, ns, "gw", "False", "NotAllowedByListeners", "no listener allows routes from "+ns)
		c = wantCondition(t, ns, "gw", collabv1.ConditionRouteAccepted, metav1.ConditionFalse, "NotAccepted")
		if !strings.Contains(c.Message, "no listener allows routes from "+ns) || !strings.Contains(c.Message, "gateway.example.test/controller") {
			t.Errorf("RouteAccepted does not carry the Gateway's reason: %s", c.Message)
		}
		writeRouteStatus(t, ns, "gw", "True", "Accepted", "")
		wantCondition(t, ns, "gw", collabv1.ConditionRouteAccepted, metav1.ConditionTrue, "Accepted")
	})

	t.Run("a deleted HTTPRoute comes back; removing spec.gateway removes it", func(t *testing.T) {
		u, err := getUnstructured(ctx, httpRoute(), ns, "gw")
		if err != nil {
			t.Fatal(err)
		}
		uid := u.GetUID()
		if err := k8s.Delete(ctx, u); err != nil {
			t.Fatal(err)
		}
		eventually(t, "HTTPRoute gw recreated", func(ctx context.Context) error {
			u, err := getUnstructured(ctx, httpRoute(), ns, "gw")
			if err != nil {
				return err
			}
			if u.GetUID() == uid {
				return fmt.Errorf("still the old HTTPRoute")
			}
			return nil
		})
		cc := &collabv1.CollabCluster{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "gw"}, cc); err != nil {
			t.Fatal(err)
		}
		cc.Spec.Gateway = nil
		if err := k8s.Update(ctx, cc); err != nil {
			t.Fatal(err)
		}
		eventually(t, "HTTPRoute gw deleted", func(ctx context.Context) error {
			_, err := getUnstructured(ctx, httpRoute(), ns, "gw")
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("HTTPRoute still there (%v)", err)
		})
		eventually(t, "SessionAffinity and RouteAccepted dropped", func(ctx context.Context) error {
			cc := &collabv1.CollabCluster{}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "gw"}, cc); err != nil {
				return err
			}
			for _, ct := range []string{collabv1.ConditionSessionAffinity, collabv1.ConditionRouteAccepted} {
				if c := meta.FindStatusCondition(cc.Status.Conditions, ct); c != nil {
					return fmt.Errorf("%s still reported: %s", ct, c.Message)
				}
			}
			return nil
		})
	})

	t.Run("CloudNativePG: Cluster, -app Secret, readiness", func(t *testing.T) {
		installCRD(t, crdFile(t, "cloudnative-pg", "postgresql.cnpg.io_clusters.yaml"))
		wantCondition(t, ns, "pg", collabv1.ConditionPostgresReady, metav1.ConditionFalse, "ClusterNotReady")
		wantCondition(t, ns, "pg", collabv1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")
		cluster, err := getUnstructured(ctx, cnpgCluster(), ns, "pg-postgres")
		if err != nil {
			t.Fatalf("CloudNativePG Cluster: %v", err)
		}
		if n, _, _ := unstructured.NestedInt64(cluster.Object, "spec", "instances"); n != 3 {
			t.Errorf("instances %d, want 3", n)
		}
		if s, _, _ := unstructured.NestedString(cluster.Object, "spec", "storage", "size"); s != "5Gi" {
			t.Errorf("storage size %q, want 5Gi", s)
		}
		if db, _, _ := unstructured.NestedString(cluster.Object, "spec", "bootstrap", "initdb", "database"); db != specs.PostgresDatabase {
			t.Errorf("bootstrap database %q", db)
		}
		// No managed PostgreSQL besides it.
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pg-postgres"}, &appsv1.StatefulSet{}); !apierrors.IsNotFound(err) {
			t.Errorf("managed PostgreSQL StatefulSet: %v", err)
		}
		dep := &appsv1.Deployment{}
		eventually(t, "runtime Deployment mounting pg-postgres-app", func(ctx context.Context) error {
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pg-runtime"}, dep); err != nil {
				return err
			}
			for _, v := range dep.Spec.Template.Spec.Volumes {
				if v.Secret != nil && v.Secret.SecretName == "pg-postgres-app" && v.Secret.Items[0].Key == specs.CNPGURIKey {
					return nil
				}
			}
			return fmt.Errorf("volumes %+v", dep.Spec.Template.Spec.Volumes)
		})
		hashBefore := dep.Spec.Template.Annotations[specs.AnnotationConfigHash]

		// What CloudNativePG reports once its instances run.
		cluster.Object["status"] = map[string]any{
			"instances": int64(3), "readyInstances": int64(3), "phase": "Cluster in healthy state",
			"conditions": []any{map[string]any{
				"type": "Ready", "status": "True", "reason": "ClusterIsReady",
				"message": "Cluster is Ready", "lastTransitionTime": time.Now().UTC().Format(time.RFC3339),
			}},
		}
		if err := k8s.Status().Update(ctx, cluster); err != nil {
			t.Fatalf("write CloudNativePG status: %v", err)
		}
		wantCondition(t, ns, "pg", collabv1.ConditionPostgresReady, metav1.ConditionFalse, "AppSecretMissing")
		// The Secret CloudNativePG generates for the database owner.
		create(t, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pg-postgres-app"},
			Data: map[string][]byte{
				specs.CNPGURIKey: []byte("postgresql://tandem:pw@pg-postgres-rw." + ns + ":5432/tandem"),
			},
		})
		c := wantCondition(t, ns, "pg", collabv1.ConditionPostgresReady, metav1.ConditionTrue, "CloudNativePGClusterReady")
		if !strings.Contains(c.Message, "pg-postgres-rw") || !strings.Contains(c.Message, "3/3") {
			t.Errorf("PostgresReady message: %s", c.Message)
		}
		eventually(t, "runtime pods rolled for the new Secret", func(ctx context.Context) error {
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pg-runtime"}, dep); err != nil {
				return err
			}
			if dep.Spec.Template.Annotations[specs.AnnotationConfigHash] == hashBefore {
				return fmt.Errorf("config hash unchanged")
			}
			return nil
		})

		// CloudNativePG losing its primary shows up in PostgresReady.
		cluster, err = getUnstructured(ctx, cnpgCluster(), ns, "pg-postgres")
		if err != nil {
			t.Fatal(err)
		}
		_ = unstructured.SetNestedField(cluster.Object, int64(2), "status", "readyInstances")
		_ = unstructured.SetNestedField(cluster.Object, "Failing over", "status", "phase")
		_ = unstructured.SetNestedSlice(cluster.Object, []any{map[string]any{
			"type": "Ready", "status": "False", "reason": "ClusterIsNotReady",
			"message": "Cluster Is Not Ready", "lastTransitionTime": time.Now().UTC().Format(time.RFC3339),
		}}, "status", "conditions")
		if err := k8s.Status().Update(ctx, cluster); err != nil {
			t.Fatal(err)
		}
		c = wantCondition(t, ns, "pg", collabv1.ConditionPostgresReady, metav1.ConditionFalse, "ClusterNotReady")
		if !strings.Contains(c.Message, "Failing over") || !strings.Contains(c.Message, "2/3") {
			t.Errorf("PostgresReady message: %s", c.Message)
		}
	})
}

// TestIngressStickinessPerController checks the annotations rendered for
// each controller, chosen from the IngressClass or explicitly.
func TestIngressStickinessPerController(t *testing.T) {
	ctx := context.Background()
	classes := map[string]string{
		"traefik":        "traefik.io/ingress-controller",
		"haproxy":        "haproxy.org/ingress-controller/haproxy",
		"nginx-inc":      "nginx.org/ingress-controller",
		"community-ha":   "haproxy-ingress.github.io/controller",
		"something-else": "example.com/unknown",
	}
	for name, controller := range classes {
		ic := &networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: networkingv1.IngressClassSpec{Controller: controller}}
		if err := k8s.Create(ctx, ic); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name        string
		class       string
		controller  collabv1.IngressController
		wantIngress map[string]string
		wantService map[string]string
		wantReason  string
	}{
		{name: "traefik from its class", class: "traefik", wantReason: "CookieAffinity",
			wantService: map[string]string{
				"traefik.ingress.kubernetes.io/service.sticky.cookie":      "true",
				"traefik.ingress.kubernetes.io/service.sticky.cookie.name": specs.DefaultCookieName,
			}},
		{name: "haproxy from its class", class: "haproxy", wantReason: "CookieAffinity",
			wantIngress: map[string]string{"haproxy.org/cookie-persistence": specs.DefaultCookieName, "haproxy.org/timeout-tunnel": "3600s"}},
		{name: "nginx inc from its class", class: "nginx-inc", wantReason: "CookieAffinity",
			wantIngress: map[string]string{"nginx.org/websocket-services": "", "nginx.com/sticky-cookie-services": ""}},
		{name: "community haproxy from its class", class: "community-ha", wantReason: "CookieAffinity",
			wantIngress: map[string]string{"haproxy-ingress.github.io/affinity": "cookie"}},
		{name: "explicit controller wins over the class", class: "something-else", controller: collabv1.IngressControllerHAProxy,
			wantReason: "CookieAffinity", wantIngress: map[string]string{"haproxy.org/cookie-persistence": specs.DefaultCookieName}},
		{name: "unknown controller falls back to ingress-nginx", class: "something-else", wantReason: "UnknownIngressController",
			wantIngress: map[string]string{"nginx.ingress.kubernetes.io/affinity": "cookie"}},
		{name: "missing class falls back to ingress-nginx", class: "no-such-class", wantReason: "UnknownIngressController",
			wantIngress: map[string]string{"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ns := namespace(t)
			create(t, collab(ns, "docs", func(cc *collabv1.CollabCluster) {
				cc.Spec.Ingress = collabv1.IngressSpec{Enabled: true, Host: "docs.example.test",
					ClassName: ptr.To(tc.class), Controller: tc.controller}
			}))
			wantCondition(t, ns, "docs", collabv1.ConditionSessionAffinity,
				map[bool]metav1.ConditionStatus{true: metav1.ConditionTrue, false: metav1.ConditionFalse}[tc.wantReason == "CookieAffinity"], tc.wantReason)
			eventually(t, "annotations", func(ctx context.Context) error {
				ing := &networkingv1.Ingress{}
				if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "docs"}, ing); err != nil {
					return err
				}
				svc := &corev1.Service{}
				if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "docs"}, svc); err != nil {
					return err
				}
				for _, w := range []struct {
					what string
					got  map[string]string
					want map[string]string
				}{{"Ingress", ing.Annotations, tc.wantIngress}, {"Service", svc.Annotations, tc.wantService}} {
					for k, v := range w.want {
						got, ok := w.got[k]
						if !ok || (v != "" && got != v) {
							return fmt.Errorf("%s annotation %s = %q (present %v), want %q; all: %v", w.what, k, got, ok, v, w.got)
						}
					}
				}
				for k := range svc.Annotations {
					// Only the scrape annotations and the operator's applied
					// hash, unless traefik's are wanted.
					if len(tc.wantService) == 0 && !strings.HasPrefix(k, "prometheus.io/") && k != specs.AnnotationAppliedHash {
						return fmt.Errorf("Service has annotation %s: %v", k, svc.Annotations)
					}
				}
				if tc.wantIngress == nil || tc.wantIngress["nginx.ingress.kubernetes.io/affinity"] == "" && tc.wantIngress["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "" {
					for k := range ing.Annotations {
						if strings.HasPrefix(k, "nginx.ingress.kubernetes.io/") {
							return fmt.Errorf("ingress-nginx annotation %s on an Ingress for another controller", k)
						}
					}
				}
				return nil
			})
		})
	}

	// The operator watches IngressClasses: a class created after the
	// CollabCluster that names it re-renders the annotations, with no
	// change to the CollabCluster itself.
	t.Run("class created later re-renders the annotations", func(t *testing.T) {
		ns := namespace(t)
		class := "late-traefik-" + ns[len(ns)-5:]
		create(t, collab(ns, "docs", func(cc *collabv1.CollabCluster) {
			cc.Spec.Ingress = collabv1.IngressSpec{Enabled: true, Host: "docs.example.test", ClassName: ptr.To(class)}
		}))
		wantCondition(t, ns, "docs", collabv1.ConditionSessionAffinity, metav1.ConditionFalse, "UnknownIngressController")
		before := &collabv1.CollabCluster{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "docs"}, before); err != nil {
			t.Fatal(err)
		}
		eventually(t, "ingress-nginx annotations for the missing class", func(ctx context.Context) error {
			ing := &networkingv1.Ingress{}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "docs"}, ing); err != nil {
				return err
			}
			if ing.Annotations["nginx.ingress.kubernetes.io/affinity"] != "cookie" {
				return fmt.Errorf("no ingress-nginx affinity yet: %v", ing.Annotations)
			}
			return nil
		})

		ic := &networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: class},
			Spec: networkingv1.IngressClassSpec{Controller: "traefik.io/ingress-controller"}}
		create(t, ic)
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), ic) })

		c := wantCondition(t, ns, "docs", collabv1.ConditionSessionAffinity, metav1.ConditionTrue, "CookieAffinity")
		if !strings.Contains(c.Message, "traefik") {
			t.Errorf("SessionAffinity message does not name traefik: %s", c.Message)
		}
		eventually(t, "traefik annotations and no ingress-nginx ones", func(ctx context.Context) error {
			svc := &corev1.Service{}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "docs"}, svc); err != nil {
				return err
			}
			for k, v := range map[string]string{
				"traefik.ingress.kubernetes.io/service.sticky.cookie":      "true",
				"traefik.ingress.kubernetes.io/service.sticky.cookie.name": specs.DefaultCookieName,
			} {
				if svc.Annotations[k] != v {
					return fmt.Errorf("Service annotation %s = %q, want %q; all: %v", k, svc.Annotations[k], v, svc.Annotations)
				}
			}
			ing := &networkingv1.Ingress{}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "docs"}, ing); err != nil {
				return err
			}
			for k := range ing.Annotations {
				if strings.HasPrefix(k, "nginx.ingress.kubernetes.io/") {
					return fmt.Errorf("ingress-nginx annotation %s still on the Ingress: %v", k, ing.Annotations)
				}
			}
			return nil
		})
		after := &collabv1.CollabCluster{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "docs"}, after); err != nil {
			t.Fatal(err)
		}
		if after.Generation != before.Generation {
			t.Errorf("the CollabCluster's generation went from %d to %d; only the IngressClass should have changed", before.Generation, after.Generation)
		}
	})
}

// TestSpecRulesExplainThemselves checks the CEL rules of the new fields:
// every rejection names the field and says in words what it accepts,
// never a regular expression (what a Pattern marker would print).
func TestSpecRulesExplainThemselves(t *testing.T) {
	ns := namespace(t)
	const (
		hostnameRule = "hostnames must be DNS names such as docs.example.com, optionally starting with '*.'"
		cookieRule   = "cookieName must be letters, digits, '_' and '-' only, such as tandem-affinity"
		cnpgSizeRule = "size must be a positive quantity such as 10Gi: digits, then optionally a unit"
		scrapeRule   = "scrapeInterval must be a duration such as 30s or 1m: digits, then ms, s, m or h"
	)
	scrape := func(interval string) func(*collabv1.CollabCluster) {
		return func(cc *collabv1.CollabCluster) {
			cc.Spec.Monitoring = &collabv1.MonitoringSpec{ScrapeInterval: interval}
		}
	}
	const scrapePath = "spec.monitoring.scrapeInterval"
	// invalid is the apiserver's message for a string field its rule refused.
	invalid := func(path, value, message string) string {
		return fmt.Sprintf("%s: Invalid value: %q: %s", path, value, message)
	}
	cnpgSize := func(size string) func(*collabv1.CollabCluster) {
		return func(cc *collabv1.CollabCluster) {
			withCNPG(cc)
			cc.Spec.Postgres.CloudNativePG.Storage.Size = size
		}
	}
	const cnpgSizePath = "spec.postgres.cloudNativePG.storage.size"
	tests := []struct {
		name   string
		mutate func(*collabv1.CollabCluster)
		want   string
	}{
		{"gateway and ingress", func(cc *collabv1.CollabCluster) {
			withGateway(cc)
			cc.Spec.Ingress = collabv1.IngressSpec{Enabled: true, Host: "docs.example.test"}
		}, "spec.gateway and spec.ingress are exclusive"},
		{"two PostgreSQLs", func(cc *collabv1.CollabCluster) {
			withCNPG(cc)
			cc.Spec.Postgres.Managed = &collabv1.ManagedPostgres{}
		}, "set exactly one of managed, external or cloudNativePG"},
		{"gateway without parents", func(cc *collabv1.CollabCluster) {
			cc.Spec.Gateway = &collabv1.GatewaySpec{}
		}, "spec.gateway.parentRefs"},
		{"wildcard in the middle of a host name", func(cc *collabv1.CollabCluster) {
			withGateway(cc)
			cc.Spec.Gateway.Hostnames = []collabv1.GatewayHostname{"docs.*.example"}
		}, invalid("spec.gateway.hostnames[0]", "docs.*.example", hostnameRule)},
		{"upper case host name", func(cc *collabv1.CollabCluster) {
			withGateway(cc)
			cc.Spec.Gateway.Hostnames = []collabv1.GatewayHostname{"docs.example.test", "Docs.example.test"}
		}, invalid("spec.gateway.hostnames[1]", "Docs.example.test", hostnameRule)},
		{"host name ending in a dot", func(cc *collabv1.CollabCluster) {
			withGateway(cc)
			cc.Spec.Gateway.Hostnames = []collabv1.GatewayHostname{"docs.example.test."}
		}, invalid("spec.gateway.hostnames[0]", "docs.example.test.", hostnameRule)},
		{"cookie name with a space, ingress", func(cc *collabv1.CollabCluster) {
			cc.Spec.Ingress = collabv1.IngressSpec{Enabled: true, Host: "docs.example.test",
				SessionAffinity: collabv1.SessionAffinitySpec{CookieName: "tandem affinity"}}
		}, invalid("spec.ingress.sessionAffinity.cookieName", "tandem affinity", cookieRule)},
		{"cookie name with a semicolon, gateway", func(cc *collabv1.CollabCluster) {
			withGateway(cc)
			cc.Spec.Gateway.SessionAffinity.CookieName = "a;b"
		}, invalid("spec.gateway.sessionAffinity.cookieName", "a;b", cookieRule)},
		{"CloudNativePG size not a quantity", cnpgSize("10 GB"), invalid(cnpgSizePath, "10 GB", cnpgSizeRule)},
		{"CloudNativePG size with a unit it does not take", cnpgSize("10m"), invalid(cnpgSizePath, "10m", cnpgSizeRule)},
		{"CloudNativePG size zero", cnpgSize("0Gi"), invalid(cnpgSizePath, "0Gi", cnpgSizeRule)},
		{"scrape interval without a unit", scrape("30"), invalid(scrapePath, "30", scrapeRule)},
		{"scrape interval with a space", scrape("30 s"), invalid(scrapePath, "30 s", scrapeRule)},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := k8s.Create(context.Background(), collab(ns, fmt.Sprintf("bad-%d", i), tc.mutate))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("create: %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "should match") {
				t.Errorf("the rejection prints a regular expression: %v", err)
			}
		})
	}

	// What the rules accept: a wildcard host name, the cookie name
	// characters, decimal and unit-less sizes.
	accepted := []struct {
		name   string
		mutate func(*collabv1.CollabCluster)
	}{
		{"wildcard host name and cookie name", func(cc *collabv1.CollabCluster) {
			withGateway(cc)
			cc.Spec.Gateway.Hostnames = []collabv1.GatewayHostname{"*.docs.example.test", "docs-1.example.test", "localhost"}
			cc.Spec.Gateway.SessionAffinity.CookieName = "Tandem_affinity-2"
		}},
		{"decimal CloudNativePG size", cnpgSize("1.5Gi")},
		{"CloudNativePG size in bytes", cnpgSize("1073741824")},
		{"scrape interval in milliseconds", scrape("500ms")},
	}
	for i, tc := range accepted {
		t.Run("accepted: "+tc.name, func(t *testing.T) {
			create(t, collab(ns, fmt.Sprintf("ok-%d", i), tc.mutate))
		})
	}

	// Update-time rules of the CloudNativePG storage.
	t.Run("CloudNativePG storage on update", func(t *testing.T) {
		create(t, collab(ns, "cnpg-storage", func(cc *collabv1.CollabCluster) {
			withCNPG(cc)
			cc.Spec.Postgres.CloudNativePG.Storage.StorageClassName = ptr.To("standard")
		}))
		updates := []struct {
			name   string
			mutate func(*collabv1.CloudNativePGStorage)
			want   string // empty: accepted
		}{
			{"another storage class", func(s *collabv1.CloudNativePGStorage) { s.StorageClassName = ptr.To("fast") },
				"spec.postgres.cloudNativePG.storage.storageClassName: Invalid value: storageClassName is immutable: create a new CollabCluster to use another storage class"},
			{"storage class removed", func(s *collabv1.CloudNativePGStorage) { s.StorageClassName = nil },
				"storageClassName is immutable"},
			{"size zero", func(s *collabv1.CloudNativePGStorage) { s.Size = "0" }, invalid(cnpgSizePath, "0", cnpgSizeRule)},
			// CloudNativePG grows volumes in place: the size may change.
			{"size grown", func(s *collabv1.CloudNativePGStorage) { s.Size = "20Gi" }, ""},
		}
		for _, u := range updates {
			// The operator writes the status meanwhile: retry a conflict.
			var err error
			for attempt := 0; attempt < 20; attempt++ {
				cc := &collabv1.CollabCluster{}
				if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "cnpg-storage"}, cc); err != nil {
					t.Fatal(err)
				}
				u.mutate(&cc.Spec.Postgres.CloudNativePG.Storage)
				if err = k8s.Update(context.Background(), cc); !apierrors.IsConflict(err) {
					break
				}
			}
			switch {
			case u.want == "" && err != nil:
				t.Errorf("%s: %v", u.name, err)
			case u.want != "" && (err == nil || !strings.Contains(err.Error(), u.want)):
				t.Errorf("%s: update error %v, want one containing %q", u.name, err, u.want)
			}
		}
	})

	// Without an enabled ingress, a gateway is accepted.
	create(t, collab(ns, "ok", func(cc *collabv1.CollabCluster) {
		withGateway(cc)
		cc.Spec.Ingress = collabv1.IngressSpec{Enabled: false, Host: "docs.example.test"}
	}))
}
