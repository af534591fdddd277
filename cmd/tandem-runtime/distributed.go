package main

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-dev/tandem/runtime/config"
)

// openDistributed connects the Redis log and presence and the PostgreSQL
// durable store. The distributed storage lands separately; until then this
// build refuses the Redis/PostgreSQL settings instead of ignoring them.
func openDistributed(ctx context.Context, cfg *config.Config, reg prometheus.Registerer) (*backends, error) {
	return nil, errors.New("distributed mode (--redis-url/--postgres-url) is not available in this build")
}
