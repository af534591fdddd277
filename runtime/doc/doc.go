// Package doc serves documents: a Manager holds the loaded ones and each is
// owned by a single goroutine (an actor) that keeps its text, head revision,
// a window of recent entries and its subscribers. Everything that changes a
// document goes through that goroutine, so there are no locks around the
// text and every subscriber sees entries strictly in revision order.
//
// submit.go holds the whole path of a submitted operation.
package doc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tandem-dev/tandem/runtime/metrics"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/protocol"
	"github.com/tandem-dev/tandem/runtime/store"
)

// Options configures a Manager.
type Options struct {
	Log      store.Log
	Durable  store.Durable  // may be nil: then the log must hold all history
	Presence store.Presence // may be nil: no presence
	Metrics  *metrics.Metrics
	Logger   *slog.Logger

	// MaxDocBytes refuses operations that would make the text larger.
	MaxDocBytes int
	// Window is how many recent entries each document keeps in memory for
	// transforming late submissions and resuming clients (default 1000).
	// A client further behind than this on reconnect gets the full text.
	Window int
	// IdleTimeout evicts a document with no subscribers (default 1m).
	IdleTimeout time.Duration
	// MaxRetries bounds the append attempts of one batch under contention
	// before the submitters get "unavailable" (default 10).
	MaxRetries int
	// PresenceRefresh is how often local presence entries are refreshed so
	// that they do not expire (default 10s; keep it below the TTL).
	PresenceRefresh time.Duration
	// MaxBatch bounds how many queued submissions are appended at once.
	MaxBatch int

	// Router, in the distributed mode, lets one replica append a busy
	// document's operations: the others forward their submissions to the
	// holder of the document's owner lease (route.go). nil: this process
	// appends everything itself.
	Router store.Router
	// ForwardTimeout is how long a forwarded submission may go without its
	// entry or a reply before this replica appends it itself (default 2s).
	ForwardTimeout time.Duration
}

// Manager owns the loaded documents.
type Manager struct {
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	docs   map[string]*actor
	closed bool
	wg     sync.WaitGroup
	quit   chan struct{} // closed by Close: stops the route loop
}

// NewManager returns a Manager; Close it to stop every document.
func NewManager(opts Options) *Manager {
	if opts.Window <= 0 {
		opts.Window = 1000
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = time.Minute
	}
	if opts.MaxRetries <= 0 {
		opts.MaxRetries = 10
	}
	if opts.PresenceRefresh <= 0 {
		opts.PresenceRefresh = 10 * time.Second
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 64
	}
	if opts.ForwardTimeout <= 0 {
		opts.ForwardTimeout = 2 * time.Second
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	m := &Manager{opts: opts, log: opts.Logger, docs: map[string]*actor{}, quit: make(chan struct{})}
	if opts.Router != nil {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.routeLoop(opts.Router.Inbox())
		}()
	}
	return m
}

// ErrClosed is returned once the manager is shutting down.
var ErrClosed = errors.New("doc: manager closed")

// errGone means the actor exited before handling a request; the manager
// retries with a fresh actor.
var errGone = errors.New("doc: document unloaded")

// Problem is an error that is reported to a client as-is.
type Problem = protocol.Problem

func problemf(code string, seq *int64, format string, args ...any) *Problem {
	return &Problem{Code: code, Message: fmt.Sprintf(format, args...), Seq: seq}
}

// actorFor returns the running actor of id, starting one if needed.
func (m *Manager) actorFor(id string) (*actor, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	if a, ok := m.docs[id]; ok {
		return a, nil
	}
	a := newActor(m, id)
	m.docs[id] = a
	m.opts.Metrics.DocumentsLoaded.Inc()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		a.run()
	}()
	return a, nil
}

// forget removes a from the map if it is still the registered actor.
func (m *Manager) forget(a *actor) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.docs[a.id] == a {
		delete(m.docs, a.id)
		m.opts.Metrics.DocumentsLoaded.Dec()
	}
}

// ask sends a request built around a reply channel to the document's actor
// and waits for the answer, starting a fresh actor when the previous one
// was unloaded in between.
func ask[T any](ctx context.Context, m *Manager, id string, build func(reply chan<- result[T]) any) (T, error) {
	var zero T
	for range 3 {
		a, err := m.actorFor(id)
		if err != nil {
			return zero, err
		}
		reply := make(chan result[T], 1)
		if err := a.send(ctx, build(reply)); errors.Is(err, errGone) {
			continue
		} else if err != nil {
			return zero, err
		}
		select {
		case r := <-reply:
			return r.v, r.err
		case <-a.done:
			select {
			case r := <-reply:
				return r.v, r.err
			default:
				continue
			}
		case <-ctx.Done():
			return zero, ctx.Err()
		}
	}
	return zero, fmt.Errorf("document %q keeps unloading: %w", id, store.ErrUnavailable)
}

