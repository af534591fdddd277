// Package opbench measures the operator at scale on a kwok control plane
// (real kube-apiserver, etcd, kube-scheduler and kube-controller-manager;
// kwok plays the kubelet of fake nodes and marks pods Ready): N managed
// CollabClusters applied at once, the operator running as its own built
// binary so its memory and CPU are its own. It reports how long the
// children and readiness take, what the operator asks of the apiserver
// (from its tandem_operator_kube_api_requests_total), its peak RSS and CPU,
// the writes of a resync and of a restart over the converged clusters, and
// its memory with thousands of unrelated Secrets and Pods in the cluster.
package opbench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
	"github.com/tandem-dev/tandem/internal/specs"
)

// Config says what to measure.
type Config struct {
	// N is the number of CollabClusters applied at once.
	N int
	// Root is the repository root: the sample, the CRDs and the kwok
	// script are read from it.
	Root string
	// Manager is the built operator binary (go build ./cmd/manager).
	Manager string
	// Kubeconfig of a kwok cluster to use; empty creates one with
	// hack/e2e/kwok-cluster.sh and deletes it afterwards.
	Kubeconfig string
	// Unrelated Secrets and Pods created in other namespaces before a last
	// restart of the operator, to show what they cost it; 0 skips it.
	Unrelated int
	// ReadyTimeout bounds the wait for every CollabCluster to be Ready.
	ReadyTimeout time.Duration
	// ManagerArgs are extra flags for the operator.
	ManagerArgs []string
	// Log receives progress lines.
	Log io.Writer
}

// Result is one run's figures. Times are seconds from the moment the
// CollabClusters were applied, unless said otherwise.
type Result struct {
	N     int `json:"n"`
	Nodes int `json:"nodes"`
	Pods  int `json:"pods"`
	// ChildrenSeconds: every child of every CollabCluster exists.
	ChildrenSeconds float64 `json:"childrenSeconds"`
	// LastPodReadySeconds: the last pod became Ready (kwok, scheduled by
	// the real scheduler after the real controllers created it).
	LastPodReadySeconds float64 `json:"lastPodReadySeconds"`
	// AllReadySeconds: the last CollabCluster became Ready.
	AllReadySeconds float64 `json:"allReadySeconds"`
	// ReadyLagSeconds = AllReadySeconds - LastPodReadySeconds.
	ReadyLagSeconds float64 `json:"readyLagSeconds"`
	// ClusterLagP50Seconds and ClusterLagMaxSeconds: for each
	// CollabCluster, from its own last pod Ready to its Ready condition.
	ClusterLagP50Seconds float64 `json:"clusterLagP50Seconds"`
	ClusterLagMaxSeconds float64 `json:"clusterLagMaxSeconds"`
	// Requests and Writes the operator sent until every CollabCluster was
	// Ready and the operator was quiet, per CollabCluster.
	RequestsPerCluster float64 `json:"requestsPerCluster"`
	WritesPerCluster   float64 `json:"writesPerCluster"`
	// RequestsByKind is RequestsPerCluster per "verb resource" (watches
	// and the start's lists included), to tell which requests it is made of.
	RequestsByKind map[string]float64 `json:"requestsByKind,omitempty"`
	// PeakRSSMB and CPUSeconds of the operator over the same time.
	PeakRSSMB  float64 `json:"peakRSSMB"`
	CPUSeconds float64 `json:"cpuSeconds"`
	// ResyncWrites: writes while every converged CollabCluster was
	// reconciled again (each annotated, as a periodic resync or an
	// unrelated event would); ResyncReconciles is how many reconciles ran.
	ResyncWrites     int `json:"resyncWrites"`
	ResyncRequests   int `json:"resyncRequests"`
	ResyncReconciles int `json:"resyncReconciles"`
	// ResyncRequestsByKind is ResyncRequests per "verb resource".
	ResyncRequestsByKind map[string]int `json:"resyncRequestsByKind,omitempty"`
	// RestartWrites: writes of a freshly started operator reconciling
	// every converged CollabCluster (the two SelfSubjectAccessReviews at
	// start, which change nothing, not counted); RestartPeakRSSMB its
	// peak memory.
	RestartWrites    int     `json:"restartWrites"`
	RestartSeconds   float64 `json:"restartSeconds"`
	RestartPeakRSSMB float64 `json:"restartPeakRSSMB"`
	// Unrelated Secrets and Pods in other namespaces, and the peak RSS of
	// an operator started over the converged clusters with them present.
	Unrelated          int     `json:"unrelated,omitempty"`
	UnrelatedPeakRSSMB float64 `json:"unrelatedPeakRSSMB,omitempty"`
	// Load is the machine's load average (1, 5, 15 min) at the end.
	Load string `json:"load"`
	// Started is when the run began (UTC).
	Started time.Time `json:"started"`
}

