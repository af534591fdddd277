// Package monitoring runs a real Prometheus (built from its Go module by
// hack/tools.sh) against a real distributed runtime (Redis, PostgreSQL),
// with a scrape configuration built from the PodMonitor the operator
// writes (its selector, port and relabelings applied to the pod metadata
// Kubernetes service discovery would give) and the alert rules it writes:
// the flush-stalled alert fires when PostgreSQL stops and resolves when it
// comes back, /readyz names PostgreSQL meanwhile, and every dashboard query
// and template variable returns data.
package monitoring

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
	"github.com/tandem-dev/tandem/internal/specs"
	"github.com/tandem-dev/tandem/internal/testsvc"
	"github.com/tandem-dev/tandem/runtime/client"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/test/testtools"
)

// The CollabCluster the rules and the dashboard are scoped to.
const (
	ccNamespace = "tandem"
	ccName      = "notes"
)

func TestPrometheusAlertsAndDashboard(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	started := time.Now()
	promBin := testtools.Tool(ctx, t, "prometheus")
	root := testtools.RepoRoot(t)
	dir := t.TempDir()

	redis := testsvc.StartRedis(t)
	pg := testsvc.StartPostgres(t)
	runtimeAddr := testtools.FreeAddr(t)
	startRuntime(ctx, t, root, dir, runtimeAddr, redis.URL(), pg.URL())

	// The CollabCluster as the operator sees it: a short flush threshold
	// so the test waits seconds, not minutes.
	cc := &collabv1.CollabCluster{}
	cc.Name, cc.Namespace = ccName, ccNamespace
	cc.Spec.Monitoring = &collabv1.MonitoringSpec{Alerts: collabv1.AlertsSpec{FlushStalledSeconds: ptr.To[int32](10)}}
	promAddr := testtools.FreeAddr(t)
	startPrometheus(ctx, t, promBin, dir, promAddr, runtimeAddr, cc)
	prom := &promAPI{base: "http://" + promAddr}

	// Editing traffic, so every series has samples.
	editor := client.New(client.Options{URL: "ws://" + runtimeAddr + "/v1/docs/watched/ws", ClientID: "editor", Reconnects: 100})
	if err := editor.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer editor.Close()
	stopTyping := typeSteadily(ctx, t, editor)
	defer stopTyping()
	// A connection that comes and goes, for the closes panel.
	brief := client.New(client.Options{URL: "ws://" + runtimeAddr + "/v1/docs/watched/ws", ClientID: "brief"})
	if err := brief.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	brief.Close()
	// A client that sends garbage, for the errors panel: it is answered
	// bad_message and nothing else happens.
	bad, _, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+runtimeAddr+"/v1/docs/watched/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	for _, msg := range []string{`{"type":"hello","v":1,"client":"garbage"}`, `not json`} {
		if err := bad.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}

	prom.waitFor(ctx, t, "the runtime scraped and up", `up{namespace="tandem",collabcluster="notes"} == 1`)
	// The targets the PodMonitor's selector does not select are dropped:
	// the runtime pod is the only thing scraped.
	if v, err := prom.query(ctx, `up`); err != nil || len(v) != 1 || v[0].Metric["pod"] != runtimePod {
		t.Fatalf("up = %+v, %v; want only the runtime pod %s", v, err, runtimePod)
	}
	prom.waitFor(ctx, t, "the bad message counted", `sum(tandem_errors_total{namespace="tandem",collabcluster="notes",code="bad_message"}) > 0`)
	prom.waitFor(ctx, t, "acks recorded", `sum(tandem_acks_total{namespace="tandem",collabcluster="notes",kind="commit"}) > 0`)
	if got := prom.alertState(ctx, t, "TandemFlushStalled"); got != "" {
		t.Fatalf("TandemFlushStalled is %s while PostgreSQL is up", got)
	}

	// PostgreSQL stops: edits are still acknowledged (they wait in Redis),
	// the oldest unpersisted one ages, and the alert fires after its "for".
	pg.Stop()
	stopped := time.Now()
	// The runtime stays ready (PostgreSQL is informational in distributed
	// mode) and its /readyz says PostgreSQL is what fails.
	waitReadyz(ctx, t, runtimeAddr, "postgres named as failing", func(body string) bool {
		return strings.Contains(body, "\n[-]postgres failed (informational): ") &&
			strings.HasPrefix(body, "[+]redis ok\n") && strings.HasSuffix(body, "\nok\n")
	})
	prom.waitAlert(ctx, t, "TandemFlushStalled", "pending")
	prom.waitAlert(ctx, t, "TandemFlushStalled", "firing")
	t.Logf("TandemFlushStalled firing %v after PostgreSQL stopped", time.Since(stopped).Round(time.Second))

	// Every dashboard query returns data now: the flush is failing, so
	// the PostgreSQL panels have something to show too.
	dashboard := filepath.Join(root, "config", "grafana", "tandem-dashboard.json")
	checkDashboard(ctx, t, prom, dashboard)

	// PostgreSQL comes back: the flushers catch up and the alert resolves.
	pg.Start()
	back := time.Now()
	prom.waitFor(ctx, t, "flush caught up", `max(tandem_flush_oldest_unpersisted_seconds{namespace="tandem",collabcluster="notes"}) == 0`)
	prom.waitAlert(ctx, t, "TandemFlushStalled", "")
	t.Logf("TandemFlushStalled resolved %v after PostgreSQL came back", time.Since(back).Round(time.Second))
	waitReadyz(ctx, t, runtimeAddr, "every dependency healthy again", func(body string) bool {
		return body == "[+]redis ok\n[+]postgres ok\nok\n"
	})
	renderDashboard(ctx, t, prom, dashboard, started)
}

