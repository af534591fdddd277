// Package browser drives the editor in Debian's Chromium against a real
// tandem-runtime on loopback: real key events, real WebSockets, a real
// restart of the server process.
package browser

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tandem-dev/tandem/runtime/auth"
	"github.com/tandem-dev/tandem/test/testtools"
)

// chromiumPath is where Debian's chromium package puts the browser;
// TANDEM_CHROMIUM overrides it.
const chromiumPath = "/usr/bin/chromium"

// runtimeBin is the tandem-runtime binary built once for all tests.
var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildPath != "" {
		os.RemoveAll(filepath.Dir(buildPath))
	}
	os.Exit(code)
}

// repoRoot is the module root (two levels above this package).
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test source")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// requireChromium returns the browser's path, or skips (fails under CI=true,
// naming the package to install) when it is missing.
func requireChromium(t testing.TB) string {
	t.Helper()
	p := os.Getenv("TANDEM_CHROMIUM")
	if p == "" {
		p = chromiumPath
	}
	if _, err := os.Stat(p); err != nil {
		msg := fmt.Sprintf("chromium not found at %s: install Debian's package with `apt-get install -y chromium` (or set TANDEM_CHROMIUM)", p)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// runtimeBinary builds cmd/tandem-runtime once per test binary, unless
// TANDEM_RUNTIME_BIN names one already built.
func runtimeBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("TANDEM_RUNTIME_BIN"); p != "" {
		return p // a prebuilt binary (e.g. from make build)
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tandem-browser-bin-")
		if err != nil {
			buildErr = err
			return
		}
		out := filepath.Join(dir, "tandem-runtime")
		goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			goBin = "go"
		}
		cmd := exec.Command(goBin, "build", "-o", out, "./cmd/tandem-runtime")
		cmd.Dir = repoRoot(t)
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build tandem-runtime: %w\n%s", err, b)
			return
		}
		buildPath = out
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// Runtime is a tandem-runtime process on a loopback port with its own data
// directory and JWT key. Stop and Start keep both, so a restart resumes the
// same documents on the same address.
type Runtime struct {
	t       testing.TB
	bin     string
	addr    string
	dataDir string
	key     []byte
	keyFile string
	logPath string

	authMode string   // "jwt" or "anonymous"
	extra    []string // more flags
	external bool     // a runtime this test did not start (TANDEM_BROWSER_TARGET)

	mu  sync.Mutex
	cmd *exec.Cmd
}

// startRuntime starts a runtime with JWT auth.
func startRuntime(t testing.TB) *Runtime { return startRuntimeAuth(t, "jwt") }

// startRuntimeAuth starts a runtime with the given --auth mode and any
// further flags (limits, for example).
//
// With TANDEM_BROWSER_TARGET set (a base URL such as http://127.0.0.1:8080)
// the tests drive that runtime instead, minting tokens with the key in
// TANDEM_BROWSER_JWT_KEY: `make test-e2e-real` runs the editor against a
// runtime in a real cluster this way. A test that needs a runtime of its
// own (other flags, a restart) fails there rather than pretend.
func startRuntimeAuth(t testing.TB, authMode string, extraArgs ...string) *Runtime {
	t.Helper()
	if target := os.Getenv("TANDEM_BROWSER_TARGET"); target != "" {
		if authMode != "jwt" || len(extraArgs) > 0 {
			t.Fatalf("this test needs a runtime of its own (--auth %s %v); it cannot run against TANDEM_BROWSER_TARGET", authMode, extraArgs)
		}
		key := os.Getenv("TANDEM_BROWSER_JWT_KEY")
		if key == "" {
			t.Fatal("TANDEM_BROWSER_TARGET needs TANDEM_BROWSER_JWT_KEY, the runtime's JWT key")
		}
		return &Runtime{t: t, addr: strings.TrimPrefix(target, "http://"), key: []byte(key), authMode: authMode, external: true}
	}
	dir := t.TempDir()
	// A printable key: the runtime trims line endings from key files.
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	key := []byte(hex.EncodeToString(raw))
	keyFile := filepath.Join(dir, "jwt.key")
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	r := &Runtime{
		t:        t,
		bin:      runtimeBinary(t),
		addr:     testtools.FreeAddr(t),
		dataDir:  filepath.Join(dir, "data"),
		key:      key,
		keyFile:  keyFile,
		logPath:  filepath.Join(dir, "runtime.log"),
		authMode: authMode,
		extra:    extraArgs,
	}
	r.Start()
	t.Cleanup(func() {
		r.Stop()
		if t.Failed() {
			if b, err := os.ReadFile(r.logPath); err == nil {
				t.Logf("runtime log:\n%s", tail(string(b), 4000))
			}
		}
	})
	return r
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// URL is the runtime's base URL.
func (r *Runtime) URL() string { return "http://" + r.addr }

// Start launches the process and waits until /readyz answers 200.
func (r *Runtime) Start() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.external {
		r.t.Fatal("cannot start a runtime this test does not own (TANDEM_BROWSER_TARGET)")
	}
	if r.cmd != nil {
		r.t.Fatal("runtime already running")
	}
	logf, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		r.t.Fatal(err)
	}
	args := []string{
		"--addr", r.addr,
		"--data-dir", r.dataDir,
		"--auth", r.authMode,
		"--jwt-key-file", r.keyFile,
		"--allowed-origins", r.URL(),
		"--flush-interval", "50ms",
	}
	cmd := exec.Command(r.bin, append(args, r.extra...)...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		r.t.Fatalf("start runtime: %v", err)
	}
	logf.Close()
	r.cmd = cmd
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := waitHTTP(ctx, r.URL()+"/readyz"); err != nil {
		r.t.Fatalf("runtime on %s not ready: %v", r.addr, err)
	}
}