type result[T any] struct {
	v   T
	err error
}

// Member is a connection joining a document.
type Member struct {
	Conn   string // unique connection id
	Client string // the client's stable id: with User, its committed entries are acked to it
	User   store.User
	Perm   string // "read" or "write", echoed in the welcome
	// AuthTTLMs, echoed in the welcome, is how long the member's token is
	// still accepted, in milliseconds (0: it does not expire).
	AuthTTLMs int64
	// Limits, echoed in the welcome, are the connection's message and
	// operation limits; the document fills in MaxDocBytes.
	Limits protocol.Limits
	// Send queues a message for the connection without blocking; it returns
	// false when the connection cannot keep up, and the document then drops
	// the member (the connection closes itself). The same frame goes to
	// every member it concerns, so it is encoded once.
	Send func(f *protocol.Frame) bool
	// Flush, optional, ends a burst: the connection may hold the frames
	// given to Send until Flush and write them together. The document
	// flushes every member it sent to before it waits for more work, so a
	// committed batch reaches each connection in one write. It must not
	// block.
	Flush func()
	// Kick, optional, ends the connection when the document drops the
	// member for its own reasons (reloading, shutting down) so the client
	// reconnects; it must not block.
	Kick func(reason string)
	// Deleted, optional, ends the connection because the document was
	// deleted (the client must not reconnect to it); without it Kick is
	// called. It must not block.
	Deleted func()

	// joined is the head revision the member's welcome was made at: every
	// entry after it was sent to the member as it committed.
	joined int64
	// unflushed: the member was sent frames since the last flush.
	unflushed bool
	// presenceSeq numbers the member's presence updates (PresenceEntry.Seq);
	// presence is the last one written, refreshed until the next.
	presenceSeq int64
	presence    store.PresenceEntry
}

// author identifies who wrote an operation: the authenticated user and the
// client id together. Client ids are public (every broadcast operation and
// /ops carries them), so a client id alone must never decide whose
// operation an entry is: another user could connect with the same id and
// receive the acks, swallow the operations or poison the seq of the
// client it copies. Dedupe, seq order and ack routing all go by author.
type author struct {
	user, client string
}

func (m *Member) author() author { return author{user: m.User.ID, client: m.Client} }

func entryAuthor(e store.Entry) author { return author{user: e.User, client: e.Client} }

// committedSeq is an author's highest committed seq and its revision.
type committedSeq struct {
	seq, rev int64
}

// Session is a member's handle on a joined document.
type Session struct {
	a      *actor
	member *Member
}

// Join loads the document if needed and subscribes member. The first
// message sent to it is the welcome: with rev set and at most Window
// entries behind, it carries the missed entries; otherwise the full text.
// Everything after the welcome is in revision order.
func (m *Manager) Join(ctx context.Context, id string, member Member, rev *int64) (*Session, error) {
	mem := &member
	a, err := ask(ctx, m, id, func(reply chan<- result[*actor]) any {
		return joinReq{member: mem, rev: rev, reply: reply}
	})
	if err != nil {
		return nil, err
	}
	return &Session{a: a, member: mem}, nil
}

// Submit queues operation op, made on revision rev, as the member's
// operation seq. The outcome (an ack, or an error carrying seq) arrives
// through the member's Send, in order with the document's entries. Submit
// returns an error only when the document cannot take the request.
func (s *Session) Submit(ctx context.Context, seq, rev int64, op ot.Op) error {
	return s.a.send(ctx, submitReq{member: s.member, seq: seq, rev: rev, op: op, received: time.Now()})
}

// Leave unsubscribes the member and removes its presence.
func (s *Session) Leave(ctx context.Context) {
	_ = s.a.send(ctx, leaveReq{conn: s.member.Conn})
}

// SetCursor updates the member's cursor; rev is the revision the cursor
// refers to (nil: the latest revision sent to this member).
func (s *Session) SetCursor(ctx context.Context, c *store.Cursor, rev *int64) error {
	return s.a.send(ctx, cursorReq{conn: s.member.Conn, cursor: c, rev: rev})
}

// Snapshot returns the current text and revision of a document.
func (m *Manager) Snapshot(ctx context.Context, id string) (store.Snapshot, error) {
	return ask(ctx, m, id, func(reply chan<- result[store.Snapshot]) any {
		return snapshotReq{reply: reply}
	})
}

