package config_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/runtime/config"
	"github.com/tandem-dev/tandem/runtime/store"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(*config.Config) bool
		wantErr string
	}{
		{"defaults", nil, nil, func(c *config.Config) bool {
			return c.Addr == ":8080" && c.DataDir == "./data" && c.Auth == "anonymous" && c.FlushInterval == 500*time.Millisecond && !c.Distributed()
		}, ""},
		{"env", nil, map[string]string{"TANDEM_ADDR": ":9000", "TANDEM_FLUSH_BATCH": "7", "TANDEM_OPS_PER_SECOND": "2.5", "TANDEM_ALLOWED_ORIGINS": "https://a, https://b"},
			func(c *config.Config) bool {
				return c.Addr == ":9000" && c.FlushBatch == 7 && c.OpsPerSecond == 2.5 && len(c.AllowedOrigins) == 2 && c.AllowedOrigins[1] == "https://b"
			}, ""},
		{"flag beats env", []string{"--addr", ":7000"}, map[string]string{"TANDEM_ADDR": ":9000"}, func(c *config.Config) bool { return c.Addr == ":7000" }, ""},
		{"distributed defaults to jwt", []string{"--redis-url", "redis://x"}, map[string]string{"TANDEM_JWT_KEY": "k"}, func(c *config.Config) bool {
			return c.Distributed() && c.Auth == "jwt" && c.JWTKey == "k"
		}, ""},
		{"jwt needs a key", []string{"--auth", "jwt"}, nil, nil, "jwt-key-file"},
		{"bad auth", []string{"--auth", "magic"}, nil, nil, "jwt"},
		{"bad env value", nil, map[string]string{"TANDEM_FLUSH_INTERVAL": "soon"}, nil, "TANDEM_FLUSH_INTERVAL"},
		{"non-positive limit", []string{"--max-op-bytes", "0"}, nil, nil, "max-op-bytes"},
		{"stray argument", []string{"serve"}, nil, nil, "unexpected"},
		{"resource defaults", nil, nil, func(c *config.Config) bool {
			return c.IdleTimeout == time.Minute && c.MaxPendingWriteBytes == 64<<20
		}, ""},
		{"resource settings", []string{"--idle-timeout", "5s"}, map[string]string{"TANDEM_MAX_PENDING_WRITE_BYTES": "1048576"}, func(c *config.Config) bool {
			return c.IdleTimeout == 5*time.Second && c.MaxPendingWriteBytes == 1<<20
		}, ""},
		{"allowed hosts", nil, map[string]string{"TANDEM_ALLOWED_HOSTS": "notes, notes.team.svc"}, func(c *config.Config) bool {
			return len(c.AllowedHosts) == 2 && c.AllowedHosts[1] == "notes.team.svc"
		}, ""},
		{"zero idle timeout", []string{"--idle-timeout", "0s"}, nil, nil, "idle-timeout"},
		{"tls files", []string{"--redis-ca-file", "/tls/redis/ca.crt", "--postgres-cert-file", "/tls/pg/tls.crt"},
			map[string]string{"TANDEM_POSTGRES_KEY_FILE": "/tls/pg/tls.key", "TANDEM_JWT_KEY": "k", "TANDEM_REDIS_URL": "rediss-cluster://a:1,b:1"},
			func(c *config.Config) bool {
				return c.RedisTLS.CAFile == "/tls/redis/ca.crt" && c.PostgresTLS.CertFile == "/tls/pg/tls.crt" &&
					c.PostgresTLS.KeyFile == "/tls/pg/tls.key" && c.RedisWaitReplicas == -1
			}, ""},
		{"client cert without key", []string{"--redis-cert-file", "/c.crt"}, nil, nil, "--redis-cert-file and --redis-key-file go together"},
		{"cluster flag", nil, map[string]string{"TANDEM_REDIS_CLUSTER": "true"}, func(c *config.Config) bool { return c.RedisCluster }, ""},
		{"wait replicas", []string{"--redis-wait-replicas", "2"}, nil, func(c *config.Config) bool { return c.RedisWaitReplicas == 2 }, ""},
		{"bad wait replicas", []string{"--redis-wait-replicas", "-2"}, nil, nil, "redis-wait-replicas"},
		{"zero pending bound", []string{"--max-pending-write-bytes", "0"}, nil, nil, "max-pending-write-bytes"},
		{"redis tail bytes default", nil, nil, func(c *config.Config) bool { return c.RedisTailBytes == 4<<20 }, ""},
		{"redis tail bytes", nil, map[string]string{"TANDEM_REDIS_TAIL_BYTES": "65536"}, func(c *config.Config) bool { return c.RedisTailBytes == 64<<10 }, ""},
		{"zero redis tail bytes", []string{"--redis-tail-bytes", "0"}, nil, nil, "redis-tail-bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := config.Parse(tc.args, env(tc.env), &bytes.Buffer{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want mention of %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Fatalf("config = %+v", c)
			}
		})
	}
}

func TestHelpDocumentsEveryFlagAndEnv(t *testing.T) {
	var out bytes.Buffer
	_, err := config.Parse([]string{"--help"}, env(nil), &out)
	if !errors.Is(err, config.ErrHelp) {
		t.Fatalf("err = %v, want ErrHelp", err)
	}
	for _, want := range []string{"-addr", "TANDEM_ADDR", "-data-dir", "-auth", "-jwt-key-file", "TANDEM_JWT_KEY", "-allowed-origins", "-redis-url-file", "-postgres-url", "-flush-interval", "-flush-batch", "-redis-tail-bytes", "TANDEM_REDIS_TAIL_BYTES", "-max-message-bytes", "-max-op-bytes", "-max-doc-bytes", "TANDEM_OPS_PER_SECOND", "TANDEM_MAX_CONNS_PER_DOC", "TANDEM_IDLE_TIMEOUT", "TANDEM_MAX_PENDING_WRITE_BYTES",
		"-redis-ca-file", "-redis-cert-file", "-redis-key-file", "-redis-wait-replicas", "TANDEM_REDIS_CLUSTER", "-postgres-ca-file", "-postgres-cert-file", "-postgres-key-file", "redis-cluster://"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := config.Parse([]string{"--redis-url-file", write("r", "redis://h:1/0\n"), "--jwt-key-file", write("k", "secret\n")}, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if u, err := c.Redis(); err != nil || u != "redis://h:1/0" {
		t.Fatalf("Redis() = %q, %v", u, err)
	}
	if k, err := c.Key(); err != nil || string(k) != "secret" {
		t.Fatalf("Key() = %q, %v", k, err)
	}
}

func TestParseRetention(t *testing.T) {
	tests := []struct {
		in      string
		want    store.Retention
		wantErr bool
	}{
		{"", store.Retention{}, false},
		{"720h", store.Retention{Age: 720 * time.Hour}, false},
		{"10000", store.Retention{Revisions: 10000}, false},
		{"1m, 500", store.Retention{Age: time.Minute, Revisions: 500}, false},
		{"500,1m", store.Retention{Age: time.Minute, Revisions: 500}, false},
		{"0", store.Retention{}, true},
		{"-1h", store.Retention{}, true},
		{"1h,2h", store.Retention{}, true},
		{"forever", store.Retention{}, true},
	}
	for _, tc := range tests {
		got, err := config.ParseRetention(tc.in)
		if (err != nil) != tc.wantErr || (!tc.wantErr && got != tc.want) {
			t.Errorf("ParseRetention(%q) = %+v, %v; want %+v (error %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}
