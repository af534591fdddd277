package testsvc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func redisClient(t *testing.T, r *Redis) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(r.URL())
	if err != nil {
		t.Fatalf("parse %q: %v", r.URL(), err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRedisRestart writes a key, takes the server down in each of the ways a
// fault test can, brings it back and checks whether the key survived: it must
// with the append-only file and must not without it (proving the restart
// really started a fresh process on the same port).
func TestRedisRestart(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		appendOnly bool
		down       func(r *Redis)
		wantKept   bool
	}{
		{"aof kill -9", true, (*Redis).Kill, true},
		{"aof stop", true, (*Redis).Stop, true},
		{"no aof kill -9", false, (*Redis).Kill, false},
		{"no aof stop", false, (*Redis).Stop, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var opts []RedisOption
			if tc.appendOnly {
				opts = append(opts, WithAppendOnly())
			}
			r := StartRedis(t, opts...)
			if want := "redis://" + r.Addr() + "/0"; r.URL() != want {
				t.Fatalf("URL() = %q, want %q", r.URL(), want)
			}
			if host, _, _ := net.SplitHostPort(r.Addr()); host != "127.0.0.1" {
				t.Fatalf("Addr() = %q, want a 127.0.0.1 address", r.Addr())
			}
			ctx := testCtx(t)
			c := redisClient(t, r)
			if err := c.Set(ctx, "k", "v1", 0).Err(); err != nil {
				t.Fatalf("SET: %v", err)
			}
			addr := r.Addr()

			tc.down(r)
			if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				conn.Close()
				t.Fatalf("%s still accepts connections while the server is down", addr)
			}
			r.Start()
			if r.Addr() != addr {
				t.Fatalf("address changed across restart: %s -> %s", addr, r.Addr())
			}

			got, err := c.Get(ctx, "k").Result()
			switch {
			case tc.wantKept && err != nil:
				t.Fatalf("GET after restart: %v (want v1)", err)
			case tc.wantKept && got != "v1":
				t.Fatalf("GET after restart = %q, want v1", got)
			case !tc.wantKept && !errors.Is(err, redis.Nil):
				t.Fatalf("GET after restart = %q, %v; want the key gone", got, err)
			}
		})
	}
}

func TestRedisRestartMethod(t *testing.T) {
	t.Parallel()
	r := StartRedis(t, WithAppendOnly())
	ctx := testCtx(t)
	c := redisClient(t, r)
	for i, v := range []string{"a", "b", "c"} {
		if err := c.RPush(ctx, "list", v).Err(); err != nil {
			t.Fatalf("RPUSH %d: %v", i, err)
		}
		r.Restart()
	}
	got, err := c.LRange(ctx, "list", 0, -1).Result()
	if err != nil {
		t.Fatalf("LRANGE: %v", err)
	}
	if strings.Join(got, ",") != "a,b,c" {
		t.Fatalf("list after restarts = %v, want [a b c]", got)
	}
	r.Stop()
	r.Stop() // stopping a stopped instance is a no-op
}

// TestRedisCleanupRemovesData checks that the instance is gone and its
// directory deleted once the test that started it ends.
func TestRedisCleanupRemovesData(t *testing.T) {
	t.Parallel()
	var addr, dir string
	t.Run("inner", func(t *testing.T) {
		r := StartRedis(t, WithAppendOnly())
		addr, dir = r.Addr(), r.svc.dir
		if err := redisClient(t, r).Set(testCtx(t), "k", "v", 0).Err(); err != nil {
			t.Fatalf("SET: %v", err)
		}
	})
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("data dir %s still exists after cleanup (stat: %v)", dir, err)
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Fatalf("something still listens on %s after cleanup", addr)
	}
}

