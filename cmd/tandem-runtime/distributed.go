package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-dev/tandem/runtime/config"
	"github.com/tandem-dev/tandem/runtime/server"
	"github.com/tandem-dev/tandem/runtime/store/distributed"
)

// distributedURLs returns the Redis and PostgreSQL URLs. Both are
// required: the distributed mode has no half-configured variant.
func distributedURLs(cfg *config.Config) (redisURL, pgURL string, err error) {
	if redisURL, err = cfg.Redis(); err != nil {
		return "", "", err
	}
	if pgURL, err = cfg.Postgres(); err != nil {
		return "", "", err
	}
	if redisURL == "" || pgURL == "" {
		return "", "", fmt.Errorf("distributed mode needs both --redis-url (or --redis-url-file) and --postgres-url (or --postgres-url-file)")
	}
	return redisURL, pgURL, nil
}

// openDistributed connects the Redis log and presence and the PostgreSQL
// durable store (migrating it). It waits for the stores with backoff and
// tells waiting why.
func openDistributed(ctx context.Context, cfg *config.Config, reg prometheus.Registerer, waiting func(error)) (*backends, error) {
	redisURL, pgURL, err := distributedURLs(cfg)
	if err != nil {
		return nil, err
	}
	s, err := distributed.Open(ctx, distributed.Config{
		RedisURL:    redisURL,
		PostgresURL: pgURL,
		RedisTLS:    distributed.TLSFiles(cfg.RedisTLS),
		PostgresTLS: distributed.TLSFiles(cfg.PostgresTLS),

		RedisWaitReplicas: cfg.RedisWaitReplicas,
		RedisCluster:      cfg.RedisCluster,
		FlushInterval:     cfg.FlushInterval,
		FlushBatch:        cfg.FlushBatch,
		SnapshotInterval:  int64(cfg.SnapshotInterval),
		IdleTTL:           cfg.RedisIdleTTL,
		TailBytes:         int64(cfg.RedisTailBytes),
		Waiting:           waiting,
		Logger:            slog.Default(),
	}, reg)
	if err != nil {
		return nil, err
	}
	slog.Info("distributed mode", "replica", s.Router.Self())
	return &backends{
		Log: s.Log, Durable: s.Durable, Presence: s.Presence, Router: s.Router,
		Ready: []server.ReadyCheck{
			{Name: "redis", Check: s.Ready},
			{Name: "postgres", Check: s.PostgresReady, Informational: true},
		},
		Close: s.Close,
	}, nil
}
