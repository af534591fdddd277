package redisstore

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// hub multiplexes the pub/sub channels this process listens to over as few
// Redis connections as the deployment allows.
//
// On a single Redis every channel shares one connection (classic
// SUBSCRIBE/PUBLISH), so a replica holds one pub/sub connection no matter
// how many documents it serves.
//
// On a Redis Cluster the channels are sharded (SSUBSCRIBE/SPUBLISH): a
// message travels only within the shard that owns the channel's hash slot
// instead of being broadcast over the cluster bus to every node. Every
// channel carries a hash tag ({doc:ID} or {replica:ID}), so a document's
// commit and presence channels live in the slot of its keys and the
// scripts can publish on them. Redis accepts one slot per SSUBSCRIBE and
// go-redis resubscribes a connection's channels with one command, so the
// hub keeps one connection per hash slot in use: per replica, one for its
// inbox and one per open document. When a slot moves (resharding, or a
// failover that demotes its master) Redis unsubscribes the channels of
// that slot; the hub then reopens the slot's connection on the slot's new
// owner and pokes the listeners to catch up.
type hub struct {
	rdb     redis.UniversalClient
	sharded bool
	logger  *slog.Logger

	// subMu serialises (un)subscribe decisions with the commands that
	// carry them out, so a listen racing the last unlisten of a channel
	// cannot end up registered on an unsubscribed channel.
	subMu     sync.Mutex
	mu        sync.Mutex
	listeners map[string]map[*listener]struct{}
	// groups holds one pub/sub connection per group of channels: the
	// single group -1 on a standalone Redis, one per hash slot on a
	// cluster.
	groups map[int]*psGroup
	closed bool

	wg sync.WaitGroup
}

// psGroup is one pub/sub connection and the channels subscribed on it.
type psGroup struct {
	ps       *redis.PubSub
	channels map[string]struct{}
	// reopening is set while the group is being moved to a new connection,
	// so a burst of unsolicited unsubscriptions reopens it once.
	reopening bool
}

// listener receives the raw payloads of one channel. Delivery never blocks
// the hub: when a listener's buffer is full the message is dropped, and the
// listener notices the resulting revision gap and repairs it from the
// stream. resync is poked when the hub (re)subscribes, because messages
// published while the connection was down are lost.
type listener struct {
	msgs   chan string
	resync chan struct{}
}

func newHub(rdb redis.UniversalClient, logger *slog.Logger) *hub {
	_, sharded := rdb.(*redis.ClusterClient)
	return &hub{
		rdb:       rdb,
		sharded:   sharded,
		logger:    logger,
		listeners: map[string]map[*listener]struct{}{},
		groups:    map[int]*psGroup{},
	}
}

// publishCommand is the command the scripts and Router use to publish:
// SPUBLISH on a cluster (the channel's shard only), PUBLISH otherwise.
func (h *hub) publishCommand() string {
	if h.sharded {
		return "SPUBLISH"
	}
	return "PUBLISH"
}

// publish sends payload on channel and returns the number of receivers.
func (h *hub) publish(ctx context.Context, channel string, payload any) (int64, error) {
	if h.sharded {
		return h.rdb.SPublish(ctx, channel, payload).Result()
	}
	return h.rdb.Publish(ctx, channel, payload).Result()
}

func (h *hub) groupOf(channel string) int {
	if !h.sharded {
		return -1
	}
	return keySlot(channel)
}

// newPubSub opens a connection subscribed to channels (all of one group).
func (h *hub) newPubSub(ctx context.Context, channels ...string) (*redis.PubSub, error) {
	if h.sharded {
		ps := h.rdb.SSubscribe(ctx)
		if len(channels) > 0 {
			if err := ps.SSubscribe(ctx, channels...); err != nil {
				ps.Close()
				return nil, err
			}
		}
		return ps, nil
	}
	ps := h.rdb.Subscribe(ctx)
	if len(channels) > 0 {
		if err := ps.Subscribe(ctx, channels...); err != nil {
			ps.Close()
			return nil, err
		}
	}
	return ps, nil
}

func (h *hub) subscribe(ctx context.Context, ps *redis.PubSub, channel string) error {
	if h.sharded {
		return ps.SSubscribe(ctx, channel)
	}
	return ps.Subscribe(ctx, channel)
}

func (h *hub) unsubscribe(ctx context.Context, ps *redis.PubSub, channel string) error {
	if h.sharded {
		return ps.SUnsubscribe(ctx, channel)
	}
	return ps.Unsubscribe(ctx, channel)
}

func (h *hub) run(id int, g *psGroup) {
	defer h.wg.Done()
	ch := g.ps.ChannelWithSubscriptions(
		redis.WithChannelSize(1024),
		redis.WithChannelHealthCheckInterval(3*time.Second),
	)
	for m := range ch {
		switch m := m.(type) {
		case *redis.Message:
			h.dispatch(m.Channel, func(l *listener) {
				select {
				case l.msgs <- m.Payload:
				default:
				}
			})
		case *redis.Subscription:
			switch m.Kind {
			case "subscribe", "ssubscribe":
				h.dispatch(m.Channel, func(l *listener) {
					select {
					case l.resync <- struct{}{}:
					default:
					}
				})
			case "sunsubscribe":
				h.movedAway(id, g, m.Channel)
			}
		}
	}
}

