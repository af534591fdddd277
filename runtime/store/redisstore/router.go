package redisstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/tandem-dev/tandem/runtime/store"
)

// Router implements store.Router on Redis: a document's owner lease is the
// key tandem:{doc:ID}:owner (SET NX PX, renewed with PEXPIRE, released with
// a compare-and-delete), and each replica listens on its own pub/sub
// channel tandem:{replica:ID}:inbox.
//
// Pub/sub rather than a stream per replica: a forwarded submission is
// worth something only for a second or two, after which its origin takes
// it back and appends it itself, so the at-most-once delivery of pub/sub
// costs nothing that the take-back does not already cover. A stream would
// add a write and a trim per message and leave a dead replica's stream
// behind, while PUBLISH is one round trip that also tells the sender
// whether anyone is listening: zero receivers means the owner is gone, and
// the origin takes its submissions back at once instead of waiting.
type Router struct {
	c    *core
	self string
	ttl  time.Duration

	out  chan store.Routed
	stop context.CancelFunc
	wg   sync.WaitGroup
}

var _ store.Router = (*Router)(nil)

func newRouter(c *core) *Router {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Router{c: c, self: c.opts.Replica, ttl: c.opts.LeaseTTL, out: make(chan store.Routed, 256), stop: cancel}
	// Subscribe before returning when Redis answers, so that a replica
	// receives what is forwarded to it as soon as it can claim a lease;
	// otherwise keep trying in the background.
	sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
	lis, unlisten, err := c.hub.listen(sctx, inboxChannel(r.self))
	scancel()
	if err != nil {
		c.logger.Warn("subscribe to replica inbox; retrying", "err", err)
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if lis == nil {
			if lis, unlisten = r.subscribe(ctx); lis == nil {
				return
			}
		}
		defer unlisten()
		r.receive(ctx, lis)
	}()
	return r
}

func (r *Router) close() {
	r.stop()
	r.wg.Wait()
}

// subscribe retries listening on this replica's inbox channel until it
// succeeds or ctx ends (nil); the hub resubscribes by itself after a
// reconnect.
func (r *Router) subscribe(ctx context.Context) (*listener, func()) {
	for {
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(time.Second):
		}
		lis, unlisten, err := r.c.hub.listen(ctx, inboxChannel(r.self))
		if err == nil {
			return lis, unlisten
		}
		r.c.logger.Warn("subscribe to replica inbox; retrying", "err", err)
	}
}

// receive decodes what arrives on the inbox channel.
func (r *Router) receive(ctx context.Context, lis *listener) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-lis.resync:
			// Messages published while the connection was down are lost;
			// their origins take them back after the forward timeout.
		case payload := <-lis.msgs:
			var msg store.Routed
			if err := json.Unmarshal([]byte(payload), &msg); err != nil {
				r.c.logger.Warn("dropping undecodable routed message", "err", err)
				continue
			}
			select {
			case r.out <- msg:
			case <-ctx.Done():
				return
			}
		}
	}
}

// Self implements store.Router.
func (r *Router) Self() string { return r.self }

// LeaseTTL implements store.Router.
func (r *Router) LeaseTTL() time.Duration { return r.ttl }

// Inbox implements store.Router.
func (r *Router) Inbox() <-chan store.Routed { return r.out }

// Claim implements store.Router.
func (r *Router) Claim(ctx context.Context, doc string) (string, bool, error) {
	res, err := call(r.c.cb, "claim owner lease of doc "+strconv.Quote(doc), func() ([]any, error) {
		return r.c.sc.ownerClaim.Run(ctx, r.c.rdb, []string{ownerKey(doc)}, r.self, r.ttl.Milliseconds()).Slice()
	})
	if err != nil {
		return "", false, err
	}
	if len(res) != 2 {
		return "", false, fmt.Errorf("claim owner lease of doc %q: unexpected reply %v", doc, res)
	}
	owner, _ := res[0].(string)
	acquired, _ := res[1].(int64)
	return owner, acquired == 1, nil
}

// Release implements store.Router.
func (r *Router) Release(ctx context.Context, doc string) error {
	_, err := call(r.c.cb, "release owner lease of doc "+strconv.Quote(doc), func() (any, error) {
		return r.c.sc.ownerRelease.Run(ctx, r.c.rdb, []string{ownerKey(doc)}, r.self).Result()
	})
	return err
}

// Forward implements store.Router.
func (r *Router) Forward(ctx context.Context, to string, subs []store.Forwarded) error {
	n, err := r.publish(ctx, to, store.Routed{Forwarded: subs})
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("forward to replica %q: %w", to, store.ErrNoReceiver)
	}
	return nil
}

// Reply implements store.Router. A reply nobody receives is not an error:
// its origin is gone, and with it whoever was waiting.
func (r *Router) Reply(ctx context.Context, to string, replies []store.Reply) error {
	_, err := r.publish(ctx, to, store.Routed{Replies: replies})
	return err
}

func (r *Router) publish(ctx context.Context, to string, msg store.Routed) (int64, error) {
	payload, err := json.Marshal(msg)
	if err != nil {
		return 0, fmt.Errorf("encode message to replica %q: %w", to, err)
	}
	return call(r.c.cb, "send to replica "+strconv.Quote(to), func() (int64, error) {
		return r.c.hub.publish(ctx, inboxChannel(to), payload)
	})
}
