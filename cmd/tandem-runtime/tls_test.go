package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/internal/testsvc"
	"github.com/tandem-dev/tandem/runtime/client"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/store/distributed"
)

// TestBinaryTLSEngines runs the binary against a Redis Cluster that speaks
// TLS only (rediss-cluster://, three masters and three replicas) and a
// PostgreSQL whose pg_hba.conf takes nothing but TLS with a verified client
// certificate (clientcert=verify-full), configured through the same
// environment variables the operator sets from spec.redis.external and
// spec.postgres.external.tls. An edit is acknowledged and reaches
// PostgreSQL; without the client certificate the binary stops at once
// with PostgreSQL's refusal and the flags that fix it.
func TestBinaryTLSEngines(t *testing.T) {
	certs := testsvc.GenerateCerts(t)
	rc := testsvc.StartRedisCluster(t, testsvc.WithTLS(certs))
	pg := testsvc.StartPostgres(t, testsvc.WithPostgresClientCertAuth(certs))
	bin := buildBinary(t)
	pgURL := "postgres://postgres@" + pg.Addr() + "/postgres"
	env := []string{
		"TANDEM_REDIS_URL=" + rc.URL(),
		"TANDEM_REDIS_CA_FILE=" + certs.CAFile,
		"TANDEM_POSTGRES_URL=" + pgURL,
		"TANDEM_POSTGRES_CA_FILE=" + certs.CAFile,
	}
	clientCert := []string{"TANDEM_POSTGRES_CERT_FILE=" + certs.ClientCertFile, "TANDEM_POSTGRES_KEY_FILE=" + certs.ClientKeyFile}

	t.Run("without the client certificate", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "--addr", "127.0.0.1:0", "--auth", "jwt")
		cmd.Env = append(append(os.Environ(), "TANDEM_JWT_KEY="+testKey), env...)
		out, err := cmd.CombinedOutput()
		if ctx.Err() != nil {
			t.Fatalf("the binary kept waiting for a PostgreSQL that refuses it:\n%s", out)
		}
		if err == nil {
			t.Fatalf("the binary served without the client certificate:\n%s", out)
		}
		for _, want := range []string{"connect to postgres", "client certificate", "--postgres-cert-file"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("output does not mention %q:\n%s", want, out)
			}
		}
	})

	t.Run("with the client certificate", func(t *testing.T) {
		for _, kv := range append(env, clientCert...) {
			k, v, _ := strings.Cut(kv, "=")
			t.Setenv(k, v)
		}
		p := start(t, bin, "--addr", "127.0.0.1:0", "--auth", "jwt", "--flush-interval", "50ms")
		token := mint(t, bin, "--sub", "alice", "--doc", "notes", "--perm", "write", "--ttl", "1h")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := client.New(client.Options{URL: "ws" + strings.TrimPrefix(p.base, "http") + "/v1/docs/notes/ws", Token: token, ClientID: "alice-1"})
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"over ", "TLS"} {
			if err := c.EditFunc(func(text string) ot.Op {
				if text == "" {
					return ot.Op{{Insert: s}}
				}
				return ot.Op{{Retain: len([]rune(text))}, {Insert: s}}
			}); err != nil {
				t.Fatal(err)
			}
			if err := c.WaitSynced(ctx, -1); err != nil {
				t.Fatal(err)
			}
		}
		c.Close()
		if rev, text := getDoc(t, p.base, "notes", token); rev != 2 || text != "over TLS" {
			t.Fatalf("document = rev %d %q, want rev 2 \"over TLS\"", rev, text)
		}
		p.stop(t)

		// SIGTERM flushed the edits to PostgreSQL; read them back through
		// the same TLS files.
		s, err := distributed.Open(ctx, distributed.Config{
			RedisURL: rc.URL(), RedisTLS: distributed.TLSFiles{CAFile: certs.CAFile}, PostgresURL: pgURL,
			PostgresTLS: distributed.TLSFiles{CAFile: certs.CAFile, CertFile: certs.ClientCertFile, KeyFile: certs.ClientKeyFile},
		}, nil)
		if err != nil {
			t.Fatalf("open the stores: %v", err)
		}
		defer s.Close(ctx)
		if snap, err := s.Durable.Load(ctx, "notes"); err != nil || snap.Text != "over TLS" {
			t.Fatalf("PostgreSQL holds %+v, %v; want \"over TLS\"", snap, err)
		}
	})
}