func pgConnect(ctx context.Context, t *testing.T, pg *Postgres) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatalf("connect %s: %v", pg.URL(), err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// TestPostgresRestart commits rows, takes the server down (SIGKILL of the
// whole server, or a fast shutdown), starts it again on the same port and
// data directory and checks every committed row is still there.
func TestPostgresRestart(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		down func(pg *Postgres)
	}{
		{"kill -9", (*Postgres).Kill},
		{"stop", (*Postgres).Stop},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pg := StartPostgres(t)
			if want := "postgres://postgres@" + pg.Addr() + "/postgres?sslmode=disable"; pg.URL() != want {
				t.Fatalf("URL() = %q, want %q", pg.URL(), want)
			}
			ctx := testCtx(t)
			conn := pgConnect(ctx, t, pg)
			if _, err := conn.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL)`); err != nil {
				t.Fatalf("create table: %v", err)
			}
			for i := 1; i <= 100; i++ {
				if _, err := conn.Exec(ctx, `INSERT INTO t VALUES ($1, $2)`, i, strings.Repeat("x", i)); err != nil {
					t.Fatalf("insert %d: %v", i, err)
				}
			}
			addr := pg.Addr()

			tc.down(pg)
			if err := conn.Ping(ctx); err == nil {
				t.Fatal("ping on the old connection succeeded while the server is down")
			}
			pg.Start()
			if pg.Addr() != addr {
				t.Fatalf("address changed across restart: %s -> %s", addr, pg.Addr())
			}

			conn2 := pgConnect(ctx, t, pg)
			var n, total int
			if err := conn2.QueryRow(ctx, `SELECT count(*), coalesce(sum(length(v)), 0) FROM t`).Scan(&n, &total); err != nil {
				t.Fatalf("count after restart: %v", err)
			}
			if n != 100 || total != 5050 {
				t.Fatalf("after restart: %d rows, total length %d; want 100 rows, 5050", n, total)
			}
		})
	}
}

func TestPostgresRestartMethod(t *testing.T) {
	t.Parallel()
	pg := StartPostgres(t)
	ctx := testCtx(t)
	if _, err := pgConnect(ctx, t, pg).Exec(ctx, `CREATE TABLE survives (x int)`); err != nil {
		t.Fatalf("create table: %v", err)
	}
	pg.Restart()
	pg.Kill()
	pg.Start()
	var exists bool
	if err := pgConnect(ctx, t, pg).QueryRow(ctx, `SELECT to_regclass('survives') IS NOT NULL`).Scan(&exists); err != nil {
		t.Fatalf("query after restart: %v", err)
	}
	if !exists {
		t.Fatal("table created before Restart and Kill is gone")
	}
}

// fakeTB records Skip and Fatal instead of ending the goroutine, so the
// missing-binary policy can be checked without skipping this test.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

func (f *fakeTB) Helper()           {}
func (f *fakeTB) Skip(args ...any)  { f.skipped = fmt.Sprint(args...) }
func (f *fakeTB) Fatal(args ...any) { f.failed = fmt.Sprint(args...) }

func TestRequireBinaryMissing(t *testing.T) {
	// Not parallel: it changes the environment.
	empty := t.TempDir()
	t.Setenv("PATH", empty)
	tests := []struct {
		ci       string
		wantSkip bool
	}{
		{"true", false},
		{"", true},
		{"false", true},
	}
	for _, tc := range tests {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			f := &fakeTB{TB: t}
			got := requireBinary(f, "tandem-no-such-server", "tandem-pkg", filepath.Join(empty, "nope"))
			if got != "" {
				t.Fatalf("requireBinary returned %q for a missing binary", got)
			}
			msg := f.failed
			if tc.wantSkip {
				msg = f.skipped
				if f.failed != "" {
					t.Fatalf("failed under CI=%q, want skip: %s", tc.ci, f.failed)
				}
			} else if f.skipped != "" {
				t.Fatalf("skipped under CI=true, want failure: %s", f.skipped)
			}
			if !strings.Contains(msg, `"tandem-pkg"`) || !strings.Contains(msg, "tandem-no-such-server") {
				t.Fatalf("message %q does not name the binary and the package", msg)
			}
		})
	}
}

func TestRequireBinaryExtraDir(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	dir := t.TempDir()
	bin := filepath.Join(dir, "tandem-fake-server")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	f := &fakeTB{TB: t}
	if got := requireBinary(f, "tandem-fake-server", "pkg", filepath.Join(dir, "missing"), dir); got != bin {
		t.Fatalf("requireBinary = %q, want %q (skip %q, fail %q)", got, bin, f.skipped, f.failed)
	}
}

// TestRedisCluster starts a cluster, writes keys that land on every
// master, kills the master of one of them and checks that its replica took
// over with the key (the write was confirmed by WAIT before the kill).
func TestRedisCluster(t *testing.T) {
	rc := StartRedisCluster(t)
	ctx := testCtx(t)
	c := rc.Client()
	writeOnEveryMaster(ctx, t, rc, c)
	killed := rc.KillMasterOf("k{0}")
	if now := rc.MasterOf("k{0}"); now == killed {
		t.Fatalf("master of k{0} still the killed %s", killed.Addr())
	}
	c.ReloadState(ctx)
	var got string
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; {
		got, err = c.Get(ctx, "k{0}").Result()
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || got != "0" {
		t.Fatalf("k{0} after failover: %q, %v", got, err)
	}
	killed.Start()
	if err := rc.WaitHealthy(ctx); err != nil {
		t.Fatalf("after the old master came back: %v", err)
	}
}

// writeOnEveryMaster sets keys k{0}..k{29}, checks they landed on all
// three masters, and has WAIT confirm that k{0} reached its replica.
func writeOnEveryMaster(ctx context.Context, t *testing.T, rc *RedisCluster, c *redis.ClusterClient) {
	t.Helper()
	masters := map[string]bool{}
	for i := 0; i < 30; i++ {
		k := fmt.Sprintf("k{%d}", i)
		if err := c.Set(ctx, k, i, 0).Err(); err != nil {
			t.Fatalf("set %s: %v", k, err)
		}
		masters[rc.MasterOf(k).Addr()] = true
	}
	if len(masters) != 3 {
		t.Fatalf("keys landed on masters %v, want 3 of them", masters)
	}
	m, err := c.MasterForKey(ctx, "k{0}")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := m.Do(ctx, "WAIT", 1, 5000).Int64(); err != nil || n != 1 {
		t.Fatalf("WAIT: %d, %v", n, err)
	}
}

// TestTLS starts Redis and PostgreSQL with TLS on and connects with the
// generated CA; a different CA is refused.
func TestTLS(t *testing.T) {
	certs := GenerateCerts(t)
	other := GenerateCerts(t)
	ctx := testCtx(t)

	r := StartRedis(t, WithTLS(certs))
	if !strings.HasPrefix(r.URL(), "rediss://") {
		t.Fatalf("URL %q, want rediss://", r.URL())
	}
	for _, tc := range []struct {
		name    string
		certs   *Certs
		wantErr bool
	}{{"right CA", certs, false}, {"wrong CA", other, true}} {
		cfg, err := tc.certs.TLSConfig()
		if err != nil {
			t.Fatal(err)
		}
		c := redis.NewClient(&redis.Options{Addr: r.Addr(), TLSConfig: cfg, MaxRetries: -1})
		err = c.Ping(ctx).Err()
		c.Close()
		if (err != nil) != tc.wantErr {
			t.Errorf("redis, %s: ping error %v, want error %v", tc.name, err, tc.wantErr)
		}
	}

	pg := StartPostgres(t, WithPostgresTLS(certs))
	conn, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatalf("postgres over TLS: %v", err)
	}
	var ssl bool
	if err := conn.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
		t.Errorf("pg_stat_ssl: ssl=%v, %v; want a TLS connection", ssl, err)
	}
	conn.Close(ctx)
	wrong := strings.Replace(pg.URL(), url.QueryEscape(certs.CAFile), url.QueryEscape(other.CAFile), 1)
	if _, err := pgx.Connect(ctx, wrong); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("postgres with the wrong CA: %v, want a certificate error", err)
	}
}

// TestPostgresClientCertAuth: with WithPostgresClientCertAuth the server
// takes a TLS connection that presents the generated client certificate
// and refuses one without it, one whose certificate another CA signed, and
// a plain one.
func TestPostgresClientCertAuth(t *testing.T) {
	certs := GenerateCerts(t)
	other := GenerateCerts(t)
	ctx := testCtx(t)
	pg := StartPostgres(t, WithPostgresClientCertAuth(certs))

	conn, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatalf("postgres with the client certificate: %v", err)
	}
	var ssl bool
	var cn string
	if err := conn.QueryRow(ctx, "SELECT ssl, coalesce(client_dn, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl, &cn); err != nil || !ssl || !strings.Contains(cn, "postgres") {
		t.Errorf("pg_stat_ssl: ssl=%v client_dn=%q, %v; want TLS with the client certificate", ssl, cn, err)
	}
	conn.Close(ctx)

	base := "postgres://postgres@" + pg.Addr() + "/postgres?sslmode=verify-full&sslrootcert=" + url.QueryEscape(certs.CAFile)
	for _, tc := range []struct{ name, url, want string }{
		{"no client certificate", base, "certificate"},
		{"client certificate of another CA", base + "&sslcert=" + url.QueryEscape(other.ClientCertFile) + "&sslkey=" + url.QueryEscape(other.ClientKeyFile), "certificate"},
		{"plain", "postgres://postgres@" + pg.Addr() + "/postgres?sslmode=disable", "pg_hba.conf"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := pgx.Connect(ctx, tc.url)
			if err == nil {
				c.Close(ctx)
				t.Fatal("connected")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// TestRedisClientCertAuth: with WithTLSClientCertAuth the server answers
// a client that presents the generated client certificate and refuses one
// without a certificate or with one another CA signed.
func TestRedisClientCertAuth(t *testing.T) {
	certs := GenerateCerts(t)
	other := GenerateCerts(t)
	ctx := testCtx(t)
	r := StartRedis(t, WithTLSClientCertAuth(certs))

	right, err := certs.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	noCert := right.Clone()
	noCert.Certificates = nil
	otherCA, err := other.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	otherCert := right.Clone()
	otherCert.Certificates = otherCA.Certificates
	for _, tc := range []struct {
		name    string
		cfg     *tls.Config
		wantErr string
	}{
		{"client certificate", right, ""},
		{"no client certificate", noCert, "certificate"},
		{"client certificate of another CA", otherCert, "certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := redis.NewClient(&redis.Options{Addr: r.Addr(), TLSConfig: tc.cfg, MaxRetries: -1})
			defer c.Close()
			err := c.Ping(ctx).Err()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("ping: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("ping error %v, want one mentioning %q", err, tc.wantErr)
			}
			t.Logf("ping: %v", err)
		})
	}
}

// TestRedisClusterTLS starts the cluster TLS-only (clients, the cluster
// bus and replication): a TLS client reaches every master, replicas are in
// sync, and a client without TLS gets nothing.
func TestRedisClusterTLS(t *testing.T) {
	certs := GenerateCerts(t)
	rc := StartRedisCluster(t, WithTLS(certs))
	if !strings.HasPrefix(rc.URL(), "rediss-cluster://") {
		t.Fatalf("URL %q, want rediss-cluster://", rc.URL())
	}
	writeOnEveryMaster(testCtx(t), t, rc, rc.Client())
	ctx := testCtx(t)
	plain := redis.NewClient(&redis.Options{Addr: rc.Nodes[0].Addr(), MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: time.Second})
	defer plain.Close()
	if err := plain.Ping(ctx).Err(); err == nil {
		t.Fatal("a plain client got PONG from a TLS-only node")
	}
}
