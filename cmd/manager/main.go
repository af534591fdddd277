// Command manager runs the Tandem operator: it reconciles CollabClusters
// into runtime Deployments, managed Redis and PostgreSQL, Services and
// Ingresses.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
	"github.com/tandem-dev/tandem/controllers"
	"github.com/tandem-dev/tandem/internal/apicount"
)

func main() {
	if err := run(ctrl.SetupSignalHandler(), os.Args[1:], ctrl.GetConfig); err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
}

// run parses args, builds the manager and blocks until ctx ends. getConfig
// finds the cluster (ctrl.GetConfig: --kubeconfig, KUBECONFIG, in-cluster).
func run(ctx context.Context, args []string, getConfig func() (*rest.Config, error)) error {
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	var (
		metricsAddr    string
		probeAddr      string
		leaderElect    bool
		leaderElectNS  string
		secureMetrics  bool
		watchNamespace string
		kubeconfig     string
		workers        int
		qps            float64
		burst          int
	)
	fs.StringVar(&kubeconfig, "kubeconfig", "", "Path to a kubeconfig; default KUBECONFIG, ~/.kube/config or in-cluster.")
	fs.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address of the metrics endpoint; 0 disables it.")
	fs.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	fs.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader so that only one replica reconciles.")
	fs.StringVar(&leaderElectNS, "leader-election-namespace", "", "Namespace of the leader election Lease (default: the pod's namespace).")
	fs.BoolVar(&secureMetrics, "metrics-secure", false, "Serve metrics over HTTPS with authentication and authorization.")
	fs.StringVar(&watchNamespace, "watch-namespace", os.Getenv("WATCH_NAMESPACE"),
		"Comma-separated namespaces to watch (env WATCH_NAMESPACE); empty watches all.")
	fs.IntVar(&workers, "max-concurrent-reconciles", controllers.DefaultWorkers,
		"How many CollabClusters are reconciled at once.")
	fs.Float64Var(&qps, "kube-api-qps", 200,
		"Sustained requests per second to the Kubernetes API (client-side rate limit).")
	fs.IntVar(&burst, "kube-api-burst", 400,
		"Requests allowed in a burst above --kube-api-qps.")
	opts := zap.Options{}
	opts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case workers < 1:
		return fmt.Errorf("--max-concurrent-reconciles must be at least 1, got %d", workers)
	case qps <= 0:
		return fmt.Errorf("--kube-api-qps must be positive, got %v", qps)
	case burst < 1:
		return fmt.Errorf("--kube-api-burst must be at least 1, got %d", burst)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(collabv1.AddToScheme(scheme))

	namespaces := splitNamespaces(watchNamespace)
	if len(namespaces) > 0 {
		log.Info("watching namespaces", "namespaces", namespaces)
	}

	if kubeconfig != "" {
		getConfig = func() (*rest.Config, error) { return clientcmd.BuildConfigFromFlags("", kubeconfig) }
	}
	cfg, err := getConfig()
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	// A copy: the caller's config may be shared (tests hand the envtest
	// config to their own clients too).
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = float32(qps), burst
	countRequest, err := controllers.NewAPIRequests(ctrlmetrics.Registry)
	if err != nil {
		return err
	}
	cfg.Wrap(apicount.Wrap(countRequest))
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Cache:                   controllers.CacheOptions(namespaces),
		Metrics:                 metricsserver.Options{BindAddress: metricsAddr, SecureServing: secureMetrics},
		HealthProbeBindAddress:  probeAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        "tandem-operator.collab.tandem.dev",
		LeaderElectionNamespace: leaderElectNS,
		// The process exits right after losing the lease, so the next
		// leader can start without waiting for the lease to expire.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}

	if err := setup(ctx, mgr, os.Getenv("RUNTIME_IMAGE"), workers, namespaces); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("add ready check: %w", err)
	}
	log.Info("starting manager", "runtimeImage", os.Getenv("RUNTIME_IMAGE"),
		"workers", workers, "qps", qps, "burst", burst)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}

func setup(ctx context.Context, mgr ctrl.Manager, runtimeImage string, workers int, namespaces []string) error {
	// controller-runtime's registry: served on the manager's metrics
	// endpoint with its own reconcile and client metrics.
	reconcileMetrics, err := controllers.NewMetrics(ctrlmetrics.Registry)
	if err != nil {
		return err
	}
	r := &controllers.CollabClusterReconciler{
		Client:        mgr.GetClient(),
		APIReader:     mgr.GetAPIReader(),
		Recorder:      mgr.GetEventRecorder("tandem-operator"),
		OperatorImage: runtimeImage,
		Workers:       workers,
		Metrics:       reconcileMetrics,
		Namespaces:    namespaces,
	}
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("set up CollabCluster controller: %w", err)
	}
	return nil
}

// splitNamespaces parses WATCH_NAMESPACE: comma-separated, blanks ignored.
func splitNamespaces(s string) []string {
	var out []string
	for _, ns := range strings.Split(s, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			out = append(out, ns)
		}
	}
	return out
}