// movedAway handles an unsubscription: one the hub asked for needs
// nothing; one it did not (the channel still has listeners) means the
// node no longer serves the channel's slot, so the group moves to a new
// connection, which go-redis opens on the slot's current owner.
func (h *hub) movedAway(id int, g *psGroup, channel string) {
	h.mu.Lock()
	_, wanted := h.listeners[channel]
	if !wanted || h.groups[id] != g || g.reopening || h.closed {
		h.mu.Unlock()
		return
	}
	g.reopening = true
	h.mu.Unlock()
	h.logger.Info("redis moved a pub/sub slot; resubscribing on its new owner", "channel", channel)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.reopen(id, g)
	}()
}

func (h *hub) reopen(id int, old *psGroup) {
	if c, ok := h.rdb.(*redis.ClusterClient); ok {
		c.ReloadState(context.Background())
	}
	for attempt := 0; ; attempt++ {
		// Give the cluster a moment to settle and go-redis to reload its
		// slot map before asking for the slot's owner.
		time.Sleep(min(time.Duration(attempt+1)*200*time.Millisecond, 2*time.Second))
		h.subMu.Lock()
		h.mu.Lock()
		if h.closed || h.groups[id] != old {
			h.mu.Unlock()
			h.subMu.Unlock()
			return
		}
		channels := make([]string, 0, len(old.channels))
		for c := range old.channels {
			channels = append(channels, c)
		}
		h.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ps, err := h.newPubSub(ctx, channels...)
		cancel()
		if err != nil {
			h.subMu.Unlock()
			h.logger.Warn("resubscribing a moved pub/sub slot failed; retrying", "err", err)
			continue
		}
		g := &psGroup{ps: ps, channels: old.channels}
		h.mu.Lock()
		h.groups[id] = g
		h.mu.Unlock()
		h.wg.Add(1)
		go h.run(id, g)
		h.subMu.Unlock()
		_ = old.ps.Close()
		return
	}
}

func (h *hub) dispatch(channel string, f func(*listener)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for l := range h.listeners[channel] {
		f(l)
	}
}

// listen registers a listener on channel, subscribing on first use. The
// returned function unregisters it.
func (h *hub) listen(ctx context.Context, channel string) (*listener, func(), error) {
	l := &listener{msgs: make(chan string, 256), resync: make(chan struct{}, 1)}
	h.subMu.Lock()
	defer h.subMu.Unlock()
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, nil, fmt.Errorf("subscribe to %s: pub/sub closed", channel)
	}
	set, ok := h.listeners[channel]
	if !ok {
		set = map[*listener]struct{}{}
		h.listeners[channel] = set
	}
	set[l] = struct{}{}
	first := !ok
	id := h.groupOf(channel)
	g := h.groups[id]
	h.mu.Unlock()
	if first {
		if err := h.subscribeFirst(ctx, id, g, channel); err != nil {
			h.mu.Lock()
			delete(h.listeners, channel)
			h.mu.Unlock()
			return nil, nil, fmt.Errorf("subscribe to %s: %w", channel, err)
		}
	}
	return l, func() { h.unlisten(channel, l) }, nil
}

// subscribeFirst subscribes channel on its group's connection, opening the
// connection when the group has none. Called with subMu held.
func (h *hub) subscribeFirst(ctx context.Context, id int, g *psGroup, channel string) error {
	if g == nil {
		ps, err := h.newPubSub(ctx, channel)
		if err != nil {
			return err
		}
		g = &psGroup{ps: ps, channels: map[string]struct{}{channel: {}}}
		h.mu.Lock()
		h.groups[id] = g
		h.mu.Unlock()
		h.wg.Add(1)
		go h.run(id, g)
		return nil
	}
	h.mu.Lock()
	g.channels[channel] = struct{}{}
	h.mu.Unlock()
	if err := h.subscribe(ctx, g.ps, channel); err != nil {
		h.mu.Lock()
		delete(g.channels, channel)
		h.mu.Unlock()
		return err
	}
	return nil
}

func (h *hub) unlisten(channel string, l *listener) {
	h.subMu.Lock()
	defer h.subMu.Unlock()
	h.mu.Lock()
	set := h.listeners[channel]
	delete(set, l)
	last := len(set) == 0
	if last {
		delete(h.listeners, channel)
	}
	id := h.groupOf(channel)
	g := h.groups[id]
	var closeGroup bool
	if last && g != nil {
		delete(g.channels, channel)
		// A cluster slot's connection is closed with its last channel;
		// the standalone connection stays for the life of the hub.
		if h.sharded && len(g.channels) == 0 {
			delete(h.groups, id)
			closeGroup = true
		}
	}
	h.mu.Unlock()
	if !last || g == nil {
		return
	}
	if closeGroup {
		if err := g.ps.Close(); err != nil {
			h.logger.Debug("closing pub/sub connection failed", "channel", channel, "err", err)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := h.unsubscribe(ctx, g.ps, channel); err != nil {
		h.logger.Debug("unsubscribe failed", "channel", channel, "err", err)
	}
}

func (h *hub) close() error {
	h.subMu.Lock()
	h.mu.Lock()
	h.closed = true
	groups := h.groups
	h.groups = map[int]*psGroup{}
	h.mu.Unlock()
	h.subMu.Unlock()
	var err error
	for _, g := range groups {
		if cerr := g.ps.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	h.wg.Wait()
	return err
}
