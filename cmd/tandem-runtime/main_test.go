package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/internal/testsvc"
	"github.com/tandem-dev/tandem/runtime/client"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/test/testtools"
)

const testKey = "restart-test-key-restart-test-key-0123"

// buildBinary compiles the command once per test binary run.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tandem-runtime")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go build: %v", err)
	}
	return bin
}

type proc struct {
	cmd  *exec.Cmd
	base string // http://127.0.0.1:PORT
	done chan error
	log  *testLog
}

func start(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p, lines := launch(t, bin, args...)
	select {
	case u := <-lines:
		// The printed URL says localhost; tests stay on the loopback IP.
		p.base = strings.TrimSuffix(strings.Replace(u, "localhost", "127.0.0.1", 1), "/")
	case err := <-p.done:
		t.Fatalf("runtime exited before serving: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("runtime did not print its URL")
	}
	return p
}

// launch starts the runtime; lines receives the editor URL it prints once
// it serves documents.
func launch(t *testing.T, bin string, args ...string) (*proc, <-chan string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "TANDEM_JWT_KEY="+testKey)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	log := &testLog{t: t}
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	p := &proc{cmd: cmd, done: make(chan error, 1), log: log}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "Tandem editor: "); ok {
				lines <- u
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p, lines
}

func (p *proc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("runtime exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("runtime did not exit after SIGTERM")
	}
}

// testLog passes the runtime's log to the test log and keeps it for
// checks.
type testLog struct {
	t   *testing.T
	mu  sync.Mutex
	all strings.Builder
}

func (l *testLog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(b)))
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Write(b)
	return len(b), nil
}

func (l *testLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all.String()
}