// startRuntime builds and starts tandem-runtime in distributed mode.
func startRuntime(ctx context.Context, t *testing.T, root, dir, addr, redisURL, pgURL string) {
	t.Helper()
	bin := filepath.Join(dir, "tandem-runtime")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/tandem-runtime")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build tandem-runtime: %v\n%s", err, out)
	}
	var logs bytes.Buffer
	cmd := exec.Command(bin, "--addr", addr, "--auth", "anonymous", "--redis-url", redisURL, "--postgres-url", pgURL,
		"--flush-interval", "100ms")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("runtime log:\n%s", tail(logs.String(), 40))
		}
	})
	waitHTTP(ctx, t, "http://"+addr+"/readyz")
}

// runtimePod is the runtime pod the test's target stands for.
const runtimePod = ccName + "-runtime-6f9c8d7b5-x2k4p"

// startPrometheus runs Prometheus with what the operator writes: the
// PodMonitor turned into a scrape configuration the way prometheus-operator
// does it, and the PrometheusRule's group as the rule file. The targets
// carry the __meta_kubernetes_* labels Kubernetes service discovery would
// give the runtime pod (from the Deployment's pod template) and two pods
// the selector must drop, and the series get their namespace, pod and
// collabcluster labels only through the PodMonitor's relabelings. Scrapes and evaluations run every second (not
// the endpoint's interval) so the test waits seconds.
func startPrometheus(ctx context.Context, t *testing.T, bin, dir, addr, target string, cc *collabv1.CollabCluster) {
	t.Helper()
	pm := specs.RuntimePodMonitor(cc)
	rules, err := yaml.Marshal(map[string]any{"groups": []any{specs.RuntimeRuleGroup(cc)}})
	if err != nil {
		t.Fatal(err)
	}
	ruleFile := filepath.Join(dir, "runtime-alerts.yaml")
	if err := os.WriteFile(ruleFile, rules, 0o644); err != nil {
		t.Fatal(err)
	}
	redis, err := specs.RedisStatefulSet(cc)
	if err != nil || redis == nil {
		t.Fatalf("Redis StatefulSet: %v, %v", redis, err)
	}
	// Besides the runtime pod, two pods the selector must not keep: this
	// CollabCluster's Redis, and the runtime pod of another CollabCluster
	// in the namespace (same port name, so only the instance label tells).
	other := cc.DeepCopy()
	other.Name = "other"
	targets := []any{
		podTarget(target, runtimePod, specs.RuntimeDeployment(cc, "tandem:test", "hash").Spec.Template),
		podTarget(target, redis.Name+"-0", redis.Spec.Template),
		podTarget(target, other.Name+"-runtime-7d4b9c6f8-q8m2z", specs.RuntimeDeployment(other, "tandem:test", "hash").Spec.Template),
	}
	scrape := podMonitorScrapeConfig(t, pm)
	scrape["static_configs"] = targets
	config := map[string]any{
		"global":         map[string]any{"scrape_interval": "1s", "evaluation_interval": "1s"},
		"rule_files":     []any{ruleFile},
		"scrape_configs": []any{scrape},
	}
	b, err := yaml.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	cmd := exec.Command(bin, "--config.file="+configFile, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", tail(logs.String(), 40))
		}
	})
	waitHTTP(ctx, t, "http://"+addr+"/-/ready")
}

