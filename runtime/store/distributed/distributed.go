// Package distributed wires the Redis log, sequencer and presence to the
// PostgreSQL durable store: the storage of tandem-runtime when it runs as
// several replicas.
package distributed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/pgstore"
	"github.com/tandem-dev/tandem/runtime/store/redisstore"
)

// Config selects the services and tunes the distributed mode. Zero values
// take the defaults documented on redisstore.Options.
type Config struct {
	RedisURL    string // redis://[user:pass@]host:port/db or rediss://...
	PostgresURL string // postgres://... (pgx connection string)

	FlushInterval time.Duration // --flush-interval (500ms)
	FlushBatch    int           // --flush-batch (1000)
	Shards        int           // persistence stream shards (4)
	ClaimIdle     time.Duration // idle time before a dead flusher's entries are claimed (30s)
	Tail          int64         // persisted revisions kept in each document's stream (1000)
	PresenceTTL   time.Duration // presence entry lifetime without refresh (30s)
	CatchUp       time.Duration // silence after which a subscription polls the stream (1s)
	// Replica names this process among the replicas: its document owner
	// leases and its inbox for forwarded submissions. It must be unique
	// among live replicas (default: host name, process id, random suffix).
	Replica  string
	LeaseTTL time.Duration // document owner lease lifetime without renewal (5s)
	Breaker  redisstore.BreakerOptions

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

	redis *redis.Client
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
	ropts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("parse redis url: %w", err)
	}
	// Short timeouts and few retries: a Redis that does not answer must
	// surface quickly as "unavailable" through the breaker, not as a hang.
	if ropts.DialTimeout == 0 {
		ropts.DialTimeout = 2 * time.Second
	}
	if ropts.ReadTimeout == 0 {
		ropts.ReadTimeout = 2 * time.Second
	}
	if ropts.WriteTimeout == 0 {
		ropts.WriteTimeout = 2 * time.Second
	}
	ropts.MaxRetries = 1
	rdb := redis.NewClient(ropts)
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := rdb.Ping(pingCtx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("connect to redis at %s: %w", ropts.Addr, err)
	}
	pg, err := pgstore.Open(ctx, cfg.PostgresURL, cfg.Logger)
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
		CatchUp:       cfg.CatchUp,
		PresenceTTL:   cfg.PresenceTTL,
		Replica:       cfg.Replica,
		LeaseTTL:      cfg.LeaseTTL,
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

// Ready fails while Redis is unreachable or its circuit breaker is open.
// A PostgreSQL outage does not make the replica unready: editing goes on
// and the flushers catch up when it returns (see docs/durability.md).
func (s *Stores) Ready(ctx context.Context) error { return s.rs.Ready(ctx) }

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
