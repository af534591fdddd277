package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tandem-dev/tandem/internal/testsvc"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/pgstore"
	"github.com/tandem-dev/tandem/runtime/store/redisstore"
)

// env is one Redis (or one Redis Cluster) and one PostgreSQL shared by
// the "replicas" of a test.
type env struct {
	t       *testing.T
	redis   *testsvc.Redis
	cluster *testsvc.RedisCluster
	pg      *testsvc.Postgres
}

// newClusterEnv is newEnv on a Redis Cluster of three masters with a
// replica each.
func newClusterEnv(t *testing.T) *env {
	t.Helper()
	return &env{t: t, cluster: testsvc.StartRedisCluster(t), pg: testsvc.StartPostgres(t)}
}

func newEnv(t *testing.T, redisOpts ...testsvc.RedisOption) *env {
	t.Helper()
	return &env{t: t, redis: testsvc.StartRedis(t, redisOpts...), pg: testsvc.StartPostgres(t)}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// replica is one process's worth of connections and stores.
type replica struct {
	rdb     redis.UniversalClient
	durable *countingDurable
	store   *redisstore.Store
	reg     *prometheus.Registry
}

// countingDurable is the real pgstore with a count of Write calls, which
// are PostgreSQL transactions.
type countingDurable struct {
	*pgstore.Store
	writes atomic.Int64
	ops    atomic.Int64
	// beforeWrite, when set, runs before each write reaches PostgreSQL
	// (after the flusher read its entries from Redis): a test makes races
	// happen there.
	beforeWrite atomic.Pointer[func(entries []store.Entry)]
}

func (c *countingDurable) Write(ctx context.Context, entries []store.Entry) error {
	_, err := c.WriteChecked(ctx, entries, nil)
	return err
}

func (c *countingDurable) WriteChecked(ctx context.Context, entries []store.Entry, check func(context.Context, []string) ([]string, error)) ([]string, error) {
	if f := c.beforeWrite.Load(); f != nil {
		(*f)(entries)
	}
	stale, err := c.Store.WriteChecked(ctx, entries, check)
	if err == nil {
		c.writes.Add(1)
		c.ops.Add(int64(len(entries)))
	}
	return stale, err
}

func (e *env) replica(opts redisstore.Options) *replica {
	t := e.t
	t.Helper()
	var rdb redis.UniversalClient
	if e.cluster != nil {
		rdb = redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: e.cluster.Addrs(), DialTimeout: time.Second, ReadTimeout: 2 * time.Second,
			WriteTimeout: 2 * time.Second, MaxRetries: 3, MaxRedirects: 8,
		})
		if opts.WaitReplicas == 0 {
			opts.WaitReplicas = 1
		}
	} else {
		ropts, err := redis.ParseURL(e.redis.URL())
		if err != nil {
			t.Fatalf("parse redis url: %v", err)
		}
		ropts.DialTimeout = time.Second
		ropts.ReadTimeout = 2 * time.Second
		ropts.WriteTimeout = 2 * time.Second
		ropts.MaxRetries = 1
		rdb = redis.NewClient(ropts)
	}
	t.Cleanup(func() { rdb.Close() })
	pg, err := pgstore.Open(testCtx(t), e.pg.URL(), nil)
	if err != nil {
		t.Fatalf("open pgstore: %v", err)
	}
	t.Cleanup(func() { pg.Close() })
	d := &countingDurable{Store: pg}
	reg := prometheus.NewRegistry()
	if opts.Breaker.OpenFor == 0 {
		opts.Breaker.OpenFor = 500 * time.Millisecond
	}
	opts.IsPermanent = pgstore.IsPermanent
	s, err := redisstore.New(rdb, d, opts, reg)
	if err != nil {
		t.Fatalf("redisstore.New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Close(ctx)
	})
	return &replica{rdb: rdb, durable: d, store: s, reg: reg}
}

// metric returns the value of a counter or gauge in r's registry.
func (r *replica) metric(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// commit appends one entry inserting text at the start of doc, retrying on
// conflicts and outages the way the runtime does, and returns its revision.
func commit(ctx context.Context, l store.Log, doc, client string, seq int64, text string) (int64, error) {
	for {
		head, err := l.Head(ctx, doc)
		if err == nil {
			err = l.Append(ctx, doc, head, []store.Entry{{
				Doc: doc, Rev: head + 1, Op: ot.Op{{Insert: text}}, Client: client, Seq: seq, User: "u-" + client,
			}})
			if err == nil {
				return head + 1, nil
			}
		}
		switch {
		case errors.Is(err, store.ErrConflict):
		case errors.Is(err, store.ErrUnavailable):
			select {
			case <-ctx.Done():
				return 0, fmt.Errorf("commit %s/%d: %w (last error %v)", client, seq, ctx.Err(), err)
			case <-time.After(50 * time.Millisecond):
			}
		default:
			return 0, err
		}
	}
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v (%s)", what, within, detail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
