// Package distributed wires the Redis log, sequencer and presence to the
// PostgreSQL durable store: the storage of tandem-runtime when it runs as
// several replicas.
package distributed

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/pgstore"
	"github.com/tandem-dev/tandem/runtime/store/redisstore"
)

// Config selects the services and tunes the distributed mode. Zero values
// take the defaults documented on redisstore.Options.
type Config struct {
	// RedisURL is redis://[user:pass@]host:port/db or rediss://... for one
	// Redis, redis-cluster://[user:pass@]host:port[,host:port...] or
	// rediss-cluster://... for a Redis Cluster (seed nodes).
	RedisURL    string
	PostgresURL string // postgres://... (pgx connection string)
	// RedisTLS and PostgresTLS are the CA and client certificate files for
	// TLS connections (rediss://; PostgreSQL with sslmode=verify-full).
	RedisTLS, PostgresTLS TLSFiles
	// RedisWaitReplicas is how many Redis replicas must confirm a commit
	// before it is acknowledged (see redisstore.Options.WaitReplicas);
	// negative: 1 on a Redis Cluster, 0 on a single Redis.
	RedisWaitReplicas int
	// RedisCluster treats a redis:// or rediss:// RedisURL as a Redis
	// Cluster seed (more seeds as ?addr=host:port).
	RedisCluster bool

	FlushInterval time.Duration // --flush-interval (500ms)
	FlushBatch    int           // --flush-batch (1000)
	// SnapshotInterval is how many revisions apart PostgreSQL keeps
	// snapshots (--snapshot-interval; store.DefaultSnapshotInterval).
	SnapshotInterval int64
	Shards           int           // persistence stream shards (4)
	ClaimIdle        time.Duration // idle time before a dead flusher's entries are claimed (30s)
	Tail             int64         // persisted revisions kept in each document's stream (1000)
	TailBytes        int64         // the same tail's bound in bytes (4 MiB)
	IdleTTL          time.Duration // --redis-idle-ttl: a fully persisted idle document's keys expire (10m)
	PresenceTTL      time.Duration // presence entry lifetime without refresh (30s)
	CatchUp          time.Duration // silence after which a subscription polls the stream (1s)
	// Replica names this process among the replicas: its document owner
	// leases and its inbox for forwarded submissions. It must be unique
	// among live replicas (default: host name, process id, random suffix).
	Replica  string
	LeaseTTL time.Duration // document owner lease lifetime without renewal (5s)
	Breaker  redisstore.BreakerOptions

	// RetryMin and RetryMax bound the backoff between attempts to reach a
	// store that does not answer yet (defaults 250ms and 5s).
	RetryMin, RetryMax time.Duration
	// Waiting, when set, is told why Open is still waiting: the last
	// error of the store it waits for. /readyz shows it.
	Waiting func(reason error)

	Logger *slog.Logger
}

// Stores is what the runtime needs from the distributed mode.
type Stores struct {
	Log      store.Log
	Durable  store.Durable
	Presence store.Presence
	// Router routes a busy document's submissions to the replica holding
	// its owner lease, so that one replica appends them.
	Router store.Router

	redis redis.UniversalClient
	pg    *pgstore.Store
	rs    *redisstore.Store
}

// Open connects to Redis and PostgreSQL, applies the database migrations
// and starts the flusher. Metrics are registered on reg (nil: none).
func Open(ctx context.Context, cfg Config, reg prometheus.Registerer) (*Stores, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RedisURL == "" || cfg.PostgresURL == "" {
		return nil, errors.New("distributed mode needs both a Redis URL and a PostgreSQL URL")
	}
	rc, err := newRedisConn(cfg.RedisURL, cfg.RedisCluster, cfg.RedisTLS)
	if err != nil {
		return nil, err
	}
	pgcfg, err := postgresConfig(cfg.PostgresURL, cfg.PostgresTLS)
	if err != nil {
		rc.client.Close()
		return nil, err
	}
	rdb := rc.client
	waitReplicas := cfg.RedisWaitReplicas
	if waitReplicas < 0 {
		waitReplicas = 0
		if rc.cluster {
			waitReplicas = 1
		}
	}
	// Stores may come up after the runtime (in Kubernetes a headless
	// Service has no DNS record until its pod is ready, and Redis answers
	// LOADING while it reads its append-only file). Exiting would put the
	// pod in the kubelet's growing crash back-off, so wait instead.
	w := waiter{cfg: cfg}
	err = w.retry(ctx, "redis", rc.addr, func(ctx context.Context) error {
		pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return rdb.Ping(pingCtx).Err()
	})
	if err != nil {
		rdb.Close()
		return nil, err
	}
	var pg *pgstore.Store
	err = w.retry(ctx, "postgres", pgHost(cfg.PostgresURL), func(ctx context.Context) error {
		// Bound each attempt: a host that drops packets would otherwise
		// hang the first connect without a log line.
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		var err error
		pg, err = pgstore.OpenConfig(ctx, pgcfg.Copy(), cfg.Logger)
		if err == nil {
			pg.SetSnapshotInterval(cfg.SnapshotInterval)
		}
		return err
	})
	if err != nil {
		rdb.Close()
		return nil, err
	}
	rs, err := redisstore.New(rdb, pg, redisstore.Options{
		Shards:        cfg.Shards,
		FlushInterval: cfg.FlushInterval,
		FlushBatch:    cfg.FlushBatch,
		ClaimIdle:     cfg.ClaimIdle,
		Tail:          cfg.Tail,
		TailBytes:     cfg.TailBytes,
		IdleTTL:       cfg.IdleTTL,
		CatchUp:       cfg.CatchUp,
		PresenceTTL:   cfg.PresenceTTL,
		Replica:       cfg.Replica,
		LeaseTTL:      cfg.LeaseTTL,
		WaitReplicas:  waitReplicas,
		Breaker:       cfg.Breaker,
		IsPermanent:   pgstore.IsPermanent,
		Logger:        cfg.Logger,
	}, reg)
	if err != nil {
		pg.Close()
		rdb.Close()
		return nil, err
	}
	return &Stores{Log: rs.Log, Durable: pg, Presence: rs.Presence, Router: rs.Router, redis: rdb, pg: pg, rs: rs}, nil
}

