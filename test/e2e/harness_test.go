//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/tandem-dev/tandem/test/testtools"
)

// cluster is a kwokctl control plane plus the tools to drive it.
type cluster struct {
	root       string // repository root
	name       string
	workdir    string // KWOK_WORKDIR of this cluster
	kubeconfig string // admin kubeconfig
	kubectlBin string
	helmBin    string
}

// runCmd runs a command and returns combined output; the error names the
// command and carries its output, so a failing step shows what happened.
func runCmd(ctx context.Context, dir string, env []string, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n--- output ---\n%s", filepath.Base(bin), strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

// startCluster creates a kwokctl cluster with a unique name and registers
// its deletion (and the removal of its state directory) with t.Cleanup.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	root := testtools.RepoRoot(t)
	c := &cluster{root: root}
	// Build (or find) every tool before the clock of any step starts.
	for _, name := range []string{"kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok", "kwokctl"} {
		testtools.Tool(t.Context(), t, name)
	}
	c.kubectlBin = testtools.Tool(t.Context(), t, "kubectl")
	c.helmBin = testtools.Tool(t.Context(), t, "helm")

	c.name = fmt.Sprintf("tandem-e2e-%d-%d", os.Getpid(), time.Now().UnixNano()%100000)
	// Not t.TempDir: kwokctl's processes must be gone before the directory
	// goes, and the cleanup below orders that explicitly.
	dir, err := os.MkdirTemp("", "tandem-e2e-")
	if err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	c.workdir = filepath.Join(dir, "kwok")
	c.kubeconfig = filepath.Join(dir, "kubeconfig")
	script := filepath.Join(root, "hack", "e2e", "kwok-cluster.sh")
	env := []string{"KWOK_WORKDIR=" + c.workdir}

	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if t.Failed() {
			logs := filepath.Join(dir, "logs")
			if _, err := runCmd(ctx, root, env, testtools.Tool(ctx, t, "kwokctl"), "export", "logs", "--name", c.name, logs); err == nil {
				t.Logf("control plane logs kept in %s", logs)
				dir = "" // keep them for the person debugging
			}
		}
		if out, err := runCmd(ctx, root, env, script, "delete", c.name); err != nil {
			t.Errorf("delete cluster %s: %v\n%s", c.name, err, out)
		}
		if dir != "" {
			if err := os.RemoveAll(dir); err != nil {
				t.Errorf("remove %s: %v", dir, err)
			}
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	start := time.Now()
	if out, err := runCmd(ctx, root, env, script, "create", c.name, c.kubeconfig, "3"); err != nil {
		t.Fatalf("create cluster: %v\n%s", err, out)
	}
	t.Logf("cluster %s up in %s", c.name, time.Since(start).Round(time.Second))
	return c
}

// kubectl runs kubectl against the cluster as the admin.
func (c *cluster) kubectl(ctx context.Context, args ...string) (string, error) {
	return runCmd(ctx, c.root, nil, c.kubectlBin, append([]string{"--kubeconfig", c.kubeconfig}, args...)...)
}

// k runs kubectl and fails the test on error.
func (c *cluster) k(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := c.kubectl(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// kApply pipes a manifest into kubectl apply.
func (c *cluster) kApply(t *testing.T, ns, manifest string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.kubectlBin, "--kubeconfig", c.kubeconfig, "apply", "-n", ns, "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl apply -n %s: %v\n%s\n--- manifest ---\n%s", ns, err, out, manifest)
	}
}

// helm runs helm against the cluster and fails the test on error.
func (c *cluster) helm(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := runCmd(ctx, c.root, nil, c.helmBin, append([]string{"--kubeconfig", c.kubeconfig}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// getJSON returns a resource (or list) as a generic JSON map.
func (c *cluster) getJSON(t *testing.T, args ...string) map[string]any {
	t.Helper()
	out := c.k(t, append([]string{"get", "-o", "json"}, args...)...)
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("kubectl get %v: decode JSON: %v\n%s", args, err, out)
	}
	return m
}

// tryGetJSON is getJSON for resources that may not exist: it reports
// (nil, false) on NotFound.
func (c *cluster) tryGetJSON(t *testing.T, args ...string) (map[string]any, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := c.kubectl(ctx, append([]string{"get", "-o", "json"}, args...)...)
	if err != nil {
		if strings.Contains(out, "NotFound") || strings.Contains(out, "not found") {
			return nil, false
		}
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("kubectl get %v: decode JSON: %v\n%s", args, err, out)
	}
	return m, true
}

// eventually polls cond every second until it reports done or the timeout
// passes; on timeout it fails with the last state cond described.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		done, state := cond()
		if done {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last state: %s", timeout, what, last)
		}
		time.Sleep(time.Second)
	}
}

// field walks a JSON map along a path of keys.
func field(m any, path ...string) any {
	for _, p := range path {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil
		}
		m = mm[p]
	}
	return m
}

