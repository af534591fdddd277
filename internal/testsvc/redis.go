package testsvc

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"
)

// Redis is a throwaway redis-server bound to 127.0.0.1.
type Redis struct {
	svc        service
	bin        string
	appendOnly bool
	extra      []string
	certs      *Certs
	clientCert bool // --tls-auth-clients yes rather than optional
}

// RedisOption configures StartRedis.
type RedisOption func(*Redis)

// WithAppendOnly turns on the append-only file so that writes survive Kill
// and Restart (appendfsync everysec: every acknowledged write has reached the
// kernel, which is what survives a process crash). Without it the instance
// keeps no data at all across restarts.
func WithAppendOnly() RedisOption {
	return func(r *Redis) { r.appendOnly = true }
}

// WithArgs passes extra command-line settings to every start of
// redis-server, e.g. "--key-load-delay", "100" to make loading slow.
func WithArgs(args ...string) RedisOption {
	return func(r *Redis) { r.extra = append(r.extra, args...) }
}

// WithTLS serves TLS only (tls-port; the plain port is off) with the
// server certificate of certs; clients must trust certs.CAFile, and may
// present the client certificate (not required).
func WithTLS(certs *Certs) RedisOption {
	return func(r *Redis) { r.certs = certs }
}

// WithTLSClientCertAuth is WithTLS with --tls-auth-clients yes: the server
// ends the handshake of a client that presents no certificate, or one that
// certs' CA did not sign, as a server that authenticates clients by
// certificate does.
func WithTLSClientCertAuth(certs *Certs) RedisOption {
	return func(r *Redis) { r.certs, r.clientCert = certs, true }
}

// StartRedis starts a redis-server for the test and waits until it answers
// PING. It is killed and its directory removed at t.Cleanup.
func StartRedis(t testing.TB, opts ...RedisOption) *Redis {
	t.Helper()
	r := &Redis{bin: requireBinary(t, "redis-server", "redis-server")}
	for _, o := range opts {
		o(r)
	}
	r.svc = service{t: t, name: "redis-server", dir: makeTempDir(t, "tandem-redis-")}
	t.Cleanup(r.svc.cleanup)

	// The port can be taken between choosing and binding it; try a few.
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if r.svc.port, err = freePort(); err != nil {
			t.Fatalf("testsvc: %v", err)
		}
		if err = r.start(); err == nil {
			return r
		}
		if !addressInUse(filepath.Join(r.svc.dir, "redis.log")) {
			break
		}
	}
	t.Fatalf("testsvc: %v", err)
	return nil
}

// URL is redis://127.0.0.1:PORT/0 (rediss:// with WithTLS), for
// redis.ParseURL.
func (r *Redis) URL() string {
	if r.certs != nil {
		return "rediss://" + r.svc.addr() + "/0"
	}
	return "redis://" + r.svc.addr() + "/0"
}

// Addr is 127.0.0.1:PORT.
func (r *Redis) Addr() string { return r.svc.addr() }

// Stop shuts redis-server down gracefully (SIGTERM: it finishes the
// append-only file) and waits for it to exit. Stopping a stopped instance
// does nothing.
func (r *Redis) Stop() {
	r.svc.t.Helper()
	r.svc.stop(syscall.SIGTERM)
}

// Kill sends SIGKILL, as a crash or an OOM kill would, and waits for the
// process to be gone.
func (r *Redis) Kill() {
	r.svc.t.Helper()
	r.svc.kill()
}

// Pause stops the process (SIGSTOP) without ending it: it answers
// nothing, its connections stay open, and what is sent to it waits in the
// kernel. Resume continues it.
func (r *Redis) Pause() {
	r.svc.t.Helper()
	r.signal(syscall.SIGSTOP)
}

// Resume continues a paused process (SIGCONT).
func (r *Redis) Resume() {
	r.svc.t.Helper()
	r.signal(syscall.SIGCONT)
}

func (r *Redis) signal(sig syscall.Signal) {
	r.svc.mu.Lock()
	defer r.svc.mu.Unlock()
	if r.svc.proc == nil || r.svc.proc.exited() {
		r.svc.t.Fatalf("testsvc: signal %v to redis-server on %s: not running", sig, r.svc.addr())
	}
	if err := r.svc.proc.signalGroup(sig); err != nil {
		r.svc.t.Fatalf("testsvc: %v", err)
	}
}

// Start starts a stopped or killed instance again on the same port and data
// directory and waits until it answers PING (after loading its data).
func (r *Redis) Start() {
	r.svc.t.Helper()
	if err := r.start(); err != nil {
		r.svc.t.Fatalf("testsvc: %v", err)
	}
}

// Restart is Stop followed by Start.
func (r *Redis) Restart() {
	r.svc.t.Helper()
	r.Stop()
	r.Start()
}

func (r *Redis) start() error {
	r.svc.mu.Lock()
	defer r.svc.mu.Unlock()
	if r.svc.proc != nil && !r.svc.proc.exited() {
		return fmt.Errorf("start redis-server on %s: already running", r.svc.addr())
	}
	appendOnly := "no"
	if r.appendOnly {
		appendOnly = "yes"
	}
	ports := []string{"--port", strconv.Itoa(r.svc.port)}
	opts := &redis.Options{Addr: r.svc.addr(), MaxRetries: -1, PoolSize: 1}
	if r.certs != nil {
		authClients := "optional"
		if r.clientCert {
			authClients = "yes"
		}
		ports = []string{"--port", "0", "--tls-port", strconv.Itoa(r.svc.port),
			"--tls-cert-file", r.certs.ServerCertFile, "--tls-key-file", r.certs.ServerKeyFile,
			"--tls-ca-cert-file", r.certs.CAFile, "--tls-auth-clients", authClients}
		cfg, err := r.certs.TLSConfig()
		if err != nil {
			return fmt.Errorf("start redis-server with TLS: %w", err)
		}
		opts.TLSConfig = cfg
	}
	cmd := exec.Command(r.bin, append(append(ports,
		"--bind", "127.0.0.1",
		"--dir", r.svc.dir,
		"--save", "",
		"--appendonly", appendOnly,
		"--daemonize", "no",
		"--logfile", "",
	), r.extra...)...)
	cmd.Dir = r.svc.dir
	p, err := startProcess("redis-server", cmd, filepath.Join(r.svc.dir, "redis.log"))
	if err != nil {
		return err
	}
	r.svc.proc = p
	client := redis.NewClient(opts)
	defer client.Close()
	ping := func(ctx context.Context) error {
		// Probe the port first: go-redis logs every failed dial, which
		// would flood the test output while the server boots.
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", r.svc.addr())
		if err != nil {
			return err
		}
		conn.Close()
		return client.Ping(ctx).Err()
	}
	if err := waitReady(p, ping); err != nil {
		_ = p.kill()
		return fmt.Errorf("start redis-server on %s: %w", r.svc.addr(), err)
	}
	return nil
}
