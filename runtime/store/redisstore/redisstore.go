// Package redisstore implements the distributed mode's operation log,
// sequencer, fan-out, presence and document owner leases (Router) on
// Redis, and the flusher that moves committed operations from Redis into
// the durable store (PostgreSQL).
//
// Layout per document (all keys share the hash tag {doc:<id>}):
//
//	tandem:{doc:ID}:meta     hash: head, epoch, persisted, bytes (of the log)
//	tandem:{doc:ID}:log      stream: one entry per revision, ID "<rev>-1"
//	tandem:{doc:ID}:ops      pub/sub channel: commit notifications
//	tandem:{doc:ID}:presence hash + ":presence:exp" sorted set by expiry
//	tandem:{doc:ID}:owner    string: the replica holding the owner lease
//
// and per replica the pub/sub channel tandem:{replica:ID}:inbox (Router),
// plus shared persistence streams tandem:{persist:N} (N < Shards) read by
// the consumer group "flushers". A pointer is deleted only once its
// commits are in the durable store.
package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"

	"github.com/tandem-dev/tandem/runtime/store"
)

// ErrReset is store.ErrReset: a document's log was lost or reset in Redis
// (its epoch changed) since this process last looked at it.
var ErrReset = store.ErrReset

// Options configure the Redis store. Zero values take the defaults noted.
type Options struct {
	// Shards is the number of persistence streams documents are spread
	// over (default 4). Changing it while pointers are pending is safe:
	// flushers read every shard below the configured count, so only lower
	// it after the higher shards have drained.
	Shards int
	// FlushInterval is the longest a committed operation waits before its
	// batch is written to PostgreSQL (default 500ms).
	FlushInterval time.Duration
	// FlushBatch is the number of commits that triggers a write before the
	// interval ends (default 1000).
	FlushBatch int
	// ClaimIdle is how long a persistence entry may sit unacknowledged with
	// another consumer (presumably dead) before it is claimed (default 30s).
	ClaimIdle time.Duration
	// Tail is how many persisted revisions stay in a document's stream for
	// reconnect catch-up (default 1000).
	Tail int64
	// TailBytes bounds the same tail in bytes of encoded entries (default
	// 4 MiB): a document of large operations keeps fewer of them. Entries
	// not yet persisted are never trimmed, whatever their size.
	TailBytes int64
	// IdleTTL is how long the keys of a document that is fully persisted
	// stay in Redis after its last activity (default 10m; negative: keep
	// them forever). Appends stop the clock, reads and subscriptions
	// restart it; an expired document is reseeded from the durable store
	// on its next use, so Redis holds the active documents, not every
	// document ever opened.
	IdleTTL time.Duration
	// CatchUp is how long a subscription may hear nothing before it checks
	// the head itself, in case pub/sub dropped messages (default 1s).
	CatchUp time.Duration
	// PresenceTTL is how long a presence entry lives without a refresh
	// (default 30s).
	PresenceTTL time.Duration
	// Consumer names this process in the flusher group (default host-pid-random).
	Consumer string
	// Replica is this process's id for document owner leases and its inbox
	// channel; it must be unique among the live replicas (default Consumer).
	Replica string
	// LeaseTTL is how long a document's owner lease lasts without renewal
	// (default 5s): after an owner dies, other replicas append the
	// document's operations themselves until it expires.
	LeaseTTL time.Duration
	// IsPermanent classifies durable Write errors that will recur on retry
	// (bad data, not an outage); such a batch is written document by
	// document at once, and the documents still refused are retried on
	// their own with a backoff (a write that fails while the durable store
	// answers pings is treated the same way). Default: errors implementing
	// PermanentError.
	IsPermanent func(error) bool
	// WaitReplicas is how many replicas of a document's Redis master must
	// confirm a commit (WAIT) before Append acknowledges it (default 0).
	// Redis replicates asynchronously: without it, a commit acknowledged
	// by a master that dies before its replica received it is gone once
	// the replica is promoted. With Redis Cluster (or any Redis with
	// replicas and automatic failover) set it to 1. A commit the replicas
	// do not confirm within WaitTimeout is reported as unavailable (it may
	// still be committed; the writer's retry finds it by its sequence
	// number).
	WaitReplicas int
	// WaitTimeout bounds the wait for WaitReplicas (default 2s).
	WaitTimeout time.Duration
	// NoFlusher disables this process's flusher (it still commits and
	// enqueues; other processes flush). Tests use it.
	NoFlusher bool
	Breaker   BreakerOptions
	Logger    *slog.Logger
}

func (o *Options) setDefaults() {
	if o.Shards <= 0 {
		o.Shards = 4
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = 500 * time.Millisecond
	}
	if o.FlushBatch <= 0 {
		o.FlushBatch = 1000
	}
	if o.ClaimIdle <= 0 {
		o.ClaimIdle = 30 * time.Second
	}
	if o.Tail <= 0 {
		o.Tail = 1000
	}
	if o.TailBytes <= 0 {
		o.TailBytes = 4 << 20
	}
	if o.IdleTTL == 0 {
		o.IdleTTL = 10 * time.Minute
	}
	if o.IdleTTL < 0 {
		o.IdleTTL = 0
	}
	if o.CatchUp <= 0 {
		o.CatchUp = time.Second
	}
	if o.PresenceTTL <= 0 {
		o.PresenceTTL = 30 * time.Second
	}
	if o.Consumer == "" {
		host, _ := os.Hostname()
		o.Consumer = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), randomID(4))
	}
	if o.Replica == "" {
		o.Replica = o.Consumer
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 5 * time.Second
	}
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Store bundles the Redis-backed Log, Presence and Router of one process;
// they share one connection pool, one pub/sub connection and one breaker.
type Store struct {
	Log      *Log
	Presence *Presence
	Router   *Router

	core      *core
	closeOnce sync.Once
	closeErr  error
}

// core is what Log, Presence and the flusher share.
type core struct {
	rdb     redis.UniversalClient
	durable store.Durable
	opts    Options
	cb      *gobreaker.CircuitBreaker[any]
	m       *metrics
	sc      *scripts
	hub     *hub
	logger  *slog.Logger
}

// New builds the store on rdb. durable is where the flusher writes and
// where a document whose Redis state is missing is reseeded from. Metrics
// go to reg (nil: not registered). Background work runs until Close.
func New(rdb redis.UniversalClient, durable store.Durable, opts Options, reg prometheus.Registerer) (*Store, error) {
	opts.setDefaults()
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	sc, err := loadScripts()
	if err != nil {
		return nil, err
	}
	c := &core{
		rdb:     rdb,
		durable: durable,
		opts:    opts,
		m:       m,
		sc:      sc,
		logger:  opts.Logger,
	}
	c.cb = newBreaker(opts.Breaker, func(s gobreaker.State) {
		m.breakerState.Set(breakerStateValue(s))
		c.logger.Warn("redis circuit breaker changed state", "state", s.String())
	})
	c.hub = newHub(rdb, c.logger)
	s := &Store{core: c}
	s.Log = newLog(c)
	s.Presence = newPresence(c)
	s.Router = newRouter(c)
	return s, nil
}

// Ready fails while the Redis breaker is open or Redis does not answer.
func (s *Store) Ready(ctx context.Context) error { return s.Log.Ready(ctx) }

// Close stops the flusher (after a final flush), presence heartbeats and
// the pub/sub connection. It does not close the Redis client or the
// durable store, which the caller owns.
func (s *Store) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		err := s.Log.Close(ctx)
		s.Presence.close()
		s.Router.close()
		s.closeErr = errors.Join(err, s.core.hub.close())
	})
	return s.closeErr
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}
