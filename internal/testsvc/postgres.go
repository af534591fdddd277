package testsvc

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
)

// Postgres is a throwaway PostgreSQL cluster (initdb + postgres) listening
// on 127.0.0.1 with trust authentication for the "postgres" superuser.
type Postgres struct {
	svc      service
	initdb   string
	postgres string
	// cred runs the server as an unprivileged user: initdb and postgres
	// refuse to run as root. nil when the tests already run unprivileged.
	cred *syscall.Credential
	// certs, when set, turns on TLS (ssl=on) with its server certificate.
	certs *Certs
	// clientCert makes pg_hba.conf accept TLS connections only, and only
	// with a client certificate that chains to certs' CA and whose CN is
	// the user name (clientcert=verify-full).
	clientCert bool
}

// PostgresOption configures StartPostgres.
type PostgresOption func(*Postgres)

// WithPostgresTLS turns on TLS (ssl=on) with the server certificate of
// certs and trusts its CA for client certificates. Plain connections are
// still accepted; URL asks for sslmode=verify-full against certs.CAFile.
func WithPostgresTLS(certs *Certs) PostgresOption {
	return func(pg *Postgres) { pg.certs = certs }
}

// WithPostgresClientCertAuth is WithPostgresTLS with pg_hba.conf allowing
// nothing but TLS connections that present a client certificate signed by
// certs' CA naming the user (hostssl ... clientcert=verify-full; no host
// lines, so plain connections are refused too). URL then carries the
// client pair (sslcert, sslkey).
func WithPostgresClientCertAuth(certs *Certs) PostgresOption {
	return func(pg *Postgres) { pg.certs, pg.clientCert = certs, true }
}

// StartPostgres initialises a new cluster in a temporary directory, starts
// postgres on a free loopback port and waits until it accepts connections.
// It is killed and its directory removed at t.Cleanup.
func StartPostgres(t testing.TB, opts ...PostgresOption) *Postgres {
	t.Helper()
	binDirs := postgresBinDirs()
	pg := &Postgres{initdb: requireBinary(t, "initdb", "postgresql", binDirs...)}
	for _, o := range opts {
		o(pg)
	}
	// Prefer the postgres next to initdb so both come from the same major
	// version (PATH may hold a symlink into /usr/lib/postgresql/N/bin).
	if real, err := filepath.EvalSymlinks(pg.initdb); err == nil {
		if p := filepath.Join(filepath.Dir(real), "postgres"); isExecutable(p) {
			pg.postgres = p
		}
	}
	if pg.postgres == "" {
		pg.postgres = requireBinary(t, "postgres", "postgresql", binDirs...)
	}

	dir := makeTempDir(t, "tandem-pg-")
	pg.svc = service{t: t, name: "postgres", dir: dir}
	t.Cleanup(pg.svc.cleanup)
	if os.Geteuid() == 0 {
		cred, err := postgresCredential(dir)
		if err != nil {
			t.Fatalf("testsvc: %v", err)
		}
		pg.cred = cred
	}
	if err := os.Mkdir(pg.sockDir(), 0o700); err != nil {
		t.Fatalf("testsvc: %v", err)
	}
	if pg.cred != nil {
		if err := os.Chown(pg.sockDir(), int(pg.cred.Uid), int(pg.cred.Gid)); err != nil {
			t.Fatalf("testsvc: chown socket dir: %v", err)
		}
	}
	if err := pg.runInitdb(); err != nil {
		t.Fatalf("testsvc: %v", err)
	}
	if pg.certs != nil {
		if err := pg.installCerts(); err != nil {
			t.Fatalf("testsvc: %v", err)
		}
	}
	if pg.clientCert {
		if err := pg.writeClientCertHBA(); err != nil {
			t.Fatalf("testsvc: %v", err)
		}
	}

	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if pg.svc.port, err = freePort(); err != nil {
			t.Fatalf("testsvc: %v", err)
		}
		if err = pg.start(); err == nil {
			return pg
		}
		if !addressInUse(pg.logPath()) {
			break
		}
	}
	t.Fatalf("testsvc: %v", err)
	return nil
}

