package distributed_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/internal/testsvc"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/distributed"
)

// TestOpenTLS connects to Redis (rediss://) and PostgreSQL (verify-full)
// that serve TLS only with certificates the test generates, presenting the
// client certificate; a CA that did not sign the server's certificate ends
// Open at once with an error that says which file to check.
func TestOpenTLS(t *testing.T) {
	certs := testsvc.GenerateCerts(t)
	other := testsvc.GenerateCerts(t)
	r := testsvc.StartRedis(t, testsvc.WithTLS(certs))
	pg := testsvc.StartPostgres(t, testsvc.WithPostgresTLS(certs))
	pgURL := "postgres://postgres@" + pg.Addr() + "/postgres"
	right := distributed.TLSFiles{CAFile: certs.CAFile, CertFile: certs.ClientCertFile, KeyFile: certs.ClientKeyFile}
	wrong := distributed.TLSFiles{CAFile: other.CAFile}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := distributed.Open(ctx, distributed.Config{
		RedisURL: r.URL(), RedisTLS: right, PostgresURL: pgURL, PostgresTLS: distributed.TLSFiles{CAFile: certs.CAFile},
	}, nil)
	if err != nil {
		t.Fatalf("Open over TLS: %v", err)
	}
	if err := s.Log.Append(ctx, "tls", 0, []store.Entry{{Rev: 1, Op: ot.Op{{Insert: "secret"}}, Client: "c", Seq: 1, User: "u"}}); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}

	for _, tc := range []struct {
		name        string
		cfg         distributed.Config
		wantInError []string
	}{
		{"wrong redis CA", distributed.Config{RedisURL: r.URL(), RedisTLS: wrong, PostgresURL: pgURL, PostgresTLS: right},
			[]string{"connect to redis", "certificate", "--redis-ca-file"}},
		{"wrong postgres CA", distributed.Config{RedisURL: r.URL(), RedisTLS: right, PostgresURL: pgURL, PostgresTLS: wrong},
			[]string{"connect to postgres", "certificate", "--postgres-ca-file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// No waiting: a certificate that does not verify never will.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now()
			_, err := distributed.Open(ctx, tc.cfg, nil)
			if err == nil {
				t.Fatal("Open succeeded with the wrong CA")
			}
			for _, w := range tc.wantInError {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if ctx.Err() != nil {
				t.Errorf("Open waited %v for a certificate that cannot verify", time.Since(start))
			}
		})
	}

	// The snapshot went to PostgreSQL over TLS.
	s, err = distributed.Open(ctx, distributed.Config{RedisURL: r.URL(), RedisTLS: right, PostgresURL: pgURL, PostgresTLS: right}, nil)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close(ctx)
	if snap, err := s.Durable.Load(ctx, "tls"); err != nil || snap.Text != "secret" {
		t.Fatalf("snapshot %+v, %v; want \"secret\"", snap, err)
	}
}

