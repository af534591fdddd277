// Package testsvc starts throwaway redis-server and PostgreSQL processes for
// tests: each on a free loopback port, in its own temporary directory, and
// removed when the test ends. Instances can be stopped, killed with SIGKILL
// and started again on the same port and data directory, so fault tests can
// exercise crash recovery against the real servers.
//
// Tests never touch services already running on the machine. When a server
// binary is missing, the test is skipped with a message naming the Debian
// package to install; under CI=true it fails instead, so CI cannot silently
// skip the integration tests.
//
// The methods that take no testing.TB report failures through the TB given
// at start, so call them from the goroutine running the test.
package testsvc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// readyTimeout is generous because CI machines are shared and a
	// PostgreSQL crash recovery under load can take a while.
	readyTimeout = 90 * time.Second
	stopTimeout  = 60 * time.Second
)

// requireBinary finds name on PATH or in extraDirs; if it is missing the test
// is skipped (or failed under CI=true) naming the package that provides it.
func requireBinary(t testing.TB, name, aptPackage string, extraDirs ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range extraDirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := fmt.Sprintf("testsvc: %s not found on PATH or in %v; install the Debian package %q (apt-get install -y %s)",
		name, extraDirs, aptPackage, aptPackage)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	} else {
		t.Skip(msg)
	}
	return ""
}

// postgresBinDirs lists /usr/lib/postgresql/<major>/bin, newest major first,
// which is where Debian installs the server binaries (not on PATH).
func postgresBinDirs() []string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	major := func(d string) int {
		n, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		return n
	}
	sort.Slice(dirs, func(i, j int) bool { return major(dirs[i]) > major(dirs[j]) })
	return dirs
}

// freePort asks the kernel for an unused loopback port. Another process may
// grab it before the server binds; the start functions retry on that.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("reserve loopback port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// process is one run of a server binary. Its output goes to a log file that
// is quoted in error messages, so a failed start explains itself.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
}

func startProcess(name string, cmd *exec.Cmd, logPath string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	cmd.Stdout = logf
	cmd.Stderr = logf
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// Own process group: Kill must take down the server's children too
	// (PostgreSQL backends), as a real crash of the whole server would.
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signalGroup sends sig to the whole process group.
func (p *process) signalGroup(sig syscall.Signal) error {
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s group %d with %v: %w", p.name, p.cmd.Process.Pid, sig, err)
	}
	return nil
}

// kill takes the server down as a crash would: the leader and every
// descendant get SIGKILL, and kill returns once they are all gone.
// Killing the process group is not enough: PostgreSQL backends call setsid,
// so they live in their own groups, and a backend that outlives its
// postmaster for a moment keeps answering on its open connection.
func (p *process) kill() error {
	if p.exited() {
		return nil
	}
	pid := p.cmd.Process.Pid
	// Freeze the leader first so it cannot fork new children (PostgreSQL
	// restarts crashed backends) between listing and killing them.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop %s (pid %d): %w", p.name, pid, err)
	}
	kids := descendants(pid)
	if err := p.signalGroup(syscall.SIGKILL); err != nil {
		return err
	}
	for _, k := range kids {
		if err := syscall.Kill(k, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("kill %s child %d: %w", p.name, k, err)
		}
	}
	<-p.done
	// Orphaned children are reaped by init; wait until none can still
	// hold a socket or a data file.
	deadline := time.Now().Add(stopTimeout)
	for _, k := range kids {
		for alive(k) {
			if time.Now().After(deadline) {
				return fmt.Errorf("%s child %d still alive %v after SIGKILL", p.name, k, stopTimeout)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// descendants lists every process below pid, read from /proc.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, ok := parentPID(child); ok {
			children[ppid] = append(children[ppid], child)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		next := queue[0]
		queue = queue[1:]
		for _, c := range children[next] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// procStat returns the state and parent pid fields of /proc/<pid>/stat.
// The command name in parentheses may contain spaces, so parsing starts
// after its closing parenthesis.
func procStat(pid int) (state string, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return "", 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return "", 0, false
	}
	return f[0], ppid, true
}

func parentPID(pid int) (int, bool) {
	_, ppid, ok := procStat(pid)
	return ppid, ok
}

// alive reports whether pid still exists and is not a zombie (a zombie has
// released its sockets and files already).
func alive(pid int) bool {
	state, _, ok := procStat(pid)
	return ok && state != "Z" && state != "X"
}

// stop sends sig to the leader only (the server shuts its children down
// itself) and waits; after stopTimeout it falls back to SIGKILL.
func (p *process) stop(sig syscall.Signal) error {
	if p.exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
		_ = p.kill()
		return fmt.Errorf("%s did not stop within %v after %v; killed it\n%s", p.name, stopTimeout, sig, p.logTail())
	}
}

// logTail returns the end of the process log for error messages.
func (p *process) logTail() string {
	return fileTail(p.logPath, 40)
}

func fileTail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return "--- " + path + " ---\n" + strings.Join(all, "\n")
}

// waitReady polls ping until it succeeds, the process exits or the timeout
// passes.
func waitReady(p *process, ping func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	var last error
	for {
		if p.exited() {
			return fmt.Errorf("%s exited before accepting connections (%v)\n%s", p.name, p.waitErr, p.logTail())
		}
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		last = ping(pctx)
		pcancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %v: %w\n%s", p.name, readyTimeout, last, p.logTail())
		case <-p.done:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// addressInUse reports whether a failed start was caused by the port being
// taken between freePort and the server's bind.
func addressInUse(logPath string) bool {
	b, _ := os.ReadFile(logPath)
	return bytes.Contains(b, []byte("Address already in use")) ||
		bytes.Contains(b, []byte("could not bind")) ||
		bytes.Contains(b, []byte("could not create any TCP/IP sockets"))
}

// service holds what Redis and Postgres share: the running process and its
// lifecycle under a mutex.
type service struct {
	t    testing.TB
	name string
	port int
	dir  string

	mu   sync.Mutex
	proc *process
}

func (s *service) addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

func (s *service) kill() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || s.proc.exited() {
		s.t.Fatalf("testsvc: kill %s: not running", s.name)
	}
	if err := s.proc.kill(); err != nil {
		s.t.Fatalf("testsvc: kill %s: %v", s.name, err)
	}
}

func (s *service) stop(sig syscall.Signal) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || s.proc.exited() {
		return
	}
	if err := s.proc.stop(sig); err != nil {
		s.t.Fatalf("testsvc: stop %s: %v", s.name, err)
	}
}

// cleanup kills whatever is still running; data is about to be deleted, so
// there is nothing to shut down gracefully for.
func (s *service) cleanup() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil && !s.proc.exited() {
		if err := s.proc.kill(); err != nil {
			s.t.Errorf("testsvc: cleanup %s: %v", s.name, err)
		}
	}
	if s.t.Failed() && s.proc != nil {
		s.t.Logf("testsvc: %s log at failure:\n%s", s.name, s.proc.logTail())
	}
}

// makeTempDir creates a private directory outside t.TempDir (whose parent is
// mode 0700 and so unreachable for the postgres user) and removes it at
// cleanup.
func makeTempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatalf("testsvc: create temp dir: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("testsvc: remove %s: %v", dir, err)
		}
	})
	return dir
}
