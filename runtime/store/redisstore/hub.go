package redisstore

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// hub multiplexes every pub/sub channel this process listens to over one
// Redis connection, so a replica holds one pub/sub connection no matter how
// many documents it serves.
type hub struct {
	ps     *redis.PubSub
	logger *slog.Logger

	// subMu serialises (un)subscribe decisions with the commands that
	// carry them out, so a listen racing the last unlisten of a channel
	// cannot end up registered on an unsubscribed channel.
	subMu     sync.Mutex
	mu        sync.Mutex
	listeners map[string]map[*listener]struct{}

	done chan struct{}
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

func newHub(ctx context.Context, rdb redis.UniversalClient, logger *slog.Logger) *hub {
	h := &hub{
		ps:        rdb.Subscribe(ctx),
		logger:    logger,
		listeners: map[string]map[*listener]struct{}{},
		done:      make(chan struct{}),
	}
	go h.run()
	return h
}

func (h *hub) run() {
	defer close(h.done)
	ch := h.ps.ChannelWithSubscriptions(
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
			if m.Kind == "subscribe" {
				h.dispatch(m.Channel, func(l *listener) {
					select {
					case l.resync <- struct{}{}:
					default:
					}
				})
			}
		}
	}
}

func (h *hub) dispatch(channel string, f func(*listener)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for l := range h.listeners[channel] {
		f(l)
	}
}

// listen registers a listener on channel, subscribing the connection on
// first use. The returned function unregisters it.
func (h *hub) listen(ctx context.Context, channel string) (*listener, func(), error) {
	l := &listener{msgs: make(chan string, 256), resync: make(chan struct{}, 1)}
	h.subMu.Lock()
	defer h.subMu.Unlock()
	h.mu.Lock()
	set, ok := h.listeners[channel]
	if !ok {
		set = map[*listener]struct{}{}
		h.listeners[channel] = set
	}
	set[l] = struct{}{}
	first := !ok
	h.mu.Unlock()
	if first {
		if err := h.ps.Subscribe(ctx, channel); err != nil {
			h.mu.Lock()
			delete(h.listeners, channel)
			h.mu.Unlock()
			return nil, nil, fmt.Errorf("subscribe to %s: %w", channel, err)
		}
	}
	return l, func() { h.unlisten(channel, l) }, nil
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
	h.mu.Unlock()
	if last {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := h.ps.Unsubscribe(ctx, channel); err != nil {
			h.logger.Debug("unsubscribe failed", "channel", channel, "err", err)
		}
	}
}

func (h *hub) close() error {
	err := h.ps.Close()
	<-h.done
	return err
}
