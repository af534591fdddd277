//go:build e2e_real

// Package realcluster runs Tandem on a real single-node Kubernetes: real
// containers from the project's image, the chart's operator in the cluster,
// managed Redis and PostgreSQL pods on real volumes, and clients editing
// through the runtime Service. `make test-e2e-real` brings the cluster up
// (hack/real-cluster/up.sh), runs this package and tears it down.
package realcluster

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/internal/specs"
	"github.com/tandem-dev/tandem/runtime/auth"
	"github.com/tandem-dev/tandem/runtime/client"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/test/testtools"
)

// serviceCIDR is the cluster's service range (hack/real-cluster/env.sh).
// Clients reach ClusterIPs from the host through kube-proxy's rules; the
// harness refuses any other address, so no test traffic leaves this machine.
var serviceCIDR = netip.MustParsePrefix("10.96.0.0/16")

// kube runs kubectl and helm against the real cluster.
type kube struct {
	root    string
	kubectl string
	helmBin string
}

func newKube(t *testing.T) *kube {
	t.Helper()
	kc := os.Getenv("KUBECONFIG")
	if kc == "" {
		t.Fatal("KUBECONFIG is not set: run `make test-e2e-real`, which starts the cluster (hack/real-cluster/up.sh)")
	}
	if _, err := os.Stat(kc); err != nil {
		t.Fatalf("KUBECONFIG %s: %v (is the real cluster up?)", kc, err)
	}
	return &kube{
		root:    testtools.RepoRoot(t),
		kubectl: testtools.Tool(t.Context(), t, "kubectl"),
		helmBin: testtools.Tool(t.Context(), t, "helm"),
	}
}

func run(ctx context.Context, stdin string, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errOut
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s%s", filepath.Base(bin), strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String(), nil
}

// k runs kubectl and fails the test on error.
func (k *kube) k(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := run(ctx, "", k.kubectl, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// try runs kubectl and returns its error instead of failing.
func (k *kube) try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return run(ctx, "", k.kubectl, args...)
}

func (k *kube) apply(t testing.TB, ns, manifest string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := run(ctx, manifest, k.kubectl, "-n", ns, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

func (k *kube) helm(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := run(ctx, "", k.helmBin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// get returns an object (or a list) as JSON.
func (k *kube) get(t testing.TB, args ...string) obj {
	t.Helper()
	var o obj
	if err := json.Unmarshal([]byte(k.k(t, append([]string{"get", "-o", "json"}, args...)...)), &o); err != nil {
		t.Fatalf("kubectl get %v: %v", args, err)
	}
	return o
}

// tryGet is get that reports "not there" instead of failing.
func (k *kube) tryGet(args ...string) (obj, bool) {
	out, err := k.try(append([]string{"get", "-o", "json"}, args...)...)
	if err != nil {
		return nil, false
	}
	var o obj
	if json.Unmarshal([]byte(out), &o) != nil {
		return nil, false
	}
	return o, true
}

// obj is a decoded Kubernetes object.
type obj map[string]any

func (o obj) field(path ...string) any {
	var cur any = map[string]any(o)
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[p]
	}
	return cur
}

func (o obj) str(path ...string) string { s, _ := o.field(path...).(string); return s }

func (o obj) num(path ...string) int64 { f, _ := o.field(path...).(float64); return int64(f) }

func (o obj) items() []obj {
	raw, _ := o["items"].([]any)
	out := make([]obj, 0, len(raw))
	for _, r := range raw {
		if m, ok := r.(map[string]any); ok {
			out = append(out, obj(m))
		}
	}
	return out
}

// condition returns the status and message of a condition.
func (o obj) condition(typ string) (status, message string) {
	conds, _ := o.field("status", "conditions").([]any)
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == typ {
			s, _ := m["status"].(string)
			msg, _ := m["message"].(string)
			return s, msg
		}
	}
	return "", ""
}

// eventually polls cond until it holds, failing with its last word.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if msg != "" {
			last = msg
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last: %s", timeout, what, last)
		}
		time.Sleep(time.Second)
	}
}