// postgresCredential returns the credential of the "postgres" OS user (the
// postgresql package creates it) and hands dir over to that user.
func postgresCredential(dir string) (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and PostgreSQL refuses to run as root; need the OS user \"postgres\" (created by the Debian package postgresql): %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("uid of user postgres %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("gid of user postgres %q: %w", u.Gid, err)
	}
	if err := os.Chown(dir, int(uid), int(gid)); err != nil {
		return nil, fmt.Errorf("hand %s to user postgres: %w", dir, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// URL is postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable, or
// with WithPostgresTLS ...?sslmode=verify-full&sslrootcert=CAFILE, and with
// WithPostgresClientCertAuth also &sslcert=CLIENTCERT&sslkey=CLIENTKEY.
func (pg *Postgres) URL() string {
	if pg.certs != nil {
		u := "postgres://postgres@" + pg.svc.addr() + "/postgres?sslmode=verify-full&sslrootcert=" + url.QueryEscape(pg.certs.CAFile)
		if pg.clientCert {
			u += "&sslcert=" + url.QueryEscape(pg.certs.ClientCertFile) + "&sslkey=" + url.QueryEscape(pg.certs.ClientKeyFile)
		}
		return u
	}
	return "postgres://postgres@" + pg.svc.addr() + "/postgres?sslmode=disable"
}

// installCerts copies the server pair and the CA into the data directory:
// postgres insists on a key file owned by its own user and not readable by
// others.
func (pg *Postgres) installCerts() error {
	for src, name := range map[string]string{
		pg.certs.ServerCertFile: "server.crt", pg.certs.ServerKeyFile: "server.key", pg.certs.CAFile: "root.crt",
	} {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		dst := filepath.Join(pg.dataDir(), name)
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			return fmt.Errorf("install %s: %w", name, err)
		}
		if pg.cred != nil {
			if err := os.Chown(dst, int(pg.cred.Uid), int(pg.cred.Gid)); err != nil {
				return fmt.Errorf("install %s: %w", name, err)
			}
		}
	}
	return nil
}

// writeClientCertHBA replaces initdb's pg_hba.conf: the Unix socket stays
// trusted (nothing here uses it), TCP needs TLS and a verified client
// certificate whose CN is the user.
func (pg *Postgres) writeClientCertHBA() error {
	hba := "local all all trust\n" +
		"hostssl all all 127.0.0.1/32 trust clientcert=verify-full\n" +
		"hostssl all all ::1/128 trust clientcert=verify-full\n"
	if err := os.WriteFile(filepath.Join(pg.dataDir(), "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return fmt.Errorf("write pg_hba.conf: %w", err)
	}
	if pg.cred != nil {
		if err := os.Chown(filepath.Join(pg.dataDir(), "pg_hba.conf"), int(pg.cred.Uid), int(pg.cred.Gid)); err != nil {
			return fmt.Errorf("write pg_hba.conf: %w", err)
		}
	}
	return nil
}

// Addr is 127.0.0.1:PORT.
func (pg *Postgres) Addr() string { return pg.svc.addr() }

// Stop shuts PostgreSQL down with a fast shutdown (SIGINT: open sessions are
// ended, a checkpoint is written) and waits for it to exit. Stopping a
// stopped instance does nothing.
func (pg *Postgres) Stop() {
	pg.svc.t.Helper()
	pg.svc.stop(syscall.SIGINT)
}

// Kill sends SIGKILL to the postmaster and all its backends, as a crash of
// the whole server would, and waits for the postmaster to be gone. The next
// Start runs crash recovery from the write-ahead log.
func (pg *Postgres) Kill() {
	pg.svc.t.Helper()
	pg.svc.kill()
}

// Start starts a stopped or killed instance again on the same port and data
// directory and waits until it accepts connections.
func (pg *Postgres) Start() {
	pg.svc.t.Helper()
	if err := pg.start(); err != nil {
		pg.svc.t.Fatalf("testsvc: %v", err)
	}
}

// Restart is Stop followed by Start.
func (pg *Postgres) Restart() {
	pg.svc.t.Helper()
	pg.Stop()
	pg.Start()
}

func (pg *Postgres) dataDir() string { return filepath.Join(pg.svc.dir, "data") }
func (pg *Postgres) sockDir() string { return filepath.Join(pg.svc.dir, "sock") }
func (pg *Postgres) logPath() string { return filepath.Join(pg.svc.dir, "postgres.log") }

func (pg *Postgres) command(bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Dir = pg.svc.dir
	// A clean environment: PG* variables of the caller must not leak in.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LANG=C", "LC_ALL=C", "TZ=UTC"}
	if pg.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred}
	}
	return cmd
}

func (pg *Postgres) runInitdb() error {
	cmd := pg.command(pg.initdb,
		"-D", pg.dataDir(),
		"-U", "postgres",
		"--auth=trust",
		"--encoding=UTF8",
		"--locale=C",
		// Only a machine crash loses unsynced files, and these clusters do
		// not outlive the test process; a process kill keeps them intact.
		"--no-sync",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb %s: %w\n%s", pg.dataDir(), err, out)
	}
	return nil
}

func (pg *Postgres) start() error {
	pg.svc.mu.Lock()
	defer pg.svc.mu.Unlock()
	if pg.svc.proc != nil && !pg.svc.proc.exited() {
		return fmt.Errorf("start postgres on %s: already running", pg.svc.addr())
	}
	var tlsArgs []string
	if pg.certs != nil {
		tlsArgs = []string{"-c", "ssl=on", "-c", "ssl_cert_file=server.crt", "-c", "ssl_key_file=server.key", "-c", "ssl_ca_file=root.crt"}
	}
	cmd := pg.command(pg.postgres, append([]string{
		"-D", pg.dataDir(),
		"-k", pg.sockDir(),
		"-p", strconv.Itoa(pg.svc.port),
		"-h", "127.0.0.1",
		// fsync=off loses data only when the machine crashes; committed
		// transactions still reach the kernel, so Kill keeps them.
		"-c", "fsync=off",
		// Avoid /dev/shm, which is tiny in many containers.
		"-c", "dynamic_shared_memory_type=mmap",
		"-c", "max_connections=200",
		"-c", "shared_buffers=32MB",
	}, tlsArgs...)...)
	// postgres logs to stderr, which is a file descriptor opened by this
	// process, so the server user needs no write access to the log file.
	p, err := startProcess("postgres", cmd, pg.logPath())
	if err != nil {
		return err
	}
	pg.svc.proc = p
	ping := func(ctx context.Context) error {
		conn, err := pgx.Connect(ctx, pg.URL())
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		return conn.Ping(ctx)
	}
	if err := waitReady(p, ping); err != nil {
		_ = p.kill()
		return fmt.Errorf("start postgres on %s: %w", pg.svc.addr(), err)
	}
	return nil
}