const (
	benchNamespace = "opbench"
	runtimeImage   = "registry.example.test/tandem:opbench"
	podsPerNode    = 250
)

// Run measures one N.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.N < 1 {
		return nil, errors.New("N must be at least 1")
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 30 * time.Minute
	}
	res := &Result{N: cfg.N, Started: time.Now().UTC()}
	logf := func(format string, args ...any) {
		fmt.Fprintf(cfg.Log, "[opbench] "+format+"\n", args...)
	}

	work, err := os.MkdirTemp("", "tandem-opbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	template, err := sampleCluster(cfg.Root)
	if err != nil {
		return nil, err
	}
	podsPerCluster := int(*template.Spec.Runtime.Replicas) + 2
	res.Pods = cfg.N * podsPerCluster
	res.Nodes = res.Pods/podsPerNode + 1

	kubeconfig := cfg.Kubeconfig
	if kubeconfig == "" {
		kubeconfig = filepath.Join(work, "kubeconfig")
		name := fmt.Sprintf("tandem-opbench-%d", os.Getpid())
		script := filepath.Join(cfg.Root, "hack", "e2e", "kwok-cluster.sh")
		// A runtime Service per CollabCluster needs a ClusterIP: more
		// than kwokctl's default /24 holds.
		env := append(os.Environ(), "KWOK_WORKDIR="+filepath.Join(work, "kwok"), "KWOK_SERVICE_CIDR=10.96.0.0/16")
		logf("creating kwok cluster %s", name)
		if out, err := command(ctx, env, script, "create", name, kubeconfig, "1"); err != nil {
			return nil, fmt.Errorf("create kwok cluster: %w\n%s", err, out)
		}
		defer func() {
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if out, err := command(dctx, env, script, "delete", name); err != nil {
				logf("delete kwok cluster: %v\n%s", err, out)
			}
		}()
	}
	restCfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	restCfg.QPS, restCfg.Burst = 500, 1000
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := collabv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c, err := client.New(restCfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}

	logf("fixtures: %d nodes of %d pods, %d volumes, CRDs", res.Nodes, podsPerNode, 2*cfg.N)
	if err := fixtures(ctx, c, cfg.Root, res.Nodes, 2*cfg.N); err != nil {
		return nil, err
	}

	// The harness's own view, with the time each pod and CollabCluster was
	// first seen Ready.
	seen := newReadiness()
	hc, err := cache.New(restCfg, cache.Options{Scheme: scheme,
		DefaultNamespaces: map[string]cache.Config{benchNamespace: {}}})
	if err != nil {
		return nil, err
	}
	if err := seen.watch(ctx, hc); err != nil {
		return nil, err
	}
	cacheCtx, stopCache := context.WithCancel(ctx)
	defer stopCache()
	go func() { _ = hc.Start(cacheCtx) }()
	if !hc.WaitForCacheSync(ctx) {
		return nil, errors.New("harness cache did not sync")
	}

	op, err := startOperator(ctx, cfg, kubeconfig, filepath.Join(work, "operator-1.log"))
	if err != nil {
		return nil, err
	}
	defer func() { op.stop() }()

	// Apply every CollabCluster at once.
	logf("applying %d CollabClusters", cfg.N)
	start := time.Now()
	clusters := make([]*collabv1.CollabCluster, cfg.N)
	for i := range clusters {
		cc := template.DeepCopy()
		cc.Name = fmt.Sprintf("cc-%04d", i)
		cc.Namespace = benchNamespace
		if cc.Spec.Ingress.Enabled {
			cc.Spec.Ingress.Host = cc.Name + ".example.test"
		}
		clusters[i] = cc
	}
	if err := parallel(ctx, 32, len(clusters), func(ctx context.Context, i int) error {
		return c.Create(ctx, clusters[i].DeepCopy())
	}); err != nil {
		return nil, fmt.Errorf("create CollabClusters: %w", err)
	}

	want, err := expectedChildren(clusters)
	if err != nil {
		return nil, err
	}
	if err := poll(ctx, 30*time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		missing, err := missingChildren(ctx, hc, want)
		return missing == 0, err
	}); err != nil {
		return nil, fmt.Errorf("wait for the children: %w", err)
	}
	res.ChildrenSeconds = time.Since(start).Seconds()
	logf("every child exists after %.1fs", res.ChildrenSeconds)

	if err := poll(ctx, cfg.ReadyTimeout, 200*time.Millisecond, func(context.Context) (bool, error) {
		return seen.clustersReady() == cfg.N, nil
	}); err != nil {
		return nil, fmt.Errorf("wait for Ready (%d of %d): %w", seen.clustersReady(), cfg.N, err)
	}
	lastPod, lastCluster, lags := seen.timeline()
	res.LastPodReadySeconds = lastPod.Sub(start).Seconds()
	res.AllReadySeconds = lastCluster.Sub(start).Seconds()
	res.ReadyLagSeconds = lastCluster.Sub(lastPod).Seconds()
	res.ClusterLagP50Seconds, res.ClusterLagMaxSeconds = quantile(lags, 0.5), quantile(lags, 1)
	logf("all Ready after %.1fs, last pod Ready after %.1fs (lag %.2fs)", res.AllReadySeconds, res.LastPodReadySeconds, res.ReadyLagSeconds)

	counts, err := op.quiet(ctx)
	if err != nil {
		return nil, err
	}
	st, err := readProc(op.pid())
	if err != nil {
		return nil, err
	}
	res.RequestsPerCluster = float64(counts.Requests) / float64(cfg.N)
	res.WritesPerCluster = float64(counts.Writes) / float64(cfg.N)
	before, err := op.view(ctx)
	if err != nil {
		return nil, err
	}
	res.RequestsByKind = map[string]float64{}
	for k, n := range before.kinds {
		res.RequestsByKind[k] = float64(n) / float64(cfg.N)
	}
	logf("requests per CollabCluster by verb and resource: %s", formatKinds(res.RequestsByKind))
	res.PeakRSSMB = float64(st.PeakRSSBytes) / 1e6
	res.CPUSeconds = st.CPU.Seconds()

	// Resync: every converged CollabCluster reconciled again.
	logf("resync of %d converged CollabClusters", cfg.N)
	if err := parallel(ctx, 32, len(clusters), func(ctx context.Context, i int) error {
		patch := []byte(`{"metadata":{"annotations":{"bench.tandem.dev/resync":"` + time.Now().Format(time.RFC3339Nano) + `"}}}`)
		return c.Patch(ctx, &collabv1.CollabCluster{ObjectMeta: metav1.ObjectMeta{Namespace: benchNamespace, Name: clusters[i].Name}},
			client.RawPatch("application/merge-patch+json", patch))
	}); err != nil {
		return nil, fmt.Errorf("annotate CollabClusters: %w", err)
	}
	after, err := op.reconciled(ctx, before.reconciles+float64(cfg.N))
	if err != nil {
		return nil, err
	}
	d := after.counts.sub(before.counts)
	res.ResyncWrites, res.ResyncRequests = d.Writes, d.Requests
	res.ResyncReconciles = int(after.reconciles - before.reconciles)
	res.ResyncRequestsByKind = subKinds(after.kinds, before.kinds)
	logf("resync: %d reconciles, %d requests, %d writes; by verb and resource: %v", res.ResyncReconciles, d.Requests, d.Writes,
		res.ResyncRequestsByKind)

	// Restart: a fresh operator over the converged clusters.
	restart := func(n int) (*operator, metricsView, time.Duration, error) {
		op.stop()
		began := time.Now()
		next, err := startOperator(ctx, cfg, kubeconfig, filepath.Join(work, fmt.Sprintf("operator-%d.log", n)))
		if err != nil {
			return nil, metricsView{}, 0, err
		}
		op = next
		v, err := next.reconciled(ctx, float64(cfg.N))
		return next, v, time.Since(began), err
	}
	logf("restart over %d converged CollabClusters", cfg.N)
	next, v, took, err := restart(2)
	if err != nil {
		return nil, err
	}
	res.RestartWrites, res.RestartSeconds = v.counts.Writes, took.Seconds()
	if st, err = readProc(next.pid()); err != nil {
		return nil, err
	}
	res.RestartPeakRSSMB = float64(st.PeakRSSBytes) / 1e6

	if cfg.Unrelated > 0 {
		logf("creating %d unrelated Secrets and %d unrelated Pods", cfg.Unrelated, cfg.Unrelated)
		if err := unrelated(ctx, c, cfg.Unrelated); err != nil {
			return nil, err
		}
		next, _, _, err := restart(3)
		if err != nil {
			return nil, err
		}
		if st, err = readProc(next.pid()); err != nil {
			return nil, err
		}
		res.Unrelated = cfg.Unrelated
		res.UnrelatedPeakRSSMB = float64(st.PeakRSSBytes) / 1e6
	}
	if raw, err := os.ReadFile("/proc/loadavg"); err == nil && len(raw) > 0 {
		f := bytes.Fields(raw)
		if len(f) >= 3 {
			res.Load = fmt.Sprintf("%s %s %s", f[0], f[1], f[2])
		}
	}
	return res, nil
}

