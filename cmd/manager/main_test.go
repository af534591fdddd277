package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
)

func TestSplitNamespaces(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"team-a", []string{"team-a"}},
		{"team-a,team-b", []string{"team-a", "team-b"}},
		{" team-a , ,team-b, ", []string{"team-a", "team-b"}},
	}
	for _, tc := range tests {
		if got := splitNamespaces(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("splitNamespaces(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestManagerRuns starts the real manager (flags, leader election, probes,
// the controller) against an envtest control plane and checks that it
// takes the lease, serves /healthz and reconciles a CollabCluster.
func TestManagerRuns(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		msg := "KUBEBUILDER_ASSETS is not set; run `make test`"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	probeAddr := l.Addr().String()
	l.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	t.Setenv("RUNTIME_IMAGE", "registry.example.test/tandem:manager-test")
	go func() {
		done <- run(ctx, []string{
			"--metrics-bind-address=0",
			"--health-probe-bind-address=" + probeAddr,
			"--leader-elect",
			"--leader-election-namespace=default",
			"--watch-namespace=default,other",
			"--zap-log-level=error",
			"--max-concurrent-reconciles=2",
			"--kube-api-qps=50",
			"--kube-api-burst=60",
		}, func() (*rest.Config, error) { return cfg, nil })
	}()

	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = collabv1.AddToScheme(scheme)
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	cc := &collabv1.CollabCluster{ObjectMeta: metav1.ObjectMeta{Name: "smoke", Namespace: "default"}}
	if err := c.Create(ctx, cc); err != nil {
		t.Fatalf("create CollabCluster: %v", err)
	}

	steps := []struct {
		what  string
		check func() error
	}{
		{"leader election lease", func() error {
			return c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "tandem-operator.collab.tandem.dev"}, &coordinationv1.Lease{})
		}},
		{"healthz", func() error {
			resp, err := http.Get("http://" + probeAddr + "/healthz")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		}},
		{"runtime Deployment with the RUNTIME_IMAGE", func() error {
			dep := &appsv1.Deployment{}
			if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "smoke-runtime"}, dep); err != nil {
				return err
			}
			if img := dep.Spec.Template.Spec.Containers[0].Image; img != "registry.example.test/tandem:manager-test" {
				return fmt.Errorf("image %s", img)
			}
			return nil
		}},
	}
	for _, s := range steps {
		deadline := time.Now().Add(30 * time.Second)
		for err := s.check(); err != nil; err = s.check() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v", s.what, err)
			}
			select {
			case err := <-done:
				t.Fatalf("manager exited early: %v", err)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("manager returned %v after cancel, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("manager did not stop within 30s of cancel")
	}
}

func TestBadFlag(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--no-such-flag"}, "no-such-flag"},
		{[]string{"--max-concurrent-reconciles=0"}, "--max-concurrent-reconciles must be at least 1"},
		{[]string{"--kube-api-qps=0"}, "--kube-api-qps must be positive"},
		{[]string{"--kube-api-qps=-5"}, "--kube-api-qps must be positive"},
		{[]string{"--kube-api-burst=0"}, "--kube-api-burst must be at least 1"},
	}
	for _, tc := range tests {
		err := run(context.Background(), tc.args, func() (*rest.Config, error) {
			return nil, errors.New("must not be called")
		})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run %v: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}