// pods lists the pods of one component of a CollabCluster.
func (k *kube) pods(t testing.TB, ns, cc, component string) []obj {
	t.Helper()
	return k.get(t, "-n", ns, "pods", "-l",
		specs.LabelInstance+"="+cc+","+specs.LabelComponent+"="+component).items()
}

// restarts sums the container restarts of every pod in ns.
func (k *kube) restarts(t testing.TB, ns string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, p := range k.get(t, "-n", ns, "pods").items() {
		statuses, _ := p.field("status", "containerStatuses").([]any)
		for _, s := range statuses {
			m, _ := s.(map[string]any)
			if n, _ := m["restartCount"].(float64); n > 0 {
				out[p.str("metadata", "name")] += int64(n)
			}
		}
	}
	return out
}

// waitReady runs `kubectl wait --for=condition=Ready` on a CollabCluster, as
// the README tells users to.
func (k *kube) waitReady(t testing.TB, ns, name string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	if _, err := k.try("-n", ns, "wait", "--for=condition=Ready", "collabcluster/"+name, "--timeout="+timeout.String()); err != nil {
		cc, _ := k.tryGet("-n", ns, "collabcluster", name)
		pods, _ := k.try("-n", ns, "get", "pods", "-o", "wide")
		events, _ := k.try("-n", ns, "get", "events", "--sort-by=.lastTimestamp")
		t.Fatalf("CollabCluster %s/%s not Ready: %v\nstatus: %v\npods:\n%s\nevents:\n%s", ns, name, err, cc.field("status"), pods, tail(events, 3000))
	}
	return time.Since(start)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// secretValue reads one key of a Secret.
func (k *kube) secretValue(t testing.TB, ns, name, key string) []byte {
	t.Helper()
	s := k.get(t, "-n", ns, "secret", name)
	b, err := base64.StdEncoding.DecodeString(s.str("data", key))
	if err != nil || len(b) == 0 {
		t.Fatalf("secret %s/%s has no %q", ns, name, key)
	}
	return b
}

// serviceAddr is host:port of a Service's ClusterIP, checked to be inside
// the cluster's own service range.
func (k *kube) serviceAddr(t testing.TB, ns, name string) string {
	t.Helper()
	svc := k.get(t, "-n", ns, "service", name)
	ip, err := netip.ParseAddr(svc.str("spec", "clusterIP"))
	if err != nil || !serviceCIDR.Contains(ip) {
		t.Fatalf("service %s/%s has ClusterIP %q, outside the cluster's range %s", ns, name, svc.str("spec", "clusterIP"), serviceCIDR)
	}
	ports, _ := svc.field("spec", "ports").([]any)
	if len(ports) == 0 {
		t.Fatalf("service %s/%s has no port", ns, name)
	}
	port, _ := ports[0].(map[string]any)["port"].(float64)
	return net.JoinHostPort(ip.String(), fmt.Sprint(int(port)))
}

// metric reads one unlabelled sample from a runtime pod's /metrics through
// the API server's pod proxy.
func (k *kube) metric(ns, pod, name string) (float64, error) {
	out, err := k.try("get", "--raw", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:%d/proxy/metrics", ns, pod, specs.RuntimePort))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			var v float64
			_, err := fmt.Sscan(rest, &v)
			return v, err
		}
	}
	return 0, fmt.Errorf("pod %s has no metric %s", pod, name)
}

// psql runs a query in a PostgreSQL pod and returns its unaligned rows.
func (k *kube) psql(t testing.TB, ns, pod, user, db, query string) []string {
	t.Helper()
	out := k.k(t, "-n", ns, "exec", pod, "--", "psql", "-U", user, "-d", db, "-tAF", ",", "-c", query)
	var rows []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" {
			rows = append(rows, l)
		}
	}
	return rows
}

// --- editing clients -------------------------------------------------------

// writers is a group of clients appending to one document, each recording
// the operations the server acknowledged.
type writers struct {
	t       testing.TB
	doc     string
	mu      sync.Mutex
	acked   map[string]map[int64]bool // client id -> acknowledged seqs
	clients []*client.Client
	stop    chan struct{}
	done    sync.WaitGroup
}