// sampleCluster is the managed sample, the CollabCluster every run applies N of.
func sampleCluster(root string) (*collabv1.CollabCluster, error) {
	raw, err := os.ReadFile(filepath.Join(root, "config", "samples", "collab_v1alpha1_collabcluster.yaml"))
	if err != nil {
		return nil, err
	}
	cc := &collabv1.CollabCluster{}
	if err := yaml.Unmarshal(raw, cc); err != nil {
		return nil, fmt.Errorf("decode the managed sample: %w", err)
	}
	if cc.Spec.Runtime.Replicas == nil {
		return nil, errors.New("the managed sample sets no runtime replicas")
	}
	return cc, nil
}

// fixtures creates the namespace, the CollabCluster CRD, the fake nodes,
// a default StorageClass and a PersistentVolume per claim (kwok provisions
// no volumes).
func fixtures(ctx context.Context, c client.Client, root string, nodes, volumes int) error {
	crds, err := filepath.Glob(filepath.Join(root, "config", "crd", "bases", "*.yaml"))
	if err != nil || len(crds) == 0 {
		return fmt.Errorf("find the CRDs: %v", err)
	}
	var objs []client.Object
	for _, f := range crds {
		raw, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		u := &unstructured.Unstructured{}
		if err := utilyaml.Unmarshal(raw, &u.Object); err != nil {
			return fmt.Errorf("decode %s: %w", f, err)
		}
		objs = append(objs, u)
	}
	objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNamespace}})
	objs = append(objs, &networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: "nginx"},
		Spec: networkingv1.IngressClassSpec{Controller: "k8s.io/ingress-nginx"}})
	for i := range nodes {
		capacity := corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("1000"),
			corev1.ResourceMemory: resource.MustParse("4Ti"),
			corev1.ResourcePods:   *resource.NewQuantity(podsPerNode, resource.DecimalSI),
		}
		objs = append(objs, &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name:        fmt.Sprintf("opbench-node-%d", i),
				Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
				Labels: map[string]string{"type": "kwok", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
					"kubernetes.io/hostname": fmt.Sprintf("opbench-node-%d", i)},
			},
			Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
		})
	}
	objs = append(objs, &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: "opbench-static", Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}},
		Provisioner:       "kubernetes.io/no-provisioner",
		VolumeBindingMode: ptr(storagev1.VolumeBindingImmediate),
	})
	for i := range volumes {
		objs = append(objs, &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("opbench-pv-%d", i)},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Gi")},
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
				StorageClassName:              "opbench-static",
				PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{
					Path: fmt.Sprintf("/var/lib/opbench/pv-%d", i)}},
			},
		})
	}
	// The other default class of kwok-cluster.sh would make two defaults.
	_ = c.Delete(ctx, &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "kwok-static"}})
	if err := parallel(ctx, 16, len(objs), func(ctx context.Context, i int) error {
		err := c.Create(ctx, objs[i])
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	}); err != nil {
		return fmt.Errorf("create fixtures: %w", err)
	}
	// The CRD must be served before CollabClusters are created.
	return poll(ctx, time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		err := c.List(ctx, &collabv1.CollabClusterList{}, client.InNamespace(benchNamespace))
		return err == nil, nil
	})
}

