package distributed_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-dev/tandem/internal/testsvc"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/distributed"
)

func TestOpenCommitFlushReopen(t *testing.T) {
	r := testsvc.StartRedis(t)
	pg := testsvc.StartPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	reg := prometheus.NewRegistry()
	s, err := distributed.Open(ctx, distributed.Config{RedisURL: r.URL(), PostgresURL: pg.URL(), FlushInterval: 50 * time.Millisecond}, reg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if err := s.Log.Append(ctx, "d", 0, []store.Entry{{Rev: 1, Op: ot.Op{{Insert: "hello"}}, Client: "c", Seq: 1, User: "u"}}); err != nil {
		t.Fatalf("Append: %v", err)
	}
	// Close performs the final flush.
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s2, err := distributed.Open(ctx, distributed.Config{RedisURL: r.URL(), PostgresURL: pg.URL()}, prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close(ctx)
	snap, err := s2.Durable.Load(ctx, "d")
	if err != nil || snap.Text != "hello" || snap.Rev != 1 {
		t.Fatalf("snapshot after close = %+v, %v; want hello at rev 1", snap, err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, want := range []string{"tandem_redis_commit_retries_total", "tandem_redis_fanout_gaps_repaired_total",
		"tandem_flush_batch_operations", "tandem_flush_duration_seconds", "tandem_flush_lag_commits",
		"tandem_flush_dead_letters_total", "tandem_redis_breaker_state"} {
		if !names[want] {
			t.Errorf("metric %s not registered", want)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tests := []struct {
		name    string
		cfg     distributed.Config
		wantErr string
	}{
		{"missing postgres", distributed.Config{RedisURL: "redis://127.0.0.1:1/0"}, "needs both"},
		{"bad redis url", distributed.Config{RedisURL: "http://x", PostgresURL: "postgres://x"}, "parse redis url"},
		{"redis not listening", distributed.Config{RedisURL: "redis://127.0.0.1:1/0", PostgresURL: "postgres://127.0.0.1:1/x"}, "connect to redis"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := distributed.Open(ctx, tc.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Open error = %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestResolveURL(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "url")
	if err := os.WriteFile(file, []byte("redis://secret:6379/0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, value, file, want string
		wantErr                 bool
	}{
		{"value wins", "redis://a", file, "redis://a", false},
		{"file trimmed", "", file, "redis://secret:6379/0", false},
		{"neither", "", "", "", false},
		{"missing file", "", filepath.Join(dir, "nope"), "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := distributed.ResolveURL(tc.value, tc.file)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("ResolveURL = %q, %v; want %q (error %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}
