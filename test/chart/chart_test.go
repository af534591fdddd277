// Package chart_test checks the Helm chart in charts/tandem and the kustomize
// tree in config/ against what controller-gen generates, by rendering them
// with the real helm and kubectl binaries built by hack/tools.sh.
package chart_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/tandem-dev/tandem/test/testtools"
)

const (
	crdFile       = "config/crd/bases/collab.tandem.dev_collabclusters.yaml"
	roleFile      = "config/rbac/role.yaml"
	chartDir      = "charts/tandem"
	keepAnno      = "helm.sh/resource-policy"
	releaseName   = "tandem"
	releaseNS     = "tandem-system"
	renderTimeout = 2 * time.Minute
)

// run executes a command in the repository root and returns its stdout, or an
// error carrying the command line and its stderr.
func run(ctx context.Context, dir, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\n%s%s", filepath.Base(bin), strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	return stdout.String(), nil
}

// decodeAll parses a multi-document YAML stream, dropping empty documents.
func decodeAll(t *testing.T, r io.Reader) []*unstructured.Unstructured {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs
			}
			t.Fatalf("decode YAML: %v", err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

func decodeFile(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open %s (run `make manifests`): %v", path, err)
	}
	defer f.Close()
	return decodeAll(t, f)
}

// helmTemplate renders the chart with --set style overrides.
func helmTemplate(t *testing.T, helm string, sets ...string) ([]*unstructured.Unstructured, error) {
	t.Helper()
	root := testtools.RepoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), renderTimeout)
	defer cancel()
	args := []string{"template", releaseName, chartDir, "--namespace", releaseNS}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	out, err := run(ctx, root, helm, args...)
	if err != nil {
		return nil, err
	}
	return decodeAll(t, strings.NewReader(out)), nil
}

func find(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var found []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			found = append(found, o)
		}
	}
	return found
}

func findNamed(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range find(objs, kind) {
		if o.GetName() == name {
			return o
		}
	}
	var names []string
	for _, o := range objs {
		names = append(names, o.GetKind()+"/"+o.GetName())
	}
	t.Fatalf("no %s %q among %v", kind, name, names)
	return nil
}

// generatedRules returns the rules controller-gen wrote into role.yaml.
func generatedRules(t *testing.T) []any {
	t.Helper()
	roles := find(decodeFile(t, filepath.Join(testtools.RepoRoot(t), roleFile)), "ClusterRole")
	if len(roles) != 1 {
		t.Fatalf("%s: want exactly one ClusterRole, got %d", roleFile, len(roles))
	}
	rules, ok, err := unstructured.NestedSlice(roles[0].Object, "rules")
	if err != nil || !ok || len(rules) == 0 {
		t.Fatalf("%s: no rules (found=%v, err=%v)", roleFile, ok, err)
	}
	return rules
}

func rulesOf(t *testing.T, o *unstructured.Unstructured) []any {
	t.Helper()
	rules, _, err := unstructured.NestedSlice(o.Object, "rules")
	if err != nil {
		t.Fatalf("%s %s: rules: %v", o.GetKind(), o.GetName(), err)
	}
	return rules
}

func TestChartRBACMatchesGeneratedRole(t *testing.T) {
	helm := testtools.Tool(t.Context(), t, "helm")
	want := generatedRules(t)
	tests := []struct {
		name     string
		sets     []string
		kind     string
		wantNS   []string // namespaces of the Roles; empty for a ClusterRole
		bindKind string
	}{
		{name: "all namespaces", kind: "ClusterRole", bindKind: "ClusterRoleBinding"},
		{
			name:     "watched namespaces",
			sets:     []string{"watchNamespaces={team-a,team-b}"},
			kind:     "Role",
			wantNS:   []string{"team-a", "team-b"},
			bindKind: "RoleBinding",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := helmTemplate(t, helm, tc.sets...)
			if err != nil {
				t.Fatal(err)
			}
			var got []*unstructured.Unstructured
			for _, o := range find(objs, tc.kind) {
				if o.GetName() == "tandem-manager-role" {
					got = append(got, o)
				}
			}
			wantCount := max(1, len(tc.wantNS))
			if len(got) != wantCount {
				t.Fatalf("want %d %s tandem-manager-role, got %d", wantCount, tc.kind, len(got))
			}
			for i, role := range got {
				if len(tc.wantNS) > 0 && role.GetNamespace() != tc.wantNS[i] {
					t.Errorf("%s %d: namespace %q, want %q", tc.kind, i, role.GetNamespace(), tc.wantNS[i])
				}
				if r := rulesOf(t, role); !reflect.DeepEqual(r, want) {
					t.Errorf("%s in %q: rules differ from %s (run hack/sync-chart.sh)\n got: %v\nwant: %v", tc.kind, role.GetNamespace(), roleFile, r, want)
				}
			}
			// Each role is bound to the chart's ServiceAccount.
			bindings := 0
			for _, b := range find(objs, tc.bindKind) {
				if b.GetName() != "tandem-manager-rolebinding" {
					continue
				}
				bindings++
				subjects, _, _ := unstructured.NestedSlice(b.Object, "subjects")
				if len(subjects) != 1 {
					t.Fatalf("%s: want one subject, got %v", tc.bindKind, subjects)
				}
				s := subjects[0].(map[string]any)
				if s["kind"] != "ServiceAccount" || s["name"] != "tandem" || s["namespace"] != releaseNS {
					t.Errorf("%s subject = %v, want ServiceAccount %s/tandem", tc.bindKind, s, releaseNS)
				}
			}
			if bindings != wantCount {
				t.Errorf("want %d %s, got %d", wantCount, tc.bindKind, bindings)
			}
		})
	}
}