// unrelated creates n Secrets and n Pods the operator has nothing to do
// with, in ten namespaces of their own. The pods are held back from
// scheduling by a gate, so they are just objects, as pods of other
// workloads are to the operator.
func unrelated(ctx context.Context, c client.Client, n int) error {
	const namespaces = 10
	for i := range namespaces {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("unrelated-%d", i)}}
		if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	// Pods need the namespace's default ServiceAccount, which the
	// controller-manager creates a moment after the namespace.
	if err := poll(ctx, 2*time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		for i := range namespaces {
			err := c.Get(ctx, client.ObjectKey{Namespace: fmt.Sprintf("unrelated-%d", i), Name: "default"}, &corev1.ServiceAccount{})
			if apierrors.IsNotFound(err) {
				return false, nil
			}
			if err != nil {
				return false, err
			}
		}
		return true, nil
	}); err != nil {
		return fmt.Errorf("wait for the default ServiceAccounts: %w", err)
	}
	payload := bytes.Repeat([]byte("x"), 1024)
	return parallel(ctx, 32, 2*n, func(ctx context.Context, i int) error {
		ns := fmt.Sprintf("unrelated-%d", i%namespaces)
		labels := map[string]string{"app.kubernetes.io/name": "unrelated", "app.kubernetes.io/managed-by": "helm"}
		var obj client.Object
		if i < n {
			obj = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("secret-%d", i), Labels: labels},
				Data: map[string][]byte{"payload": payload}}
		} else {
			obj = &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("pod-%d", i), Labels: labels},
				Spec: corev1.PodSpec{
					SchedulingGates: []corev1.PodSchedulingGate{{Name: "bench.tandem.dev/never"}},
					Containers: []corev1.Container{{Name: "app", Image: "registry.example.test/unrelated:1",
						Env: []corev1.EnvVar{{Name: "PAYLOAD", Value: string(payload)}}}},
				},
			}
		}
		err := c.Create(ctx, obj)
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
}

