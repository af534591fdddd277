// Package test holds repository-wide checks. This file proves that `make
// test` really runs envtest against the kube-apiserver and etcd built by
// hack/tools.sh: it starts the control plane, checks the stamped version and
// round-trips a Namespace. The CRD and the operator are tested by the
// controllers' own envtest suite.
package test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// wantKubeVersion is the version hack/tools.sh stamps into kube-apiserver.
const wantKubeVersion = "v1.37.2"

func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test source file")
	}
	return filepath.Dir(filepath.Dir(file))
}

func TestEnvtestSmoke(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		msg := "KUBEBUILDER_ASSETS is not set; run `make test` (it builds kube-apiserver and etcd via hack/tools.sh)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop envtest control plane: %v", err)
		}
	})

	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatalf("discovery client: %v", err)
	}
	info, err := dc.ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	if info.GitVersion != wantKubeVersion {
		t.Errorf("kube-apiserver reports %q, want %q (version stamp from hack/tools.sh)", info.GitVersion, wantKubeVersion)
	}

	tests := []struct {
		groupVersion string
		kind         string
	}{
		{"v1", "Namespace"},
		{"apiextensions.k8s.io/v1", "CustomResourceDefinition"},
		{"coordination.k8s.io/v1", "Lease"},
	}
	for _, tc := range tests {
		res, err := dc.ServerResourcesForGroupVersion(tc.groupVersion)
		if err != nil {
			t.Fatalf("resources of %s: %v", tc.groupVersion, err)
		}
		found := false
		for _, r := range res.APIResources {
			found = found || r.Kind == tc.kind
		}
		if !found {
			t.Errorf("kind %s not served in %s", tc.kind, tc.groupVersion)
		}
	}

	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "envtest-smoke", Labels: map[string]string{"tandem.dev/smoke": "yes"}}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	var got corev1.Namespace
	if err := c.Get(ctx, client.ObjectKey{Name: ns.Name}, &got); err != nil {
		t.Fatalf("get namespace: %v", err)
	}
	if got.Labels["tandem.dev/smoke"] != "yes" || got.UID == "" {
		t.Fatalf("namespace read back as %+v, want the label and a server-assigned UID", got.ObjectMeta)
	}
}