// podTarget is a static target at addr labelled with what Kubernetes
// service discovery (role pod) gives each port of a pod's first container:
// its namespace, name, container, port, and every pod label as
// __meta_kubernetes_pod_label_<name> and _labelpresent_<name>.
func podTarget(addr, pod string, tmpl corev1.PodTemplateSpec) map[string]any {
	c := tmpl.Spec.Containers[0]
	labels := map[string]any{
		"__meta_kubernetes_namespace":                 ccNamespace,
		"__meta_kubernetes_pod_name":                  pod,
		"__meta_kubernetes_pod_container_name":        c.Name,
		"__meta_kubernetes_pod_container_port_name":   c.Ports[0].Name,
		"__meta_kubernetes_pod_container_port_number": strconv.Itoa(int(c.Ports[0].ContainerPort)),
	}
	for k, v := range tmpl.Labels {
		labels["__meta_kubernetes_pod_label_"+sanitizeLabel(k)] = v
		labels["__meta_kubernetes_pod_labelpresent_"+sanitizeLabel(k)] = "true"
	}
	return map[string]any{"targets": []any{addr}, "labels": labels}
}

var invalidLabelChars = regexp.MustCompile(`[^a-zA-Z0-9_]`)

// sanitizeLabel is how service discovery turns a Kubernetes label name
// into part of a Prometheus label name.
func sanitizeLabel(name string) string { return invalidLabelChars.ReplaceAllString(name, "_") }

// podMonitorScrapeConfig is the scrape job prometheus-operator generates
// for pm's single endpoint: keep the pods its selector matches and the
// container port it names, set namespace, container, pod, job and
// endpoint, then apply the endpoint's own relabelings.
func podMonitorScrapeConfig(t *testing.T, pm *unstructured.Unstructured) map[string]any {
	t.Helper()
	eps, _, _ := unstructured.NestedSlice(pm.Object, "spec", "podMetricsEndpoints")
	if len(eps) != 1 {
		t.Fatalf("PodMonitor has %d endpoints; the test knows one", len(eps))
	}
	ep := eps[0].(map[string]any)
	for k := range ep {
		switch k {
		case "port", "path", "interval", "relabelings":
		default:
			t.Fatalf("PodMonitor endpoint field %q is not translated by the test", k)
		}
	}
	port, _ := ep["port"].(string)
	match, _, _ := unstructured.NestedStringMap(pm.Object, "spec", "selector", "matchLabels")
	if len(match) == 0 {
		t.Fatal("PodMonitor has no spec.selector.matchLabels")
	}
	var relabel []any
	keys := make([]string, 0, len(match))
	for k := range match {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		relabel = append(relabel, map[string]any{
			"action":        "keep",
			"source_labels": []any{"__meta_kubernetes_pod_label_" + sanitizeLabel(k), "__meta_kubernetes_pod_labelpresent_" + sanitizeLabel(k)},
			"regex":         "(" + regexp.QuoteMeta(match[k]) + ");true",
		})
	}
	relabel = append(relabel,
		map[string]any{"action": "keep", "source_labels": []any{"__meta_kubernetes_pod_container_port_name"}, "regex": port},
		map[string]any{"source_labels": []any{"__meta_kubernetes_namespace"}, "target_label": "namespace"},
		map[string]any{"source_labels": []any{"__meta_kubernetes_pod_container_name"}, "target_label": "container"},
		map[string]any{"source_labels": []any{"__meta_kubernetes_pod_name"}, "target_label": "pod"},
		map[string]any{"target_label": "job", "replacement": pm.GetNamespace() + "/" + pm.GetName()},
		map[string]any{"target_label": "endpoint", "replacement": port},
	)
	rls, _ := ep["relabelings"].([]any)
	if len(rls) == 0 {
		t.Fatal("PodMonitor endpoint has no relabelings; the collabcluster label comes from them")
	}
	fields := map[string]string{"sourceLabels": "source_labels", "separator": "separator", "targetLabel": "target_label",
		"regex": "regex", "modulus": "modulus", "replacement": "replacement", "action": "action"}
	for _, r := range rls {
		out := map[string]any{}
		for k, v := range r.(map[string]any) {
			name, ok := fields[k]
			if !ok {
				t.Fatalf("PodMonitor relabeling field %q is not translated by the test", k)
			}
			if k == "action" {
				v = strings.ToLower(v.(string))
			}
			out[name] = v
		}
		relabel = append(relabel, out)
	}
	return map[string]any{
		"job_name":        "podMonitor/" + pm.GetNamespace() + "/" + pm.GetName() + "/0",
		"metrics_path":    ep["path"],
		"honor_labels":    false,
		"relabel_configs": relabel,
	}
}

// waitReadyz waits until the runtime's /readyz answers 200 with a body
// that ok accepts.
func waitReadyz(ctx context.Context, t *testing.T, addr, what string, ok func(string) bool) {
	t.Helper()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && ok(string(b)) {
				return
			}
			last = fmt.Sprintf("%d %q", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("/readyz: %s: last answer %s", what, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// typeSteadily appends a character every 100 ms until stopped.
func typeSteadily(ctx context.Context, t *testing.T, c *client.Client) func() {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_ = c.EditFunc(func(text string) ot.Op {
					n := len([]rune(text))
					if n == 0 {
						return ot.Op{{Insert: "x"}}
					}
					return ot.Op{{Retain: n}, {Insert: "x"}}
				})
			}
		}
	}()
	return func() { cancel(); <-done }
}

