package opbench

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		stat string
		want time.Duration
		ok   bool
	}{
		{"1234 (manager) S 1 1234 1234 0 -1 4194560 5000 0 0 0 250 50 0 0 20 0 12 0 100 0 0", 3 * time.Second, true},
		{"1234 (a (b) c) R 1 1 1 0 -1 0 0 0 0 0 100 0 0 0 20 0 1 0 1 0 0", time.Second, true},
		{"garbage", 0, false},
	}
	for _, tc := range tests {
		got, err := parseStatCPU(tc.stat)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseStatCPU(%q) = %v, %v; want %v, ok %v", tc.stat, got, err, tc.want, tc.ok)
		}
	}
}

func TestCountsOf(t *testing.T) {
	text := `# TYPE tandem_operator_kube_api_requests_total counter
tandem_operator_kube_api_requests_total{resource="apps/deployments",verb="apply"} 10
tandem_operator_kube_api_requests_total{resource="apps/deployments",verb="watch"} 3
tandem_operator_kube_api_requests_total{resource="collab.tandem.dev/collabclusters/status",verb="patch"} 4
tandem_operator_kube_api_requests_total{resource="authorization.k8s.io/selfsubjectaccessreviews",verb="create"} 2
tandem_operator_kube_api_requests_total{resource="secrets",verb="get"} 1
# TYPE controller_runtime_reconcile_total counter
controller_runtime_reconcile_total{controller="collabcluster",result="success"} 7
controller_runtime_reconcile_total{controller="collabcluster",result="error"} 1
controller_runtime_reconcile_total{controller="other",result="success"} 100
`
	fams, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	got := countsOf(fams)
	if want := (apiCounts{Requests: 20, Writes: 14, Reviews: 2}); got != want {
		t.Errorf("countsOf = %+v, want %+v", got, want)
	}
	kinds := byKind(fams)
	if kinds["apply apps/deployments"] != 10 || kinds["patch collab.tandem.dev/collabclusters/status"] != 4 || len(kinds) != 5 {
		t.Errorf("byKind = %v", kinds)
	}
	later := map[string]int{"apply apps/deployments": 12, "watch apps/deployments": 3, "get ingressclasses": 1}
	if d := subKinds(later, kinds); len(d) != 2 || d["apply apps/deployments"] != 2 || d["get ingressclasses"] != 1 {
		t.Errorf("subKinds = %v, want the apply and the get only", d)
	}
	if n := sum(fams, "controller_runtime_reconcile_total", map[string]string{"controller": "collabcluster"}); n != 8 {
		t.Errorf("reconciles %v, want 8", n)
	}
}

func TestQuantile(t *testing.T) {
	s := []float64{1, 2, 3, 4, 5}
	if q := quantile(s, 0.5); q != 3 {
		t.Errorf("p50 %v", q)
	}
	if q := quantile(s, 1); q != 5 {
		t.Errorf("max %v", q)
	}
	if q := quantile(nil, 0.5); q != 0 {
		t.Errorf("empty %v", q)
	}
}

func TestMarkdownHasEveryRun(t *testing.T) {
	var b bytes.Buffer
	if err := Markdown(&b, []*Result{{N: 100, Load: "1 2 3"}, {N: 500, Unrelated: 5000, UnrelatedPeakRSSMB: 80}}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Operator at scale", "N = 100", "N = 500", "80 MB (5000 of each)", "not measured"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}