func str(m any, path ...string) string {
	s, _ := field(m, path...).(string)
	return s
}

func num(m any, path ...string) int64 {
	switch v := field(m, path...).(type) {
	case float64:
		return int64(v)
	case int64:
		return v
	}
	return 0
}

func items(list map[string]any) []map[string]any {
	raw, _ := list["items"].([]any)
	out := make([]map[string]any, 0, len(raw))
	for _, r := range raw {
		if m, ok := r.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// ownedBy reports whether obj has an owner reference with the given UID.
func ownedBy(obj map[string]any, uid string) bool {
	refs, _ := field(obj, "metadata", "ownerReferences").([]any)
	for _, r := range refs {
		if str(r, "uid") == uid {
			return true
		}
	}
	return false
}

// owned lists the objects of a kind in ns owned by the object with uid.
func (c *cluster) owned(t *testing.T, kind, ns, uid string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, o := range items(c.getJSON(t, kind, "-n", ns)) {
		if ownedBy(o, uid) {
			out = append(out, o)
		}
	}
	return out
}

func names(objs []map[string]any) []string {
	out := make([]string, 0, len(objs))
	for _, o := range objs {
		out = append(out, str(o, "metadata", "name"))
	}
	return out
}

// condition returns status and message of a condition type in obj.status.
func condition(obj map[string]any, typ string) (status, reason, message string) {
	conds, _ := field(obj, "status", "conditions").([]any)
	for _, c := range conds {
		if str(c, "type") == typ {
			return str(c, "status"), str(c, "reason"), str(c, "message")
		}
	}
	return "", "", ""
}

// impersonatingKubeconfig writes a copy of the admin kubeconfig whose user
// acts as the given ServiceAccount, so every request is authorized with that
// ServiceAccount's RBAC alone.
func impersonatingKubeconfig(t *testing.T, admin, dir, ns, sa string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(admin)
	if err != nil {
		t.Fatalf("load kubeconfig %s: %v", admin, err)
	}
	ctxName := cfg.CurrentContext
	kctx, ok := cfg.Contexts[ctxName]
	if !ok {
		t.Fatalf("kubeconfig %s: current context %q not found", admin, ctxName)
	}
	user, ok := cfg.AuthInfos[kctx.AuthInfo]
	if !ok {
		t.Fatalf("kubeconfig %s: user %q not found", admin, kctx.AuthInfo)
	}
	imp := user.DeepCopy()
	imp.Impersonate = "system:serviceaccount:" + ns + ":" + sa
	imp.ImpersonateGroups = []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
	cfg.AuthInfos["operator-sa"] = imp
	kctx = kctx.DeepCopy()
	kctx.AuthInfo = "operator-sa"
	kctx.Namespace = ns
	cfg.Contexts["operator-sa"] = kctx
	cfg.CurrentContext = "operator-sa"
	path := filepath.Join(dir, "operator.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	return path
}

// freePort asks the kernel for an unused loopback port.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// operator is the manager binary running outside the cluster.
type operator struct {
	cmd     *exec.Cmd
	logPath string
	done    chan error
}

// startOperator builds cmd/manager and runs it with the given kubeconfig and
// environment. The process lives as long as owner (the whole suite, not the
// step that starts it) and is stopped (SIGTERM, then SIGKILL) at its cleanup.
func startOperator(t, owner *testing.T, root, kubeconfig string, env []string, args ...string) *operator {
	t.Helper()
	dir := owner.TempDir()
	bin := filepath.Join(dir, "manager")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	start := time.Now()
	if out, err := runCmd(ctx, root, []string{"CGO_ENABLED=0"}, "nice", "go", "build", "-o", bin, "./cmd/manager"); err != nil {
		t.Fatalf("build operator: %v\n%s", err, out)
	}
	t.Logf("operator built in %s", time.Since(start).Round(time.Second))

	logPath := filepath.Join(dir, "manager.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("create %s: %v", logPath, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), "KUBECONFIG="+kubeconfig), env...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start operator: %v", err)
	}
	op := &operator{cmd: cmd, logPath: logPath, done: make(chan error, 1)}
	go func() { op.done <- cmd.Wait(); logFile.Close() }()
	owner.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-op.done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-op.done
		}
		if owner.Failed() {
			owner.Logf("operator log (last 80 lines):\n%s", op.tail(80))
		}
	})
	return op
}

// alive fails the test when the operator process has exited.
func (o *operator) alive(t *testing.T) {
	t.Helper()
	select {
	case err := <-o.done:
		o.done <- err
		t.Fatalf("operator exited: %v\n%s", err, o.tail(80))
	default:
	}
}

func (o *operator) tail(n int) string {
	b, err := os.ReadFile(o.logPath)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", o.logPath, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