// TestOpenRedisClientCertificate: a Redis that requires client
// certificates (tls-auth-clients yes) takes the runtime's connection with
// the client certificate, and refuses it without one or with one another
// CA signed; Open then ends at once with an error naming the flags.
func TestOpenRedisClientCertificate(t *testing.T) {
	certs := testsvc.GenerateCerts(t)
	other := testsvc.GenerateCerts(t)
	r := testsvc.StartRedis(t, testsvc.WithTLSClientCertAuth(certs))
	pg := testsvc.StartPostgres(t)
	for _, tc := range []struct {
		name        string
		files       distributed.TLSFiles
		wantInError []string // none: Open must succeed
	}{
		{"with the client certificate", distributed.TLSFiles{CAFile: certs.CAFile, CertFile: certs.ClientCertFile, KeyFile: certs.ClientKeyFile}, nil},
		{"without a client certificate", distributed.TLSFiles{CAFile: certs.CAFile},
			[]string{"connect to redis", "certificate required", "--redis-cert-file"}},
		{"with a client certificate of another CA", distributed.TLSFiles{CAFile: certs.CAFile, CertFile: other.ClientCertFile, KeyFile: other.ClientKeyFile},
			[]string{"connect to redis", "unknown certificate authority", "--redis-cert-file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now()
			s, err := distributed.Open(ctx, distributed.Config{RedisURL: r.URL(), RedisTLS: tc.files, PostgresURL: pg.URL()}, nil)
			if len(tc.wantInError) == 0 {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				defer s.Close(ctx)
				if err := s.Log.Append(ctx, "mtls", 0, []store.Entry{{Rev: 1, Op: ot.Op{{Insert: "x"}}, Client: "c", Seq: 1, User: "u"}}); err != nil {
					t.Fatalf("Append: %v", err)
				}
				return
			}
			if err == nil {
				s.Close(ctx)
				t.Fatal("Open succeeded without a client certificate the server trusts")
			}
			for _, w := range tc.wantInError {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			// No waiting: the server will not start trusting the client.
			if ctx.Err() != nil {
				t.Errorf("Open waited %v for a client certificate the server refuses", time.Since(start))
			}
		})
	}
}

// TestOpenRefusesMismatchedTLS: TLS files with a URL that does not use TLS,
// and cluster URLs that cannot work, are refused with a message naming the
// fix, before anything is dialled.
func TestOpenRefusesMismatchedTLS(t *testing.T) {
	ca := distributed.TLSFiles{CAFile: "/nonexistent/ca.crt"}
	for _, tc := range []struct {
		name    string
		cfg     distributed.Config
		wantErr string
	}{
		{"redis CA with redis://", distributed.Config{RedisURL: "redis://127.0.0.1:1/0", RedisTLS: ca, PostgresURL: "postgres://x@127.0.0.1:1/x"}, "use rediss://"},
		{"redis CA with redis-cluster://", distributed.Config{RedisURL: "redis-cluster://127.0.0.1:1", RedisTLS: ca, PostgresURL: "postgres://x@127.0.0.1:1/x"}, "use rediss-cluster://"},
		{"missing redis CA file", distributed.Config{RedisURL: "rediss://127.0.0.1:1/0", RedisTLS: ca, PostgresURL: "postgres://x@127.0.0.1:1/x"}, "redis CA file"},
		{"postgres CA with sslmode=disable", distributed.Config{RedisURL: "redis://127.0.0.1:1/0", PostgresURL: "postgres://x@127.0.0.1:1/x?sslmode=disable", PostgresTLS: ca}, "sslmode=verify-full"},
		{"cluster database", distributed.Config{RedisURL: "redis-cluster://127.0.0.1:1,127.0.0.1:2/3", PostgresURL: "postgres://x@127.0.0.1:1/x"}, "only database 0"},
		{"cluster without seeds", distributed.Config{RedisURL: "redis-cluster://", PostgresURL: "postgres://x@127.0.0.1:1/x"}, "no seed address"},
		{"unknown scheme", distributed.Config{RedisURL: "valkey://127.0.0.1:1", PostgresURL: "postgres://x@127.0.0.1:1/x"}, "unknown scheme"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := distributed.Open(ctx, tc.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Open error = %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}

// TestOpenRedisCluster opens the stores on a Redis Cluster through a
// redis-cluster:// URL naming every node as a seed.
func TestOpenRedisCluster(t *testing.T) {
	rc := testsvc.StartRedisCluster(t)
	pg := testsvc.StartPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := distributed.Open(ctx, distributed.Config{RedisURL: rc.URL(), PostgresURL: pg.URL()}, nil)
	if err != nil {
		t.Fatalf("Open %s: %v", rc.URL(), err)
	}
	for i, d := range []string{"a", "b", "c", "d", "e", "f"} {
		if err := s.Log.Append(ctx, d, 0, []store.Entry{{Rev: 1, Op: ot.Op{{Insert: d}}, Client: "c", Seq: int64(i + 1), User: "u"}}); err != nil {
			t.Fatalf("Append %s: %v", d, err)
		}
	}
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s, err = distributed.Open(ctx, distributed.Config{RedisURL: rc.URL(), PostgresURL: pg.URL()}, nil)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close(ctx)
	for _, d := range []string{"a", "b", "c", "d", "e", "f"} {
		if snap, err := s.Durable.Load(ctx, d); err != nil || snap.Text != d {
			t.Errorf("doc %s in PostgreSQL: %+v, %v", d, snap, err)
		}
	}
}

// TestOpenRedisClusterSeedURL: a redis:// URL (as other tools write them)
// with RedisCluster set is a cluster seed; more seeds come as ?addr=.
func TestOpenRedisClusterSeedURL(t *testing.T) {
	rc := testsvc.StartRedisCluster(t)
	pg := testsvc.StartPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addrs := rc.Addrs()
	u := "redis://" + addrs[0] + "?addr=" + addrs[1]
	s, err := distributed.Open(ctx, distributed.Config{RedisURL: u, RedisCluster: true, PostgresURL: pg.URL()}, nil)
	if err != nil {
		t.Fatalf("Open %s as a cluster: %v", u, err)
	}
	defer s.Close(ctx)
	for i, d := range []string{"a", "b", "c", "d"} {
		if err := s.Log.Append(ctx, d, 0, []store.Entry{{Rev: 1, Op: ot.Op{{Insert: d}}, Client: "c", Seq: int64(i + 1), User: "u"}}); err != nil {
			t.Fatalf("Append %s: %v", d, err)
		}
	}
}