// waiter retries the first contact with a store with capped exponential
// backoff, logging each failure with its reason.
type waiter struct{ cfg Config }

func (w waiter) retry(ctx context.Context, name, addr string, try func(context.Context) error) error {
	lo, hi := w.cfg.RetryMin, w.cfg.RetryMax
	if lo <= 0 {
		lo = 250 * time.Millisecond
	}
	if hi < lo {
		hi = max(lo, 5*time.Second)
	}
	delay := lo
	for attempt := 1; ; attempt++ {
		err := try(ctx)
		if err == nil {
			if attempt > 1 {
				w.cfg.Logger.Info("store answers", "store", name, "addr", addr, "attempts", attempt)
			}
			if w.cfg.Waiting != nil {
				w.cfg.Waiting(nil)
			}
			return nil
		}
		err = fmt.Errorf("connect to %s at %s: %w", name, addr, err)
		if ctx.Err() != nil {
			return fmt.Errorf("%w (stopped waiting: %w)", err, ctx.Err())
		}
		if !retryable(err) {
			if certificateError(err) {
				return fmt.Errorf("%w (the %s server's certificate was refused: check that --%s-ca-file holds the CA that signed it and that it names %s)", err, name, name, addr)
			}
			if clientCertificateRefused(err) {
				return fmt.Errorf("%w (the %s server wants a client certificate it trusts: set --%s-cert-file and --%s-key-file; in a CollabCluster, clientCertificate: true on the TLS Secret with tls.crt and tls.key)", err, name, name, name)
			}
			return err
		}
		if w.cfg.Waiting != nil {
			w.cfg.Waiting(err)
		}
		// Jitter spreads the replicas of a new cluster apart.
		d := delay/2 + rand.N(delay/2+1)
		w.cfg.Logger.Warn("waiting for store", "store", name, "addr", addr, "attempt", attempt, "retry_in", d.Round(time.Millisecond), "err", err)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (stopped waiting: %w)", err, ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, hi)
	}
}

// retryable tells a store that is not there yet (unresolvable, refusing,
// loading, starting up, migrations locked) from a configuration that can
// never work; only the latter ends the wait, so that a typo fails fast.
func retryable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && len(pe.Code) == 5 {
		switch pe.Code[:2] {
		case "28": // invalid authorization: wrong user or password
			return false
		case "3D": // invalid catalog name: the database does not exist
			return false
		}
		return true
	}
	if certificateError(err) || clientCertificateRefused(err) {
		// A certificate that does not verify now will not verify later,
		// on either side.
		return false
	}
	msg := err.Error()
	for _, s := range []string{"WRONGPASS", "NOAUTH", "invalid password", "invalid username-password"} {
		if strings.Contains(msg, s) {
			return false
		}
	}
	return true
}

// certificateError reports a server certificate that failed verification.
func certificateError(err error) bool {
	var verr *tls.CertificateVerificationError
	var uerr x509.UnknownAuthorityError
	var herr x509.HostnameError
	var ierr x509.CertificateInvalidError
	return errors.As(err, &verr) || errors.As(err, &uerr) || errors.As(err, &herr) || errors.As(err, &ierr)
}

// clientCertificateRefused reports a server refusing a connection for
// want of a valid client certificate: PostgreSQL's pg_hba.conf cert or
// clientcert=, or a TLS alert from the server's side of the handshake, as
// Redis with tls-auth-clients yes sends ("certificate required" without
// one, "unknown certificate authority" for one its CA did not sign). A
// failure to verify the server's certificate is local, never a remote
// error.
func clientCertificateRefused(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return strings.HasPrefix(pe.Code, "28") && strings.Contains(pe.Message, "certificate")
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "remote error" && oe.Err != nil && strings.Contains(oe.Err.Error(), "certificate")
}

// pgHost is the host:port of a PostgreSQL URL for log lines, never its
// password.
func pgHost(url string) string {
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return "?"
	}
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
}

// Ready fails while Redis is unreachable or its circuit breaker is open.
// A PostgreSQL outage does not make the replica unready: editing goes on
// and the flushers catch up when it returns (see docs/durability.md).
func (s *Stores) Ready(ctx context.Context) error { return s.rs.Ready(ctx) }

// PostgresReady reports whether PostgreSQL answers; /readyz shows it
// without letting it decide readiness.
func (s *Stores) PostgresReady(ctx context.Context) error { return s.pg.Ready(ctx) }

// Close flushes what this replica has read from the persistence streams
// (as far as ctx allows), then closes every connection.
func (s *Stores) Close(ctx context.Context) error {
	err := s.rs.Close(ctx)
	s.pg.Close()
	return errors.Join(err, s.redis.Close())
}

// ResolveURL returns value, or the trimmed contents of file when value is
// empty and file is set (Kubernetes Secrets are mounted as files).
func ResolveURL(value, file string) (string, error) {
	if value != "" || file == "" {
		return value, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read url file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
