package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-dev/tandem/runtime/store"
)

// evalReplicated runs sc on the master of keys[0] and, when WaitReplicas is
// set, waits until that many of its replicas confirm the script's writes.
// WAIT counts the writes of the connection it is sent on, so the script
// and the WAIT go down one connection to the slot's master in one
// pipeline. A redirection (the slot moved, or a failover is under way) is
// retried on the slot's new master; the script did not run then.
func (c *core) evalReplicated(ctx context.Context, sc *redis.Script, keys []string, args ...any) ([]any, error) {
	if c.opts.WaitReplicas <= 0 {
		return sc.Run(ctx, c.rdb, keys, args...).Slice()
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		if attempt > 0 {
			if cc, ok := c.rdb.(*redis.ClusterClient); ok {
				cc.ReloadState(ctx)
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
			}
		}
		node, err := c.masterFor(ctx, keys[0])
		if err != nil {
			return nil, err
		}
		var ev *redis.Cmd
		var wait *redis.Cmd
		_, err = node.Pipelined(ctx, func(p redis.Pipeliner) error {
			// EVAL rather than EVALSHA: a pipeline cannot fall back when
			// the master lacks the script (a promoted replica may).
			ev = sc.Eval(ctx, p, keys, args...)
			wait = p.Do(ctx, "WAIT", c.opts.WaitReplicas, c.opts.WaitTimeout.Milliseconds())
			return nil
		})
		if err := ev.Err(); err != nil {
			if isRedirect(err) {
				lastErr = err
				continue
			}
			return nil, err
		}
		res, serr := ev.Slice()
		if serr != nil {
			return nil, serr
		}
		if err := wait.Err(); err != nil {
			return res, fmt.Errorf("%w: waiting for %d redis replicas to confirm: %w", errNotReplicated, c.opts.WaitReplicas, err)
		}
		if n, _ := wait.Int64(); n < int64(c.opts.WaitReplicas) {
			return res, fmt.Errorf("%w: %d of %d redis replicas confirmed within %v", errNotReplicated, n, c.opts.WaitReplicas, c.opts.WaitTimeout)
		}
		return res, nil
	}
	return nil, fmt.Errorf("%w: redis kept redirecting: %w", store.ErrUnavailable, lastErr)
}

// errNotReplicated marks a write the master applied but its replicas did
// not confirm in time.
var errNotReplicated = errors.New("written to the redis master but not confirmed by its replicas")

// masterFor is the client of the master serving key's slot.
func (c *core) masterFor(ctx context.Context, key string) (*redis.Client, error) {
	switch r := c.rdb.(type) {
	case *redis.ClusterClient:
		m, err := r.MasterForKey(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("find the redis master of %s: %w", key, err)
		}
		return m, nil
	case *redis.Client:
		return r, nil
	default:
		return nil, fmt.Errorf("waiting for replicas needs a redis client or cluster client, not %T", c.rdb)
	}
}

// isRedirect reports a cluster reply that means "not here (yet)": the
// command was not executed.
func isRedirect(err error) bool {
	s := err.Error()
	for _, p := range []string{"MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN", "READONLY", "LOADING", "MASTERDOWN"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