func TestChartCRDMatchesGenerated(t *testing.T) {
	helm := testtools.Tool(t.Context(), t, "helm")
	generated := find(decodeFile(t, filepath.Join(testtools.RepoRoot(t), crdFile)), "CustomResourceDefinition")
	if len(generated) != 1 {
		t.Fatalf("%s: want one CRD, got %d", crdFile, len(generated))
	}
	want := generated[0]
	tests := []struct {
		name     string
		sets     []string
		wantCRD  bool
		wantKeep bool
	}{
		{name: "defaults", wantCRD: true, wantKeep: true},
		{name: "not kept", sets: []string{"crds.keep=false"}, wantCRD: true, wantKeep: false},
		{name: "not created", sets: []string{"crds.create=false"}, wantCRD: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := helmTemplate(t, helm, tc.sets...)
			if err != nil {
				t.Fatal(err)
			}
			crds := find(objs, "CustomResourceDefinition")
			if !tc.wantCRD {
				if len(crds) != 0 {
					t.Fatalf("crds.create=false still renders %d CRDs", len(crds))
				}
				return
			}
			if len(crds) != 1 {
				t.Fatalf("want one CRD, got %d", len(crds))
			}
			got := crds[0].DeepCopy()
			annos := got.GetAnnotations()
			if keep := annos[keepAnno] == "keep"; keep != tc.wantKeep {
				t.Errorf("annotation %s=keep present=%v, want %v", keepAnno, keep, tc.wantKeep)
			}
			delete(annos, keepAnno)
			got.SetAnnotations(annos)
			if !reflect.DeepEqual(got.Object, want.Object) {
				t.Errorf("chart CRD differs from %s: run hack/sync-chart.sh", crdFile)
			}
		})
	}
}

func container(t *testing.T, deploy *unstructured.Unstructured) map[string]any {
	t.Helper()
	cs, _, err := unstructured.NestedSlice(deploy.Object, "spec", "template", "spec", "containers")
	if err != nil || len(cs) != 1 {
		t.Fatalf("deployment %s: want one container, got %d (%v)", deploy.GetName(), len(cs), err)
	}
	return cs[0].(map[string]any)
}

func envValue(t *testing.T, c map[string]any, name string) (string, bool) {
	t.Helper()
	env, _ := c["env"].([]any)
	for _, e := range env {
		m := e.(map[string]any)
		if m["name"] == name {
			v, _ := m["value"].(string)
			return v, true
		}
	}
	return "", false
}

func hasArg(c map[string]any, arg string) bool {
	args, _ := c["args"].([]any)
	for _, a := range args {
		if a == arg {
			return true
		}
	}
	return false
}