// Stop sends SIGTERM (the runtime tells clients to reconnect, flushes and
// exits) and waits for the process.
func (r *Runtime) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.external {
		r.t.Fatal("cannot stop a runtime this test does not own (TANDEM_BROWSER_TARGET)")
	}
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = r.cmd.Process.Kill()
		<-done
		r.t.Errorf("runtime did not exit within 20s of SIGTERM")
	}
	r.cmd = nil
}

func waitHTTP(ctx context.Context, url string) error {
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Token mints a token for one user on the given documents.
func (r *Runtime) Token(sub, name string, perm auth.Perm, docs ...string) string {
	r.t.Helper()
	tok, err := auth.Mint(r.key, auth.MintOptions{Subject: sub, Name: name, Docs: docs, Perm: perm, TTL: time.Hour})
	if err != nil {
		r.t.Fatalf("mint token: %v", err)
	}
	return tok
}

// Doc is the server's view of a document (GET /v1/docs/{id}).
type Doc struct {
	ID   string `json:"id"`
	Rev  int64  `json:"rev"`
	Text string `json:"text"`
}

// Doc fetches a document with a bearer token.
func (r *Runtime) Doc(ctx context.Context, id, token string) (Doc, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL()+"/v1/docs/"+id, nil)
	if err != nil {
		return Doc{}, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Doc{}, fmt.Errorf("get doc %q: %w", id, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return Doc{}, fmt.Errorf("read doc %q: %w", id, err)
	}
	if resp.StatusCode != http.StatusOK {
		return Doc{}, fmt.Errorf("get doc %q: status %d: %s", id, resp.StatusCode, b)
	}
	var d Doc
	if err := json.Unmarshal(b, &d); err != nil {
		return Doc{}, fmt.Errorf("decode doc %q: %w", id, err)
	}
	return d, nil
}

// newBrowser starts an independent headless Chromium (its own process and
// fresh profile) and returns a tab context.
func newBrowser(t testing.TB) context.Context {
	t.Helper()
	execPath := requireChromium(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(execPath),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// Background tabs must keep their timers running at full speed.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.WindowSize(1200, 760),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// Start the browser now so a broken install fails here, clearly.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// run runs actions with a deadline.
func run(t testing.TB, ctx context.Context, timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := chromedp.Do(tctx, actions...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

// eval evaluates a JS expression in the page and returns its value.
func eval[T any](t testing.TB, ctx context.Context, expr string) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(tctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS polls a JS boolean expression until it is true.
func waitJS(t testing.TB, ctx context.Context, timeout time.Duration, what, expr string) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ok, err := chromedp.Run(tctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return
		}
		select {
		case <-tctx.Done():
			state, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('status')?.dataset.state + ': ' + document.getElementById('status-text')?.textContent +
				(window.tandem ? ' | text ' + JSON.stringify(window.tandem.text().slice(-300)) + ' | client ' + JSON.stringify({rev: window.tandem.client.rev, text: window.tandem.client.text.slice(-300), inflight: window.tandem.client.inflight && {seq: window.tandem.client.inflight.seq, sent: window.tandem.client.inflight.sent}, buffer: !!window.tandem.client.buffer, error: window.tandem.client.lastError}) : '')`))
			t.Fatalf("timed out after %v waiting for %s (page status %q, last error %v)", timeout, what, state, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// openDoc navigates to the editor for doc with token and waits until it is
// connected and editable (or read-only).
func openDoc(t testing.TB, ctx context.Context, r *Runtime, doc, token string) {
	t.Helper()
	u := r.URL() + "/d/" + doc
	if token != "" {
		u += "#token=" + token
	}
	run(t, ctx, 20*time.Second, chromedp.Navigate(u))
	waitJS(t, ctx, 20*time.Second, "editor connected", `document.getElementById('status').dataset.state === 'connected' && !!window.tandem && window.tandem.client.loaded() && window.tandem.text() === window.tandem.client.text`)
}

func textOf(t testing.TB, ctx context.Context) string {
	t.Helper()
	return eval[string](t, ctx, `window.tandem.text()`)
}

// waitSynced waits until the page has no unacknowledged edits and shows want.
func waitSynced(t testing.TB, ctx context.Context, want string) {
	t.Helper()
	waitSyncedWithin(t, ctx, want, 20*time.Second)
}

func waitSyncedWithin(t testing.TB, ctx context.Context, want string, timeout time.Duration) {
	t.Helper()
	b, _ := json.Marshal(want)
	waitJS(t, ctx, timeout, fmt.Sprintf("editor to show %s with nothing unsent", tail(string(b), 200)),
		fmt.Sprintf(`window.tandem && window.tandem.client.synchronized() && document.getElementById('status').dataset.state === 'connected' && window.tandem.text() === %s`, b))
}

// artifactsDir is $ARTIFACTS_DIR or artifacts/ at the repository root.
func artifactsDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("ARTIFACTS_DIR")
	if dir == "" {
		dir = filepath.Join(repoRoot(t), "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func writeArtifact(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(artifactsDir(t), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// docID makes a document id unique to one test.
func docID(t testing.TB) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, t.Name())
	return fmt.Sprintf("%s-%x", strings.ToLower(name), b)
}
