package memory

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/tandem-dev/tandem/runtime/store"
)

// PresenceOptions configures a Presence.
type PresenceOptions struct {
	// TTL is how long an entry lives without an Update (default 30s).
	TTL time.Duration
	// Now is the clock (default time.Now); tests drive expiry with their own.
	Now func() time.Time
	// SweepInterval is how often expired entries are removed and announced
	// in the background; 0 means TTL/4, negative disables the background
	// sweeper (call Sweep yourself).
	SweepInterval time.Duration
}

// Presence is an in-process store.Presence.
type Presence struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	entries map[string]map[string]presenceItem // doc -> conn -> item
	subs    map[string]map[*presenceSub]struct{}

	stop     chan struct{}
	stopOnce sync.Once
}

type presenceItem struct {
	entry   store.PresenceEntry
	expires time.Time
}

// presenceSub hands events to one subscriber. Publishing sends to its
// small channel without blocking; only when that is full do events queue,
// and a delivering goroutine runs until the queue is empty again, so a
// quiet document holds neither a buffer nor a goroutine. Presence is
// advisory and refreshed constantly, so a subscriber that falls
// presenceBuffer events behind loses events rather than blocking the
// writer.
type presenceSub struct {
	ch  chan store.PresenceEvent
	ctx context.Context
	doc string

	// Guarded by Presence.mu.
	queue      []store.PresenceEvent
	delivering bool        // a goroutine sends the queue to ch
	ended      bool        // ch is closed
	stopAfter  func() bool // unregisters the context's end
}

// presenceChanBuffer is how many events a subscriber's channel holds
// before events queue for a delivering goroutine.
const presenceChanBuffer = 4

// push queues ev for s; p.mu must be held.
func (p *Presence) push(s *presenceSub, ev store.PresenceEvent) {
	if s.ended {
		return
	}
	if s.delivering {
		if len(s.queue) < presenceBuffer {
			s.queue = append(s.queue, ev)
		}
		return
	}
	select {
	case s.ch <- ev:
	default:
		s.queue = append(s.queue, ev)
		s.delivering = true
		go p.deliver(s)
	}
}

// deliver moves queued events to the subscriber until the queue is empty
// or its context ends.
func (p *Presence) deliver(s *presenceSub) {
	for {
		p.mu.Lock()
		if s.ctx.Err() != nil {
			p.endLocked(s)
			p.mu.Unlock()
			return
		}
		if len(s.queue) == 0 {
			s.queue = nil // let the grown array go
			s.delivering = false
			p.mu.Unlock()
			return
		}
		ev := s.queue[0]
		s.queue = s.queue[1:]
		p.mu.Unlock()
		select {
		case s.ch <- ev:
		case <-s.ctx.Done():
		}
	}
}

// endLocked closes s's channel and unregisters it; p.mu must be held and
// no goroutine may be delivering to it.
func (p *Presence) endLocked(s *presenceSub) {
	if s.ended {
		return
	}
	s.ended = true
	s.queue = nil
	close(s.ch)
	if s.stopAfter != nil {
		s.stopAfter()
	}
	delete(p.subs[s.doc], s)
	if len(p.subs[s.doc]) == 0 {
		delete(p.subs, s.doc)
	}
}

const presenceBuffer = 1024

// NewPresence returns a running Presence; Close stops its sweeper.
func NewPresence(opts PresenceOptions) *Presence {
	if opts.TTL <= 0 {
		opts.TTL = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	p := &Presence{
		ttl:     opts.TTL,
		now:     opts.Now,
		entries: map[string]map[string]presenceItem{},
		subs:    map[string]map[*presenceSub]struct{}{},
		stop:    make(chan struct{}),
	}
	interval := opts.SweepInterval
	if interval == 0 {
		interval = opts.TTL / 4
	}
	if interval > 0 {
		go func() {
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				select {
				case <-p.stop:
					return
				case <-t.C:
					p.Sweep()
				}
			}
		}()
	}
	return p
}

// Close stops the background sweeper.
func (p *Presence) Close() {
	p.stopOnce.Do(func() { close(p.stop) })
}

// Update implements store.Presence.
func (p *Presence) Update(ctx context.Context, e store.PresenceEntry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if e.Cursor != nil {
		c := *e.Cursor
		e.Cursor = &c // never share the caller's pointer
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.entries[e.Doc]
	if m == nil {
		m = map[string]presenceItem{}
		p.entries[e.Doc] = m
	}
	m[e.Conn] = presenceItem{entry: e, expires: p.now().Add(p.ttl)}
	p.publish(e.Doc, store.PresenceEvent{Entry: e})
	return nil
}

// Refresh implements store.Presence.
func (p *Presence) Refresh(ctx context.Context, doc string, conns []string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.entries[doc]
	expires := p.now().Add(p.ttl)
	var missing []string
	for _, conn := range conns {
		it, ok := m[conn]
		if !ok || !p.now().Before(it.expires) {
			missing = append(missing, conn)
			continue
		}
		it.expires = expires
		m[conn] = it
	}
	return missing, nil
}

// Remove implements store.Presence.
func (p *Presence) Remove(ctx context.Context, doc, conn string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.removeLocked(doc, conn)
	return nil
}

func (p *Presence) removeLocked(doc, conn string) {
	m := p.entries[doc]
	it, ok := m[conn]
	if !ok {
		return
	}
	delete(m, conn)
	if len(m) == 0 {
		delete(p.entries, doc)
	}
	p.publish(doc, store.PresenceEvent{Entry: it.entry, Left: true})
}

// List implements store.Presence; expired entries are never listed.
func (p *Presence) List(ctx context.Context, doc string) ([]store.PresenceEntry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sweepLocked()
	out := make([]store.PresenceEntry, 0, len(p.entries[doc]))
	for _, it := range p.entries[doc] {
		out = append(out, it.entry)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Conn < out[j].Conn })
	return out, nil
}

// Subscribe implements store.Presence.
func (p *Presence) Subscribe(ctx context.Context, doc string) (<-chan store.PresenceEvent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := &presenceSub{ch: make(chan store.PresenceEvent, presenceChanBuffer), ctx: ctx, doc: doc}
	p.mu.Lock()
	if p.subs[doc] == nil {
		p.subs[doc] = map[*presenceSub]struct{}{}
	}
	p.subs[doc][s] = struct{}{}
	p.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if !s.delivering {
			p.endLocked(s) // a delivering goroutine sees ctx itself
		}
	})
	p.mu.Lock()
	s.stopAfter = stop
	if s.ended {
		stop()
	}
	p.mu.Unlock()
	return s.ch, nil
}

// Sweep removes the entries whose TTL has passed and announces their
// departure.
func (p *Presence) Sweep() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sweepLocked()
}

func (p *Presence) sweepLocked() {
	now := p.now()
	for doc, m := range p.entries {
		for conn, it := range m {
			if !now.Before(it.expires) {
				p.removeLocked(doc, conn)
			}
		}
	}
}

// publish sends ev to doc's subscribers without blocking; p.mu must be held
// (which also keeps a subscriber's channel open while we send).
func (p *Presence) publish(doc string, ev store.PresenceEvent) {
	for s := range p.subs[doc] {
		p.push(s, ev)
	}
}
