package distributed_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

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
		"tandem_flush_failing_documents", "tandem_flush_document_failures_total",
		"tandem_flush_oldest_unpersisted_seconds", "tandem_redis_breaker_state"} {
		if !names[want] {
			t.Errorf("metric %s not registered", want)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	tests := []struct {
		name    string
		cfg     distributed.Config
		wait    time.Duration // how long Open may wait for the stores
		wantErr string
	}{
		{"missing postgres", distributed.Config{RedisURL: "redis://127.0.0.1:1/0"}, time.Minute, "needs both"},
		{"bad redis url", distributed.Config{RedisURL: "http://x", PostgresURL: "postgres://x"}, time.Minute, "parse redis url"},
		// A store that is not there is waited for until ctx ends.
		{"redis not listening", distributed.Config{RedisURL: "redis://127.0.0.1:1/0", PostgresURL: "postgres://127.0.0.1:1/x"}, time.Second, "connect to redis"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tc.wait)
			defer cancel()
			_, err := distributed.Open(ctx, tc.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Open error = %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}

// reasons records what Open says it is waiting for.
type reasons struct {
	mu  sync.Mutex
	all []string
}

func (r *reasons) add(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		r.all = append(r.all, "<ready>")
		return
	}
	r.all = append(r.all, err.Error())
}

// seen reports whether a reason containing s was recorded.
func (r *reasons) seen(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range r.all {
		if strings.Contains(x, s) {
			return true
		}
	}
	return false
}

func (r *reasons) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !r.seen(s) {
		if time.Now().After(deadline) {
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("no waiting reason mentions %q; got %q", s, r.all)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A runtime started before its stores (a new cluster: the Services have no
// DNS record and nothing listens yet) waits for them instead of failing.
func TestOpenWaitsForStores(t *testing.T) {
	r := testsvc.StartRedis(t)
	pg := testsvc.StartPostgres(t)
	r.Stop()
	pg.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var why reasons
	type result struct {
		s   *distributed.Stores
		err error
	}
	opened := make(chan result, 1)
	go func() {
		s, err := distributed.Open(ctx, distributed.Config{
			RedisURL: r.URL(), PostgresURL: pg.URL(), FlushInterval: 20 * time.Millisecond,
			RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, Waiting: why.add,
		}, prometheus.NewRegistry())
		opened <- result{s, err}
	}()
	why.waitFor(t, "connect to redis at "+r.Addr())
	select {
	case res := <-opened:
		t.Fatalf("Open returned without Redis: %v", res.err)
	case <-time.After(300 * time.Millisecond):
	}
	r.Start()
	why.waitFor(t, "connect to postgres at "+pg.Addr())
	pg.Start()
	res := <-opened
	if res.err != nil {
		t.Fatalf("Open after the stores came up: %v", res.err)
	}
	defer res.s.Close(ctx)
	if !why.seen("<ready>") {
		t.Error("Waiting was not told that the stores answer")
	}
	if err := res.s.Log.Append(ctx, "d", 0, []store.Entry{{Rev: 1, Op: ot.Op{{Insert: "late"}}, Client: "c", Seq: 1, User: "u"}}); err != nil {
		t.Fatalf("Append: %v", err)
	}
	waitDurable(ctx, t, res.s, "d", 1)
}

// Redis answers LOADING while it reads its append-only file after a
// restart; a replica started then waits until Redis has loaded.
func TestOpenWaitsWhileRedisLoads(t *testing.T) {
	// key-load-delay (µs per key) stretches loading to a few seconds.
	r := testsvc.StartRedis(t, testsvc.WithAppendOnly(), testsvc.WithArgs("--key-load-delay", "100", "--loading-process-events-interval-bytes", "1024"))
	pg := testsvc.StartPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	pipe := rdb.Pipeline()
	for i := range 20000 {
		pipe.Set(ctx, fmt.Sprintf("filler:%d", i), "x", 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	// Rewrite so the keys load through the RDB preamble, where the delay
	// applies.
	if err := rdb.BgRewriteAOF(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for {
		info, err := rdb.Info(ctx, "persistence").Result()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(info, "aof_rewrite_in_progress:0") && !strings.Contains(info, "aof_rewrite_scheduled:1") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	rdb.Close()
	r.Stop()

	var why reasons
	type result struct {
		s   *distributed.Stores
		err error
	}
	opened := make(chan result, 1)
	go func() {
		s, err := distributed.Open(ctx, distributed.Config{
			RedisURL: r.URL(), PostgresURL: pg.URL(),
			RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, Waiting: why.add,
		}, prometheus.NewRegistry())
		opened <- result{s, err}
	}()
	r.Start() // returns once Redis has loaded and answers PING
	res := <-opened
	if res.err != nil {
		t.Fatalf("Open while Redis loads: %v", res.err)
	}
	defer res.s.Close(ctx)
	if !why.seen("LOADING") {
		t.Fatalf("Open never saw Redis loading; reasons %q", why.all)
	}
	if err := res.s.Ready(ctx); err != nil {
		t.Fatalf("Ready after loading: %v", err)
	}
}

func waitDurable(ctx context.Context, t *testing.T, s *distributed.Stores, doc string, rev int64) {
	t.Helper()
	for {
		snap, err := s.Durable.Load(ctx, doc)
		if err == nil && snap.Rev >= rev {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s not flushed to rev %d: %+v %v", doc, rev, snap, err)
		case <-time.After(20 * time.Millisecond):
		}
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

// A name that does not resolve yet (a headless Service before its pod is
// ready) is waited for like a refused connection; wrong credentials are a
// configuration error and end the wait at once.
func TestOpenWaitsForNamesButNotForWrongCredentials(t *testing.T) {
	t.Run("unresolvable name", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var why reasons
		_, err := distributed.Open(ctx, distributed.Config{
			RedisURL: "redis://tandem-store-not-yet.invalid:6379/0", PostgresURL: "postgres://127.0.0.1:1/x",
			RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, Waiting: why.add,
		}, nil)
		if err == nil || !strings.Contains(err.Error(), "stopped waiting") {
			t.Fatalf("Open = %v, want it to wait until ctx ends", err)
		}
		if !why.seen("tandem-store-not-yet.invalid") {
			t.Fatalf("reasons %q do not name the host", why.all)
		}
	})
	t.Run("redis password missing", func(t *testing.T) {
		r := testsvc.StartRedis(t)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		admin := redis.NewClient(&redis.Options{Addr: r.Addr()})
		if err := admin.ConfigSet(ctx, "requirepass", "right").Err(); err != nil {
			t.Fatal(err)
		}
		admin.Close()
		begin := time.Now()
		_, err := distributed.Open(ctx, distributed.Config{RedisURL: r.URL(), PostgresURL: "postgres://127.0.0.1:1/x"}, nil)
		if err == nil || !strings.Contains(err.Error(), "NOAUTH") {
			t.Fatalf("Open without the password = %v, want NOAUTH", err)
		}
		if d := time.Since(begin); d > 10*time.Second {
			t.Fatalf("Open took %v to give up on wrong credentials", d)
		}
	})
}