// EncodedText returns the current text and revision of a document, the
// text encoded as a JSON string that is shared (never modify it): serving
// a large document to many clients holds one encoding, not one each.
func (m *Manager) EncodedText(ctx context.Context, id string) (*protocol.EncodedText, error) {
	if snap, ok, err := m.durableOnly(ctx, id); err != nil {
		return nil, err
	} else if ok {
		return protocol.EncodeText(snap.Rev, snap.Text)
	}
	return ask(ctx, m, id, func(reply chan<- result[*protocol.EncodedText]) any {
		return encodedReq{reply: reply}
	})
}

// History returns committed entries with from < Rev <= to (to < 0: all),
// from the log or, for older ones, the durable store. A from below where
// compaction cut the history is store.ErrCompacted, even when the log's
// tail still holds those operations.
func (m *Manager) History(ctx context.Context, id string, from, to int64) ([]store.Entry, error) {
	if a, ok := m.opts.Durable.(store.Archive); ok {
		// The log's tail of recent operations may reach below where
		// compaction cut the history; what is older than the cut is gone
		// for every reader, as it is for TextAt.
		start, err := a.HistoryStart(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("read %q history: %w", id, err)
		}
		if from < start {
			return nil, fmt.Errorf("read %q history after %d (kept from %d): %w", id, from, start+1, store.ErrCompacted)
		}
	}
	if p, ok := m.opts.Log.(store.Peeker); ok && m.opts.Durable != nil && !m.loaded(id) {
		// A document the log holds nothing of is all in the durable store.
		if _, known, err := p.Peek(ctx, id); err != nil {
			return nil, fmt.Errorf("read %q history: %w", id, err)
		} else if !known {
			entries, err := m.opts.Durable.Ops(ctx, id, from, to)
			if err == nil && len(entries) > 0 && entries[0].Rev > from+1 {
				return nil, fmt.Errorf("read %q history after %d (kept from %d): %w", id, from, entries[0].Rev, store.ErrCompacted)
			}
			return entries, err
		}
	}
	return readRange(ctx, m.opts.Log, m.opts.Durable, id, from, to)
}

// Loaded reports how many documents are in memory.
func (m *Manager) Loaded() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.docs)
}

// Close stops every document: members are dropped (the server closes their
// connections first) and presence entries removed. It does not close the
// stores.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	if !m.closed {
		close(m.quit)
	}
	m.closed = true
	actors := make([]*actor, 0, len(m.docs))
	for _, a := range m.docs {
		actors = append(actors, a)
	}
	m.mu.Unlock()
	for _, a := range actors {
		a.stop()
	}
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for documents to stop: %w", ctx.Err())
	}
}

// readRange reads committed entries from the log, falling back to the
// durable store for the ones the log no longer holds.
func readRange(ctx context.Context, l store.Log, d store.Durable, id string, from, to int64) ([]store.Entry, error) {
	entries, err := l.Read(ctx, id, from, to)
	if err == nil {
		return entries, nil
	}
	if !errors.Is(err, store.ErrTrimmed) || d == nil {
		return nil, fmt.Errorf("read %q revisions after %d: %w", id, from, err)
	}
	older, err := d.Ops(ctx, id, from, to)
	if err != nil {
		return nil, fmt.Errorf("read %q history after %d: %w", id, from, err)
	}
	// The log trims only what the durable store holds, so a durable store
	// that starts later has compacted the rest away (retention).
	if len(older) > 0 && older[0].Rev > from+1 {
		return nil, fmt.Errorf("read %q history after %d (kept from %d): %w", id, from, older[0].Rev, store.ErrCompacted)
	}
	// The durable store may lag the log (unflushed entries); the log has
	// those, so take whatever the durable store lacks from the log.
	last := from
	if n := len(older); n > 0 {
		last = older[n-1].Rev
	}
	if to < 0 || last < to {
		newer, err := l.Read(ctx, id, last, to)
		if errors.Is(err, store.ErrTrimmed) && len(older) == 0 {
			return nil, fmt.Errorf("read %q revisions after %d: %w (%w)", id, last, err, store.ErrCompacted)
		}
		if err != nil {
			return nil, fmt.Errorf("read %q revisions after %d: %w", id, last, err)
		}
		older = append(older, newer...)
	}
	for i, e := range older {
		if e.Rev != from+int64(i)+1 {
			return nil, fmt.Errorf("history of %q has a gap at revision %d: %w", id, from+int64(i)+1, store.ErrUnavailable)
		}
	}
	return older, nil
}