func TestChartRendersValues(t *testing.T) {
	helm := testtools.Tool(t.Context(), t, "helm")
	tests := []struct {
		name  string
		sets  []string
		check func(t *testing.T, objs []*unstructured.Unstructured)
	}{
		{
			name: "defaults",
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				d := findNamed(t, objs, "Deployment", "tandem")
				c := container(t, d)
				if c["image"] != "ghcr.io/tandem-dev/tandem:0.1.0" {
					t.Errorf("image = %v, want the appVersion tag", c["image"])
				}
				if v, _ := envValue(t, c, "RUNTIME_IMAGE"); v != c["image"] {
					t.Errorf("RUNTIME_IMAGE = %q, want the operator image %v", v, c["image"])
				}
				if v, ok := envValue(t, c, "WATCH_NAMESPACE"); !ok || v != "" {
					t.Errorf("WATCH_NAMESPACE = %q (set=%v), want empty (all namespaces)", v, ok)
				}
				for _, arg := range []string{"--leader-elect", "--max-concurrent-reconciles=16", "--kube-api-qps=200", "--kube-api-burst=400"} {
					if !hasArg(c, arg) {
						t.Errorf("args %v lack %s", c["args"], arg)
					}
				}
				sc, _ := c["securityContext"].(map[string]any)
				if sc["readOnlyRootFilesystem"] != true || sc["allowPrivilegeEscalation"] != false {
					t.Errorf("container securityContext not restricted: %v", sc)
				}
				findNamed(t, objs, "ServiceAccount", "tandem")
				findNamed(t, objs, "Service", "tandem-metrics")
				findNamed(t, objs, "Role", "tandem-leader-election-role")
				if n := len(find(objs, "ServiceMonitor")); n != 0 {
					t.Errorf("ServiceMonitor rendered by default (%d)", n)
				}
			},
		},
		{
			name: "workers and API rate limits",
			sets: []string{"workers=8", "kubeAPI.qps=50", "kubeAPI.burst=80"},
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				c := container(t, findNamed(t, objs, "Deployment", "tandem"))
				for _, arg := range []string{"--max-concurrent-reconciles=8", "--kube-api-qps=50", "--kube-api-burst=80"} {
					if !hasArg(c, arg) {
						t.Errorf("args %v lack %s", c["args"], arg)
					}
				}
			},
		},
		{
			name: "custom image, namespaces, no leader election",
			sets: []string{"image.repository=registry.example/tandem", "image.tag=1.2.3", "watchNamespaces={a,b}", "leaderElection.enabled=false"},
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				c := container(t, findNamed(t, objs, "Deployment", "tandem"))
				if v, _ := envValue(t, c, "RUNTIME_IMAGE"); v != "registry.example/tandem:1.2.3" || c["image"] != v {
					t.Errorf("image %v / RUNTIME_IMAGE %q, want registry.example/tandem:1.2.3 for both", c["image"], v)
				}
				if v, _ := envValue(t, c, "WATCH_NAMESPACE"); v != "a,b" {
					t.Errorf("WATCH_NAMESPACE = %q, want a,b", v)
				}
				if hasArg(c, "--leader-elect") {
					t.Errorf("--leader-elect passed with leaderElection.enabled=false")
				}
				if n := len(find(objs, "ClusterRoleBinding")); n != 0 {
					t.Errorf("namespaced install renders %d ClusterRoleBindings", n)
				}
			},
		},
		{
			name: "service monitor",
			sets: []string{"serviceMonitor.enabled=true", "serviceMonitor.labels.release=prom"},
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				sm := findNamed(t, objs, "ServiceMonitor", "tandem")
				if sm.GetLabels()["release"] != "prom" {
					t.Errorf("ServiceMonitor labels %v lack release=prom", sm.GetLabels())
				}
			},
		},
		{
			name: "operator alerts and dashboard",
			sets: []string{"prometheusRule.enabled=true", "prometheusRule.labels.release=prom",
				"grafanaDashboard.enabled=true", "grafanaDashboard.namespace=grafana"},
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				rule := findNamed(t, objs, "PrometheusRule", "tandem")
				if rule.GetLabels()["release"] != "prom" {
					t.Errorf("PrometheusRule labels %v lack release=prom", rule.GetLabels())
				}
				// The rendered groups are exactly the tested rule file's,
				// Prometheus templates ({{ $labels.x }}) left alone.
				var want map[string]any
				testtools.ReadYAML(t, filepath.Join(testtools.RepoRoot(t), "config", "prometheus", "operator-alerts.yaml"), &want)
				got, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
				if !reflect.DeepEqual(got, want["groups"]) {
					t.Errorf("PrometheusRule groups differ from config/prometheus/operator-alerts.yaml:\n got %v\nwant %v", got, want["groups"])
				}
				cm := findNamed(t, objs, "ConfigMap", "tandem-dashboard")
				if cm.GetNamespace() != "grafana" || cm.GetLabels()["grafana_dashboard"] != "1" {
					t.Errorf("dashboard ConfigMap in %q with labels %v, want namespace grafana and grafana_dashboard=1", cm.GetNamespace(), cm.GetLabels())
				}
				data, _, _ := unstructured.NestedString(cm.Object, "data", "tandem-collabcluster.json")
				src, err := os.ReadFile(filepath.Join(testtools.RepoRoot(t), "config", "grafana", "tandem-dashboard.json"))
				if err != nil {
					t.Fatal(err)
				}
				if data != strings.TrimRight(string(src), "\n") {
					t.Errorf("dashboard ConfigMap differs from config/grafana/tandem-dashboard.json (run hack/sync-chart.sh)")
				}
			},
		},
		{
			name: "metrics off",
			sets: []string{"metrics.enabled=false"},
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				c := container(t, findNamed(t, objs, "Deployment", "tandem"))
				if !hasArg(c, "--metrics-bind-address=0") {
					t.Errorf("args %v: metrics not turned off", c["args"])
				}
				for _, s := range find(objs, "Service") {
					if s.GetName() == "tandem-metrics" {
						t.Errorf("metrics Service rendered with metrics.enabled=false")
					}
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := helmTemplate(t, helm, tc.sets...)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, objs)
		})
	}
}

