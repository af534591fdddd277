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

// Presence implements store.Presence on Redis: per document a hash of
// entries and a sorted set of their expiry times (Redis 7.0 has no
// per-field TTL), with events on a pub/sub channel. Expiry is judged by
// the Redis server clock inside the scripts. Callers refresh live entries
// by calling Update again (heartbeat) well within the TTL; entries of a
// process that died are swept, and their departure announced exactly once,
// by whichever process sweeps first.
type Presence struct {
	c *core

	stop context.CancelFunc
	wg   sync.WaitGroup
	ctx  context.Context
}

var _ store.Presence = (*Presence)(nil)

func newPresence(c *core) *Presence {
	ctx, cancel := context.WithCancel(context.Background())
	return &Presence{c: c, ctx: ctx, stop: cancel}
}

func (p *Presence) close() {
	p.stop()
	p.wg.Wait()
}

// presenceEvent is the pub/sub payload.
type presenceEvent struct {
	Left  bool                `json:"left"`
	Entry store.PresenceEntry `json:"entry"`
}

// Update inserts or refreshes an entry for one TTL and announces it.
func (p *Presence) Update(ctx context.Context, e store.PresenceEntry) error {
	raw, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode presence of %q in doc %q: %w", e.Conn, e.Doc, err)
	}
	ev, err := json.Marshal(presenceEvent{Entry: e})
	if err != nil {
		return fmt.Errorf("encode presence event: %w", err)
	}
	_, err = call(p.c.cb, "update presence in doc "+strconv.Quote(e.Doc), func() (any, error) {
		return p.c.sc.presUpdate.Run(ctx, p.c.rdb, []string{presenceKey(e.Doc), presenceExpKey(e.Doc)},
			e.Conn, string(raw), p.c.opts.PresenceTTL.Milliseconds(), presenceChannel(e.Doc), string(ev), p.c.hub.publishCommand()).Result()
	})
	return err
}

// Refresh keeps live entries of doc alive for another TTL in one script
// call, announcing nothing; it returns the conns without a live entry.
func (p *Presence) Refresh(ctx context.Context, doc string, conns []string) ([]string, error) {
	if len(conns) == 0 {
		return nil, nil
	}
	args := make([]any, 0, len(conns)+1)
	args = append(args, p.c.opts.PresenceTTL.Milliseconds())
	for _, c := range conns {
		args = append(args, c)
	}
	return call(p.c.cb, "refresh presence in doc "+strconv.Quote(doc), func() ([]string, error) {
		return p.c.sc.presRefresh.Run(ctx, p.c.rdb, []string{presenceKey(doc), presenceExpKey(doc)}, args...).StringSlice()
	})
}

// Remove deletes a connection's entry and announces the departure.
func (p *Presence) Remove(ctx context.Context, doc, conn string) error {
	_, err := call(p.c.cb, "remove presence from doc "+strconv.Quote(doc), func() (any, error) {
		return p.c.sc.presRemove.Run(ctx, p.c.rdb, []string{presenceKey(doc), presenceExpKey(doc)},
			conn, presenceChannel(doc), p.c.hub.publishCommand()).Result()
	})
	return err
}

// List sweeps expired entries of doc and returns the live ones.
func (p *Presence) List(ctx context.Context, doc string) ([]store.PresenceEntry, error) {
	res, err := call(p.c.cb, "list presence of doc "+strconv.Quote(doc), func() ([]string, error) {
		return p.c.sc.presSweep.Run(ctx, p.c.rdb, []string{presenceKey(doc), presenceExpKey(doc)},
			presenceChannel(doc), p.c.hub.publishCommand()).StringSlice()
	})
	if err != nil {
		return nil, err
	}
	out := make([]store.PresenceEntry, 0, len(res))
	for _, raw := range res {
		var e store.PresenceEntry
		if err := json.Unmarshal([]byte(raw), &e); err != nil {
			p.c.logger.Warn("dropping undecodable presence entry", "doc", doc, "err", err)
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// Subscribe delivers presence events of doc from every process. While
// subscribed, this process also sweeps doc every quarter TTL, so departures
// of dead processes are announced even if nobody calls List.
func (p *Presence) Subscribe(ctx context.Context, doc string) (<-chan store.PresenceEvent, error) {
	lis, unlisten, err := p.c.hub.listen(ctx, presenceChannel(doc))
	if err != nil {
		return nil, fmt.Errorf("subscribe to presence of doc %q: %w: %w", doc, store.ErrUnavailable, err)
	}
	out := make(chan store.PresenceEvent, 64)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(out)
		defer unlisten()
		sweep := time.NewTicker(max(p.c.opts.PresenceTTL/4, 10*time.Millisecond))
		defer sweep.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-p.ctx.Done():
				return
			case <-sweep.C:
				if _, err := p.List(ctx, doc); err != nil && ctx.Err() == nil {
					p.c.logger.Debug("presence sweep failed", "doc", doc, "err", err)
				}
			case payload := <-lis.msgs:
				var ev presenceEvent
				if err := json.Unmarshal([]byte(payload), &ev); err != nil {
					p.c.logger.Warn("dropping undecodable presence event", "doc", doc, "err", err)
					continue
				}
				select {
				case out <- store.PresenceEvent{Entry: ev.Entry, Left: ev.Left}:
				case <-ctx.Done():
					return
				}
			case <-lis.resync:
				// Presence events are state, not history. Heartbeats
				// (Refresh) announce nothing, so an update missed here
				// shows once its connection next moves its cursor.
			}
		}
	}()
	return out, nil
}