// child is one object the operator must create.
type child struct {
	kind string
	key  client.ObjectKey
}

// expectedChildren are the children specs.All builds for the clusters.
func expectedChildren(clusters []*collabv1.CollabCluster) ([]child, error) {
	var out []child
	for _, cc := range clusters {
		objs, err := specs.All(cc, specs.Inputs{OperatorImage: runtimeImage})
		if err != nil {
			return nil, err
		}
		for _, o := range objs {
			kind := fmt.Sprintf("%T", o)
			out = append(out, child{kind: kind, key: client.ObjectKey{Namespace: cc.Namespace, Name: o.GetName()}})
		}
	}
	return out, nil
}

// missingChildren counts the expected children not in the harness cache.
func missingChildren(ctx context.Context, c client.Reader, want []child) (int, error) {
	have := map[string]map[string]bool{}
	lists := map[string]client.ObjectList{
		"*v1.Secret": &corev1.SecretList{}, "*v1.Service": &corev1.ServiceList{}, "*v1.ConfigMap": &corev1.ConfigMapList{},
		"*v1.StatefulSet": &appsv1.StatefulSetList{}, "*v1.Deployment": &appsv1.DeploymentList{},
		"*v1.Ingress": &networkingv1.IngressList{}, "*v1.PodDisruptionBudget": &policyv1.PodDisruptionBudgetList{},
		"*v1.NetworkPolicy": &networkingv1.NetworkPolicyList{},
	}
	missing := 0
	for _, w := range want {
		names, ok := have[w.kind]
		if !ok {
			list, known := lists[w.kind]
			if !known {
				return 0, fmt.Errorf("no list for child kind %s", w.kind)
			}
			if err := c.List(ctx, list, client.InNamespace(benchNamespace)); err != nil {
				return 0, err
			}
			names = map[string]bool{}
			items, err := meta.ExtractList(list)
			if err != nil {
				return 0, err
			}
			for _, it := range items {
				if o, ok := it.(client.Object); ok {
					names[o.GetName()] = true
				}
			}
			have[w.kind] = names
		}
		if !names[w.key.Name] {
			missing++
		}
	}
	return missing, nil
}

