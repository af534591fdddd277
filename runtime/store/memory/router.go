package memory

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tandem-dev/tandem/runtime/store"
)

// Routes is the shared state of in-process Routers: the leases and the
// inboxes of every replica. It lets tests run several document managers in
// one process as replicas of the distributed mode.
type Routes struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	leases  map[string]lease // doc -> holder
	inboxes map[string]chan store.Routed
}

type lease struct {
	owner   string
	expires time.Time
}

// inboxBuffer bounds each replica's inbox. A full inbox drops the message,
// as a Redis pub/sub subscriber that cannot keep up loses messages; the
// origin's take-back covers it.
const inboxBuffer = 1024

// NewRoutes returns the shared state for Routers whose leases last ttl
// (default 5s); now is the clock (default time.Now).
func NewRoutes(ttl time.Duration, now func() time.Time) *Routes {
	if ttl <= 0 {
		ttl = 5 * time.Second
	}
	if now == nil {
		now = time.Now
	}
	return &Routes{ttl: ttl, now: now, leases: map[string]lease{}, inboxes: map[string]chan store.Routed{}}
}

// Router returns the router of replica id, listening from now on. Close it
// to make the replica disappear (as a process that died).
func (r *Routes) Router(id string) *Router {
	ch := make(chan store.Routed, inboxBuffer)
	r.mu.Lock()
	r.inboxes[id] = ch
	r.mu.Unlock()
	return &Router{routes: r, id: id, inbox: ch}
}

// Router is an in-process store.Router.
type Router struct {
	routes *Routes
	id     string
	inbox  chan store.Routed
	once   sync.Once
}

var _ store.Router = (*Router)(nil)

// Self implements store.Router.
func (r *Router) Self() string { return r.id }

// LeaseTTL implements store.Router.
func (r *Router) LeaseTTL() time.Duration { return r.routes.ttl }

// Claim implements store.Router.
func (r *Router) Claim(ctx context.Context, doc string) (string, bool, error) {
	if err := ctx.Err(); err != nil {
		return "", false, fmt.Errorf("claim %q: %w", doc, err)
	}
	rs := r.routes
	rs.mu.Lock()
	defer rs.mu.Unlock()
	now := rs.now()
	l, held := rs.leases[doc]
	if held && now.Before(l.expires) && l.owner != r.id {
		return l.owner, false, nil
	}
	acquired := !held || !now.Before(l.expires) || l.owner != r.id
	rs.leases[doc] = lease{owner: r.id, expires: now.Add(rs.ttl)}
	return r.id, acquired, nil
}

// Release implements store.Router.
func (r *Router) Release(ctx context.Context, doc string) error {
	rs := r.routes
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if l, ok := rs.leases[doc]; ok && l.owner == r.id {
		delete(rs.leases, doc)
	}
	return nil
}

// Forward implements store.Router.
func (r *Router) Forward(ctx context.Context, to string, subs []store.Forwarded) error {
	return r.routes.deliver(ctx, to, store.Routed{Forwarded: append([]store.Forwarded(nil), subs...)})
}

// Reply implements store.Router.
func (r *Router) Reply(ctx context.Context, to string, replies []store.Reply) error {
	err := r.routes.deliver(ctx, to, store.Routed{Replies: append([]store.Reply(nil), replies...)})
	if err != nil && ctx.Err() == nil {
		return nil // the origin is gone; nobody is waiting for the reply
	}
	return err
}

func (rs *Routes) deliver(ctx context.Context, to string, msg store.Routed) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("send to replica %q: %w", to, err)
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	ch, ok := rs.inboxes[to]
	if !ok {
		return fmt.Errorf("send to replica %q: %w", to, store.ErrNoReceiver)
	}
	select {
	case ch <- msg:
	default: // dropped, like a lagging pub/sub subscriber
	}
	return nil
}

// Inbox implements store.Router.
func (r *Router) Inbox() <-chan store.Routed { return r.inbox }

// Close stops listening; messages sent to this replica afterwards fail
// with store.ErrNoReceiver. Its leases stay until they expire, as those of
// a replica that died.
func (r *Router) Close() {
	r.once.Do(func() {
		r.routes.mu.Lock()
		if r.routes.inboxes[r.id] == r.inbox {
			delete(r.routes.inboxes, r.id)
		}
		r.routes.mu.Unlock()
	})
}
