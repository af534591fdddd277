package controllers_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
	"github.com/tandem-dev/tandem/controllers"
	"github.com/tandem-dev/tandem/internal/apicount"
)

// operatorImage plays the operator's RUNTIME_IMAGE in the suite.
const operatorImage = "registry.example.test/tandem:suite"

// suite is the one control plane and manager shared by every test in the
// package: starting kube-apiserver and etcd takes seconds, so TestMain
// starts them once and each test works in its own namespace.
type suite struct {
	cfg    *rest.Config
	client client.Client
	scheme *runtime.Scheme
	// metrics is the registry the reconciler's Metrics are on.
	metrics *prometheus.Registry
	// requests counts the operator's requests to the apiserver.
	requests *apicount.Counter
}

var shared *suite

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		msg := "KUBEBUILDER_ASSETS is not set; run `make test` (hack/tools.sh builds kube-apiserver and etcd)"
		if os.Getenv("CI") == "true" {
			fmt.Fprintln(os.Stderr, "FAIL:", msg)
			return 1
		}
		fmt.Fprintln(os.Stderr, "SKIP:", msg)
		return 0
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(false), zap.Level(zapLevel())))

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
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
	}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start envtest:", err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop envtest:", err)
		}
	}()

	// The operator's requests are counted, so tests can tell which writes
	// a reconcile made.
	requests := &apicount.Counter{}
	mgrCfg := rest.CopyConfig(cfg)
	mgrCfg.Wrap(apicount.Wrap(requests.Observe))
	mgr, err := ctrl.NewManager(mgrCfg, ctrl.Options{
		Scheme:                 scheme,
		Cache:                  controllers.CacheOptions(nil),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptrTo(true)},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "create manager:", err)
		return 1
	}
	reg := prometheus.NewRegistry()
	reconcileMetrics, err := controllers.NewMetrics(reg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &controllers.CollabClusterReconciler{
		Client:        mgr.GetClient(),
		APIReader:     mgr.GetAPIReader(),
		Recorder:      mgr.GetEventRecorder("tandem-operator"),
		OperatorImage: operatorImage,
		Metrics:       reconcileMetrics,
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

	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		return 1
	}
	shared = &suite{cfg: cfg, client: c, scheme: scheme, metrics: reg, requests: requests}
	return m.Run()
}

// zapLevel keeps the operator's logs out of the test output unless
// SUITE_VERBOSE is set.
func zapLevel() zapcore.Level {
	if os.Getenv("SUITE_VERBOSE") != "" {
		return zapcore.DebugLevel
	}
	return zapcore.ErrorLevel
}

func ptrTo[T any](v T) *T { return &v }

// namespace creates a fresh namespace for one test. envtest runs no
// namespace controller, so namespaces are left behind with the control plane.
func namespace(t *testing.T) string {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 50 {
		name = name[:50]
	}
	name = strings.Trim(name, "-") + fmt.Sprintf("-%d", time.Now().UnixNano()%100000)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := shared.client.Create(context.Background(), ns); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	return name
}

// loadSample returns the objects of a file in config/samples, in order.
func loadSample(t *testing.T, file, ns string) []client.Object {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "config", "samples", file))
	if err != nil {
		t.Fatalf("read sample: %v", err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	var objs []client.Object
	for {
		var meta metav1.TypeMeta
		var rawDoc runtime.RawExtension
		if err := dec.Decode(&rawDoc); err != nil {
			break
		}
		if err := utilyaml.Unmarshal(rawDoc.Raw, &meta); err != nil || meta.Kind == "" {
			continue
		}
		var obj client.Object
		switch meta.Kind {
		case "Secret":
			obj = &corev1.Secret{}
		case "CollabCluster":
			obj = &collabv1.CollabCluster{}
		default:
			t.Fatalf("sample %s: unexpected kind %s", file, meta.Kind)
		}
		if err := utilyaml.Unmarshal(rawDoc.Raw, obj); err != nil {
			t.Fatalf("decode %s in %s: %v", meta.Kind, file, err)
		}
		obj.SetNamespace(ns)
		objs = append(objs, obj)
	}
	if len(objs) == 0 {
		t.Fatalf("sample %s has no objects", file)
	}
	return objs
}

// createSample creates every object of a sample and returns the CollabCluster.
func createSample(t *testing.T, file, ns string, mutate func(*collabv1.CollabCluster)) *collabv1.CollabCluster {
	t.Helper()
	var cc *collabv1.CollabCluster
	for _, obj := range loadSample(t, file, ns) {
		if c, ok := obj.(*collabv1.CollabCluster); ok {
			cc = c
			if mutate != nil {
				mutate(cc)
			}
		}
		if err := shared.client.Create(context.Background(), obj); err != nil {
			t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
		}
	}
	return cc
}

// eventually polls check until it returns nil or the timeout passes.
func eventually(t *testing.T, what string, check func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
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

func get(ctx context.Context, ns, name string, obj client.Object) error {
	return shared.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, obj)
}