// checkDashboard runs every target of every panel, with the dashboard's
// variables set to the CollabCluster, and wants data from each.
func checkDashboard(ctx context.Context, t *testing.T, prom *promAPI, file string) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	vars := strings.NewReplacer("$namespace", ccNamespace, "$collabcluster", ccName, "$__rate_interval", "30s")
	// The variables at the top offer this CollabCluster: each query
	// variable's label_values query, as Grafana sends it to the label
	// values API (with the variables before it set), lists its value.
	want := map[string]string{"namespace": ccNamespace, "collabcluster": ccName}
	queried := 0
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		queried++
		value, ok := want[v.Name]
		if !ok {
			t.Errorf("template variable %q: the test does not know its value for the CollabCluster", v.Name)
			continue
		}
		var q string
		if json.Unmarshal(v.Query, &q) != nil {
			var obj struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				t.Fatalf("template variable %q: query %s: %v", v.Name, v.Query, err)
			}
			q = obj.Query
		}
		prom.waitLabelValues(ctx, t, fmt.Sprintf("template variable %q: %s", v.Name, q), vars.Replace(q), value)
	}
	if queried < len(want) {
		t.Errorf("the dashboard has %d query variables; want %d (%v)", queried, len(want), want)
	}
	n := 0
	for _, p := range dash.Panels {
		for _, target := range p.Targets {
			n++
			q := vars.Replace(target.Expr)
			prom.waitFor(ctx, t, fmt.Sprintf("panel %q: %s", p.Title, q), q)
		}
	}
	if n < 14 {
		t.Errorf("the dashboard has %d queries; want one or more in each of at least 14 panels", n)
	}
}

type promAPI struct{ base string }

type vector []struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value"`
}

func (p *promAPI) get(ctx context.Context, path string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	if env.Status != "success" {
		return fmt.Errorf("GET %s: %s", path, env.Error)
	}
	return json.Unmarshal(env.Data, into)
}

// query runs an instant query.
func (p *promAPI) query(ctx context.Context, q string) (vector, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := p.get(ctx, "/api/v1/query?query="+url.QueryEscape(q), &data); err != nil {
		return nil, err
	}
	var v vector
	if data.ResultType == "vector" {
		if err := json.Unmarshal(data.Result, &v); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// waitFor waits until q returns at least one sample.
func (p *promAPI) waitFor(ctx context.Context, t *testing.T, what, q string) {
	t.Helper()
	var last string
	for {
		v, err := p.query(ctx, q)
		switch {
		case err != nil:
			last = err.Error()
		case len(v) > 0:
			return
		default:
			last = "no data"
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %s", what, last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

var labelValuesQuery = regexp.MustCompile(`^label_values\(\s*(?:(.+?)\s*,\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$`)

// waitLabelValues waits until a Grafana label_values(series, label) query,
// run the way Grafana's Prometheus data source runs it (the label values
// API, series as match[]), lists want.
func (p *promAPI) waitLabelValues(ctx context.Context, t *testing.T, what, q, want string) {
	t.Helper()
	m := labelValuesQuery.FindStringSubmatch(strings.TrimSpace(q))
	if m == nil {
		t.Fatalf("%s: not a label_values query the test can run", what)
	}
	path := "/api/v1/label/" + m[2] + "/values"
	if m[1] != "" {
		path += "?match[]=" + url.QueryEscape(m[1])
	}
	var last []string
	for {
		last = nil
		if err := p.get(ctx, path, &last); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if slices.Contains(last, want) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: values %q, want %q among them", what, last, want)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// alertState is the state of alert name for the CollabCluster: pending,
// firing, or "" when it is not active.
func (p *promAPI) alertState(ctx context.Context, t *testing.T, name string) string {
	t.Helper()
	var data struct {
		Alerts []struct {
			Labels map[string]string `json:"labels"`
			State  string            `json:"state"`
		} `json:"alerts"`
	}
	if err := p.get(ctx, "/api/v1/alerts", &data); err != nil {
		t.Fatal(err)
	}
	for _, a := range data.Alerts {
		if a.Labels["alertname"] == name && a.Labels["collabcluster"] == ccName && a.Labels["namespace"] == ccNamespace {
			return a.State
		}
	}
	return ""
}

func (p *promAPI) waitAlert(ctx context.Context, t *testing.T, name, state string) {
	t.Helper()
	for {
		if got := p.alertState(ctx, t, name); got == state {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("alert %s never became %q (now %q)", name, state, p.alertState(context.Background(), t, name))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func waitHTTP(ctx context.Context, t *testing.T, u string) {
	t.Helper()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never answered 200 (%v)", u, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