// readiness records when the harness first saw each pod and each
// CollabCluster Ready.
type readiness struct {
	mu       sync.Mutex
	pods     map[string]time.Time // pod name: Ready since
	podOwner map[string]string    // pod name: CollabCluster
	clusters map[string]time.Time
}

func newReadiness() *readiness {
	return &readiness{pods: map[string]time.Time{}, podOwner: map[string]string{}, clusters: map[string]time.Time{}}
}

func (r *readiness) watch(ctx context.Context, c cache.Cache) error {
	podInf, err := c.GetInformer(ctx, &corev1.Pod{})
	if err != nil {
		return err
	}
	if _, err := podInf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.pod(obj) },
		UpdateFunc: func(_, obj any) { r.pod(obj) },
	}); err != nil {
		return err
	}
	ccInf, err := c.GetInformer(ctx, &collabv1.CollabCluster{})
	if err != nil {
		return err
	}
	_, err = ccInf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.cluster(obj) },
		UpdateFunc: func(_, obj any) { r.cluster(obj) },
	})
	return err
}

func (r *readiness) pod(obj any) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	ready := false
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			ready = true
		}
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.podOwner[p.Name] = p.Labels[specs.LabelInstance]
	if _, seen := r.pods[p.Name]; ready && !seen {
		r.pods[p.Name] = now
	}
}

func (r *readiness) cluster(obj any) {
	cc, ok := obj.(*collabv1.CollabCluster)
	if !ok || !meta.IsStatusConditionTrue(cc.Status.Conditions, collabv1.ConditionReady) {
		return
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, seen := r.clusters[cc.Name]; !seen {
		r.clusters[cc.Name] = now
	}
}

func (r *readiness) clustersReady() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.clusters)
}

// timeline returns when the last pod and the last CollabCluster became
// Ready, and per CollabCluster the lag from its own last pod.
func (r *readiness) timeline() (lastPod, lastCluster time.Time, lags []float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	perCluster := map[string]time.Time{}
	for name, t := range r.pods {
		if t.After(lastPod) {
			lastPod = t
		}
		owner := r.podOwner[name]
		if t.After(perCluster[owner]) {
			perCluster[owner] = t
		}
	}
	for name, t := range r.clusters {
		if t.After(lastCluster) {
			lastCluster = t
		}
		if p, ok := perCluster[name]; ok {
			lags = append(lags, t.Sub(p).Seconds())
		}
	}
	sort.Float64s(lags)
	return lastPod, lastCluster, lags
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)-1))
	return sorted[i]
}

// operator is a running operator process.
type operator struct {
	cmd     *exec.Cmd
	metrics string
	done    chan struct{}
	once    sync.Once
}

