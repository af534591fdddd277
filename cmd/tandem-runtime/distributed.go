package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-dev/tandem/runtime/config"
	"github.com/tandem-dev/tandem/runtime/store/distributed"
)

// openDistributed connects the Redis log and presence and the PostgreSQL
// durable store (migrating it). Both URLs are required: the distributed
// mode has no half-configured variant.
func openDistributed(ctx context.Context, cfg *config.Config, reg prometheus.Registerer) (*backends, error) {
	redisURL, err := cfg.Redis()
	if err != nil {
		return nil, err
	}
	pgURL, err := cfg.Postgres()
	if err != nil {
		return nil, err
	}
	if redisURL == "" || pgURL == "" {
		return nil, fmt.Errorf("distributed mode needs both --redis-url (or --redis-url-file) and --postgres-url (or --postgres-url-file)")
	}
	s, err := distributed.Open(ctx, distributed.Config{
		RedisURL:      redisURL,
		PostgresURL:   pgURL,
		FlushInterval: cfg.FlushInterval,
		FlushBatch:    cfg.FlushBatch,
		Logger:        slog.Default(),
	}, reg)
	if err != nil {
		return nil, err
	}
	slog.Info("distributed mode", "replica", s.Router.Self())
	return &backends{
		Log: s.Log, Durable: s.Durable, Presence: s.Presence, Router: s.Router,
		Ready: []func(context.Context) error{s.Ready},
		Close: s.Close,
	}, nil
}