func mint(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"token"}, args...)...)
	cmd.Env = append(os.Environ(), "TANDEM_JWT_KEY="+testKey)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("token %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

func getDoc(t *testing.T, base, id, token string) (int64, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/docs/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET doc: HTTP %d", resp.StatusCode)
	}
	var d struct {
		Rev  int64  `json:"rev"`
		Text string `json:"text"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatal(err)
	}
	return d.Rev, d.Text
}

func TestBinary(t *testing.T) {
	bin := buildBinary(t)

	t.Run("RestartKeepsTextAndRevision", func(t *testing.T) {
		dataDir := t.TempDir()
		// A flush interval far beyond the test: only the SIGTERM flush can
		// make the operations durable.
		args := []string{"--addr", "127.0.0.1:0", "--data-dir", dataDir, "--auth", "jwt", "--flush-interval", "1h", "--flush-batch", "100000"}
		p := start(t, bin, args...)
		token := mint(t, bin, "--sub", "alice", "--doc", "notes", "--perm", "write", "--ttl", "1h")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := client.New(client.Options{URL: "ws" + strings.TrimPrefix(p.base, "http") + "/v1/docs/notes/ws", Token: token, ClientID: "alice-1"})
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		for i := range 30 {
			err := c.EditFunc(func(text string) ot.Op {
				n := len([]rune(text))
				if n == 0 {
					return ot.Op{{Insert: "🌱"}}
				}
				return ot.Op{{Retain: n}, {Insert: fmt.Sprintf(" %d", i)}}
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.WaitSynced(ctx, -1); err != nil {
				t.Fatal(err)
			}
		}
		rev, text := getDoc(t, p.base, "notes", token)
		if rev != 30 || c.Text() != text {
			t.Fatalf("before restart: rev %d %q, client %q", rev, text, c.Text())
		}
		p.stop(t)
		if err := c.WaitFor(ctx, func() bool { return !c.Connected() }); err != nil {
			t.Fatal(err)
		}
		if err := c.CloseError(); err == nil || !strings.Contains(err.Error(), "1012") {
			t.Fatalf("client saw %v, want close 1012 (server restart)", err)
		}

		p2 := start(t, bin, args...)
		rev2, text2 := getDoc(t, p2.base, "notes", token)
		if rev2 != rev || text2 != text {
			t.Fatalf("after restart: rev %d %q, want rev %d %q", rev2, text2, rev, text)
		}
		p2.stop(t)
	})

	t.Run("Help", func(t *testing.T) {
		out, err := exec.Command(bin, "--help").CombinedOutput()
		if err != nil {
			t.Fatalf("--help: %v", err)
		}
		for _, want := range []string{"--addr", "TANDEM_DATA_DIR", "tandem-runtime token"} {
			if !strings.Contains(strings.ReplaceAll(string(out), "  -", "  --"), want) {
				t.Errorf("--help lacks %q", want)
			}
		}
	})

	t.Run("DebugAddrServesProfilesOnItsOwnListener", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		debug := l.Addr().String()
		l.Close()
		p := start(t, bin, "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--debug-addr", debug)
		body := func(url string) (int, string) {
			resp, err := http.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		if code, b := body("http://" + debug + "/debug/pprof/goroutine?debug=1"); code != http.StatusOK || !strings.Contains(b, "goroutine profile") {
			t.Fatalf("debug listener: HTTP %d %.200q", code, b)
		}
		if _, b := body(p.base + "/debug/pprof/goroutine?debug=1"); strings.Contains(b, "goroutine profile") {
			t.Fatal("the public listener serves profiles")
		}
		p.stop(t)
	})

	t.Run("HalfConfiguredDistributedModeRefused", func(t *testing.T) {
		cmd := exec.Command(bin, "--addr", "127.0.0.1:0", "--redis-url", "redis://127.0.0.1:1/0", "--auth", "anonymous")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "postgres-url") {
			t.Fatalf("redis without postgres: err %v, output %s", err, out)
		}
	})
}

// probe returns the status and body of GET url.
func probe(t *testing.T, url string) (int, string) {
	t.Helper()
	code, b, err := tryProbe(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return code, b
}

func tryProbe(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitProbe polls url until it answers code with a body containing want.
func waitProbe(t *testing.T, url string, code int, want string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		// Connection errors count as "not yet": the process is starting.
		c, b, _ := tryProbe(url)
		if c == code && strings.Contains(b, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s = %d %q; want %d with %q", url, c, b, code, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A replica started before its Redis and PostgreSQL (a new cluster) stays
// up, live but not ready with the reason, and serves once they answer:
// no exit, so no kubelet crash back-off.
func TestBinaryWaitsForStores(t *testing.T) {
	r := testsvc.StartRedis(t)
	pg := testsvc.StartPostgres(t)
	r.Stop()
	pg.Stop()
	bin := buildBinary(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	p, served := launch(t, bin, "--addr", addr, "--auth", "jwt", "--redis-url", r.URL(), "--postgres-url", pg.URL(), "--flush-interval", "50ms")
	p.base = "http://" + addr
	waitProbe(t, p.base+"/healthz", http.StatusOK, "ok")

	if code, b := probe(t, p.base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz while waiting = %d %q, want 200", code, b)
	}
	waitProbe(t, p.base+"/readyz", http.StatusServiceUnavailable, "connect to redis at "+r.Addr())
	token := mint(t, bin, "--sub", "alice", "--doc", "notes", "--perm", "write", "--ttl", "1h")
	if code, b := probe(t, p.base+"/v1/docs/notes"); code != http.StatusServiceUnavailable || !strings.Contains(b, `"unavailable"`) {
		t.Fatalf("document while waiting = %d %q, want 503 unavailable", code, b)
	}
	if code, _ := probe(t, p.base+"/metrics"); code != http.StatusOK {
		t.Fatalf("/metrics while waiting = %d", code)
	}

	r.Start()
	waitProbe(t, p.base+"/readyz", http.StatusServiceUnavailable, "connect to postgres at "+pg.Addr())
	if code, _ := probe(t, p.base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz while waiting for postgres = %d", code)
	}
	pg.Start()
	waitProbe(t, p.base+"/readyz", http.StatusOK, "ok")
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("ready, but the editor URL was not printed")
	}
	if log := p.log.String(); !strings.Contains(log, "waiting for store") || !strings.Contains(log, "retry_in") {
		t.Errorf("retries were not logged with their reason:\n%s", log)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := client.New(client.Options{URL: "ws" + strings.TrimPrefix(p.base, "http") + "/v1/docs/notes/ws", Token: token, ClientID: "alice-1"})
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Edit(ot.Op{{Insert: "stores came late"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitSynced(ctx, -1); err != nil {
		t.Fatal(err)
	}
	if rev, text := getDoc(t, p.base, "notes", token); rev != 1 || text != "stores came late" {
		t.Fatalf("document = rev %d %q", rev, text)
	}
	p.stop(t)
}

func TestEditorURL(t *testing.T) {
	tests := []struct{ addr, want string }{
		{"[::]:8080", "http://localhost:8080/"},
		{"0.0.0.0:9000", "http://localhost:9000/"},
		{"127.0.0.1:81", "http://localhost:81/"},
		{"10.1.2.3:8080", "http://10.1.2.3:8080/"},
	}
	for _, tc := range tests {
		if got := editorURL(fakeAddr(tc.addr)); got != tc.want {
			t.Errorf("editorURL(%s) = %s, want %s", tc.addr, got, tc.want)
		}
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

// Kept-alive connections nobody uses are closed: without an idle timeout
// they pile up until the process runs out of file descriptors.
func TestBinaryClosesIdleConnections(t *testing.T) {
	bin := buildBinary(t)
	p := start(t, bin, "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--idle-timeout", "500ms")
	nc, err := net.Dial("tcp", strings.TrimPrefix(p.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	br := bufio.NewReader(nc)
	if _, err := io.WriteString(nc, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	begin := time.Now()
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection: read %v after %v, want EOF (closed by the server)", err, time.Since(begin))
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Fatalf("idle connection closed after %v, want about 500ms", d)
	}
	p.stop(t)
}

// /debug/pprof/cmdline shows the command line; passwords in URL flags
// must not be readable there.
func TestBinaryCmdlineHidesPasswords(t *testing.T) {
	bin := buildBinary(t)
	debug := testtools.FreeAddr(t)
	// The stores never answer: the runtime waits, and the debug listener
	// serves meanwhile.
	p, _ := launch(t, bin, "--addr", testtools.FreeAddr(t), "--debug-addr", debug, "--auth", "anonymous",
		"--redis-url", "redis://:s3cret-redis@127.0.0.1:1/0", "--postgres-url=postgres://tandem:s3cret-pg@127.0.0.1:1/tandem")
	waitProbe(t, "http://"+debug+"/debug/pprof/cmdline", http.StatusOK, "postgres")
	_, b := probe(t, "http://"+debug+"/debug/pprof/cmdline")
	if strings.Contains(b, "s3cret") {
		t.Fatalf("cmdline shows a password: %q", b)
	}
	for _, want := range []string{"--redis-url\x00redis://:xxxxx@127.0.0.1:1/0", "--postgres-url=postgres://tandem:xxxxx@127.0.0.1:1/tandem", "--debug-addr\x00" + debug} {
		if !strings.Contains(b, want) {
			t.Errorf("cmdline %q lacks %q", b, want)
		}
	}
	p.stop(t)
}