func startOperator(ctx context.Context, cfg Config, kubeconfig, logFile string) (*operator, error) {
	metricsAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	probeAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	logOut, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	args := append([]string{"--kubeconfig", kubeconfig, "--metrics-bind-address", metricsAddr,
		"--health-probe-bind-address", probeAddr, "--zap-log-level", "error"}, cfg.ManagerArgs...)
	cmd := exec.Command(cfg.Manager, args...)
	cmd.Env = append(os.Environ(), "RUNTIME_IMAGE="+runtimeImage)
	cmd.Stdout, cmd.Stderr = logOut, logOut
	if err := cmd.Start(); err != nil {
		logOut.Close()
		return nil, fmt.Errorf("start %s: %w", cfg.Manager, err)
	}
	op := &operator{cmd: cmd, metrics: "http://" + metricsAddr + "/metrics", done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logOut.Close()
		close(op.done)
	}()
	if err := poll(ctx, 2*time.Minute, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		select {
		case <-op.done:
			tail, _ := os.ReadFile(logFile)
			return false, fmt.Errorf("operator exited:\n%s", tail)
		default:
		}
		_, err := scrape(ctx, op.metrics)
		return err == nil, nil
	}); err != nil {
		op.stop()
		return nil, err
	}
	return op, nil
}

func (o *operator) pid() int { return o.cmd.Process.Pid }

func (o *operator) stop() {
	o.once.Do(func() {
		_ = o.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-o.done:
		case <-time.After(30 * time.Second):
			_ = o.cmd.Process.Kill()
			<-o.done
		}
	})
}

// metricsView is what the harness reads from the operator's metrics.
type metricsView struct {
	counts     apiCounts
	reconciles float64
	queue      float64
	// kinds are the requests by verb and resource; not compared by
	// reconciled, counts already say whether anything moved.
	kinds map[string]int
}

func (o *operator) view(ctx context.Context) (metricsView, error) {
	fams, err := scrape(ctx, o.metrics)
	if err != nil {
		return metricsView{}, err
	}
	return metricsView{
		counts:     countsOf(fams),
		reconciles: sum(fams, "controller_runtime_reconcile_total", map[string]string{"controller": "collabcluster"}),
		queue:      sum(fams, "workqueue_depth", map[string]string{"name": "collabcluster"}),
		kinds:      byKind(fams),
	}, nil
}

// quiet waits until the operator has made no write for five seconds and
// returns its counts.
func (o *operator) quiet(ctx context.Context) (apiCounts, error) {
	var last, latest metricsView
	since := time.Now()
	err := poll(ctx, 5*time.Minute, 500*time.Millisecond, func(ctx context.Context) (bool, error) {
		v, err := o.view(ctx)
		if err != nil {
			return false, err
		}
		latest = v
		if v.counts.Writes != last.counts.Writes || v.queue > 0 {
			last, since = v, time.Now()
		}
		return time.Since(since) >= 5*time.Second, nil
	})
	return latest.counts, err
}

// reconciled waits until the operator has run at least n reconciles, its
// queue is empty, and nothing more happened for three seconds.
func (o *operator) reconciled(ctx context.Context, n float64) (metricsView, error) {
	var last metricsView
	since := time.Now()
	err := poll(ctx, 10*time.Minute, 250*time.Millisecond, func(ctx context.Context) (bool, error) {
		v, err := o.view(ctx)
		if err != nil {
			return false, err
		}
		moved := v.counts != last.counts || v.reconciles != last.reconciles || v.queue != last.queue
		last = v
		if moved {
			since = time.Now()
		}
		return v.reconciles >= n && v.queue == 0 && time.Since(since) >= 3*time.Second, nil
	})
	return last, err
}

// formatKinds lists per-cluster request counts, largest first.
func formatKinds(kinds map[string]float64) string {
	keys := make([]string, 0, len(kinds))
	for k := range kinds {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if kinds[keys[i]] != kinds[keys[j]] {
			return kinds[keys[i]] > kinds[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var b bytes.Buffer
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %.2f", k, kinds[k])
	}
	return b.String()
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func command(ctx context.Context, env []string, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// poll calls check until it says done, fails, or timeout passes.
func poll(ctx context.Context, timeout, every time.Duration, check func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		done, err := check(ctx)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

// parallel runs f for 0..n-1 on workers goroutines; the first error wins.
func parallel(ctx context.Context, workers, n int, f func(context.Context, int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(ctx, i); err != nil {
					errs <- err
					cancel()
					return
				}
			}
		}()
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(slices.Compact(all)...)
}

func ptr[T any](v T) *T { return &v }