func TestChartRejectsBadValues(t *testing.T) {
	helm := testtools.Tool(t.Context(), t, "helm")
	tests := []struct {
		name    string
		sets    []string
		wantErr string
	}{
		{name: "replicas not a number", sets: []string{"replicaCount=two"}, wantErr: "replicaCount"},
		{name: "unknown pull policy", sets: []string{"image.pullPolicy=Sometimes"}, wantErr: "pullPolicy"},
		{name: "unknown key", sets: []string{"replicas=2"}, wantErr: "replicas"},
		{name: "bad log level", sets: []string{"logLevel=verbose"}, wantErr: "logLevel"},
		{name: "no workers", sets: []string{"workers=0"}, wantErr: "workers"},
		{name: "zero API qps", sets: []string{"kubeAPI.qps=0"}, wantErr: "qps"},
		{name: "bad namespace", sets: []string{"watchNamespaces={Team_A}"}, wantErr: "watchNamespaces"},
		{name: "monitor without metrics", sets: []string{"serviceMonitor.enabled=true", "metrics.enabled=false"}, wantErr: "serviceMonitor.enabled requires metrics.enabled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := helmTemplate(t, helm, tc.sets...)
			if err == nil {
				t.Fatalf("helm template with %v succeeded, want an error mentioning %q", tc.sets, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error does not mention %q:\n%v", tc.wantErr, err)
			}
		})
	}
}

func TestChartLintStrict(t *testing.T) {
	helm := testtools.Tool(t.Context(), t, "helm")
	root := testtools.RepoRoot(t)
	tests := []struct {
		name string
		sets []string
	}{
		{name: "defaults"},
		{name: "everything on", sets: []string{"serviceMonitor.enabled=true", "watchNamespaces={a}", "crds.keep=false"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), renderTimeout)
			defer cancel()
			args := []string{"lint", "--strict", chartDir}
			for _, s := range tc.sets {
				args = append(args, "--set", s)
			}
			if out, err := run(ctx, root, helm, args...); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

func TestKustomizeDefaultRenders(t *testing.T) {
	kubectl := testtools.Tool(t.Context(), t, "kubectl")
	root := testtools.RepoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), renderTimeout)
	defer cancel()
	out, err := run(ctx, root, kubectl, "kustomize", "config/default")
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeAll(t, strings.NewReader(out))
	d := findNamed(t, objs, "Deployment", "tandem-controller-manager")
	if d.GetNamespace() != "tandem-system" {
		t.Errorf("Deployment namespace %q, want tandem-system", d.GetNamespace())
	}
	c := container(t, d)
	if v, _ := envValue(t, c, "RUNTIME_IMAGE"); v == "" || v != c["image"] {
		t.Errorf("RUNTIME_IMAGE = %q, want the manager image %v", v, c["image"])
	}
	findNamed(t, objs, "CustomResourceDefinition", "collabclusters.collab.tandem.dev")
	role := findNamed(t, objs, "ClusterRole", "tandem-manager-role")
	if r := rulesOf(t, role); !reflect.DeepEqual(r, generatedRules(t)) {
		t.Errorf("kustomize ClusterRole rules differ from %s", roleFile)
	}
	findNamed(t, objs, "Service", "tandem-controller-manager-metrics-service")
}