func newWriters(t testing.TB, doc string) *writers {
	return &writers{t: t, doc: doc, acked: map[string]map[int64]bool{}, stop: make(chan struct{})}
}

// add connects one more client to url and starts it appending a letter
// every interval until stopEditing.
func (w *writers) add(ctx context.Context, url, token, header string, interval time.Duration) *client.Client {
	w.t.Helper()
	id := fmt.Sprintf("w%d-%d", len(w.clients), time.Now().UnixNano()%1e6)
	w.mu.Lock()
	w.acked[id] = map[int64]bool{}
	w.mu.Unlock()
	opts := client.Options{
		URL: url, Token: token, ClientID: id, Reconnects: 10000, DiscardAcks: true,
		OnAck: func(seq, _ int64, _ time.Duration, _ time.Time) {
			w.mu.Lock()
			w.acked[id][seq] = true
			w.mu.Unlock()
		},
	}
	if header != "" {
		opts.Header = map[string][]string{"Origin": {header}}
	}
	c := client.New(opts)
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var err error
	for i := 0; i < 30; i++ { // the Service may have no ready endpoint for a moment
		if err = c.Connect(dctx); err == nil {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		w.t.Fatalf("client %s: connect %s: %v", id, url, err)
	}
	w.clients = append(w.clients, c)
	letter := string(rune('a' + len(w.clients)%26))
	w.done.Add(1)
	go func() {
		defer w.done.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
				_ = c.EditLen(func(n int) ot.Op {
					if n == 0 {
						return ot.Op{{Insert: letter}}
					}
					return ot.Op{{Retain: n}, {Insert: letter}}
				})
			}
		}
	}()
	return c
}

// stopEditing stops the edit loops and waits until every client has no
// unacknowledged edit and all stand at the same revision with the same text.
func (w *writers) stopEditing(ctx context.Context) (text string, rev int64) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	close(w.stop)
	w.done.Wait()
	for _, c := range w.clients {
		if err := c.WaitFor(ctx, c.Synced); err != nil {
			w.t.Fatalf("client %s never got its edits acknowledged: %v (stats %+v, errors %v)", c.ClientID(), err, c.Stats(), c.Errors())
		}
	}
	for _, c := range w.clients {
		if r := c.Rev(); r > rev {
			rev = r
		}
	}
	for _, c := range w.clients {
		if err := c.WaitSynced(ctx, rev); err != nil {
			w.t.Fatalf("client %s did not reach revision %d: %v", c.ClientID(), rev, err)
		}
	}
	text = w.clients[0].Text()
	for _, c := range w.clients[1:] {
		if c.Text() != text {
			w.t.Fatalf("clients diverged at revision %d: %s has %d code points, %s has %d",
				rev, w.clients[0].ClientID(), len([]rune(text)), c.ClientID(), len([]rune(c.Text())))
		}
	}
	return text, rev
}

func (w *writers) close() {
	for _, c := range w.clients {
		c.Close()
	}
}

// ackCount is the number of acknowledged operations.
func (w *writers) ackCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, s := range w.acked {
		n += len(s)
	}
	return n
}

// missing lists the acknowledged (client, seq) pairs absent from rows of
// "client_id,seq".
func (w *writers) missing(rows []string) []string {
	stored := map[string]bool{}
	for _, r := range rows {
		stored[r] = true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for id, seqs := range w.acked {
		for seq := range seqs {
			if key := fmt.Sprintf("%s,%d", id, seq); !stored[key] {
				out = append(out, key)
			}
		}
	}
	return out
}

// reconnects sums the clients' own reconnections.
func (w *writers) reconnects() int64 {
	var n int64
	for _, c := range w.clients {
		n += c.Stats().Reconnects
	}
	return n
}

func token(t testing.TB, key []byte, sub string, docs ...string) string {
	t.Helper()
	tok, err := auth.Mint(key, auth.MintOptions{Subject: sub, Name: sub, Docs: docs, Perm: auth.PermWrite, TTL: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
