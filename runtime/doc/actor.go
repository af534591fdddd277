package doc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/tandem-dev/tandem/runtime/metrics"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/protocol"
	"github.com/tandem-dev/tandem/runtime/rope"
	"github.com/tandem-dev/tandem/runtime/store"
)

// Requests handled by the actor.
type (
	joinReq struct {
		member *Member
		rev    *int64
		reply  chan<- result[*actor]
	}
	submitReq struct {
		member   *Member
		seq, rev int64
		op       ot.Op
		received time.Time
		// origin is the replica that forwarded the submission to this one
		// as the document's owner; member is then a proxy (route.go).
		origin string
		// here: taken back after forwarding; append it here, never forward.
		here bool
	}
	leaveReq struct {
		conn string
	}
	cursorReq struct {
		conn   string
		cursor *store.Cursor
		rev    *int64
	}
	snapshotReq struct {
		reply chan<- result[store.Snapshot]
	}
	encodedReq struct {
		reply chan<- result[*protocol.EncodedText]
	}
	// deletedReq: the document was deleted; close its connections.
	deletedReq struct {
		reply chan<- result[struct{}]
	}
)

// storeTimeout bounds every single call to a backing store, so a stuck
// backend turns into an "unavailable" error instead of a frozen document.
const storeTimeout = 10 * time.Second

type actor struct {
	m    *Manager
	id   string
	opts *Options
	log  *slog.Logger

	inbox    chan any
	done     chan struct{} // closed when run returns
	quit     chan struct{} // closed by stop
	quitOnce sync.Once

	// Everything below is owned by the run goroutine.
	ctx     context.Context
	text    *rope.Rope
	head    int64 // revision of text
	window  []store.Entry
	lastSeq map[author]committedSeq // highest committed seq per author
	members map[string]*Member
	// unflushed are the members sent frames since the last flush.
	unflushed []*Member
	present   map[string]store.PresenceEntry // every known presence entry, cursors at head
	idle      time.Time                      // since when there are no members
	// encoded is the text encoded for sending at revision encoded.Rev,
	// shared by every welcome and GET until the next commit.
	encoded *protocol.EncodedText
	// resetErr is set when a read found the log reset (store.ErrReset).
	resetErr error

	// Owner lease (route.go; only with a Router).
	owner     string    // holder as last seen
	ownerSeen time.Time // when
	selfUntil time.Time // after a take-back: append here until then
	forwarded map[clientSeq]*forwardedReq
}

func newActor(m *Manager, id string) *actor {
	return &actor{
		m: m, id: id, opts: &m.opts,
		log:       m.log.With("doc", id),
		inbox:     make(chan any, 256),
		done:      make(chan struct{}),
		quit:      make(chan struct{}),
		lastSeq:   map[author]committedSeq{},
		members:   map[string]*Member{},
		present:   map[string]store.PresenceEntry{},
		forwarded: map[clientSeq]*forwardedReq{},
	}
}

// send queues a request; errGone when the actor has exited.
func (a *actor) send(ctx context.Context, req any) error {
	select {
	case <-a.done:
		return errGone
	default:
	}
	select {
	case a.inbox <- req:
		return nil
	case <-a.done:
		return errGone
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (a *actor) stop() { a.quitOnce.Do(func() { close(a.quit) }) }

func (a *actor) storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(a.ctx, storeTimeout)
}

func (a *actor) run() {
	// Unregister before signalling done, so a caller that sees done and
	// retries gets a fresh actor rather than this one again.
	defer close(a.done)
	defer a.m.forget(a)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a.ctx = ctx
	defer a.releaseLease()
	defer a.flush() // what failPending and shutdown answered

	if err := a.load(); err != nil {
		a.log.Error("load document", "err", err)
		a.failPending(fmt.Errorf("load document %q: %w", a.id, errors.Join(err, store.ErrUnavailable)))
		return
	}

	subCtx, subCancel := context.WithCancel(ctx)
	defer subCancel()
	logSub, err := a.subscribeLog(subCtx)
	if err != nil {
		a.log.Error("subscribe to log", "err", err)
		a.failPending(err)
		return
	}
	var presence <-chan store.PresenceEvent
	if a.opts.Presence != nil {
		if presence, err = a.subscribePresence(subCtx); err != nil {
			a.log.Error("subscribe to presence", "err", err)
			a.failPending(err)
			return
		}
	}
	a.idle = time.Now()
	tick := time.NewTicker(min(a.opts.PresenceRefresh, a.opts.IdleTimeout/2+time.Millisecond))
	defer tick.Stop()
	var takeBack <-chan time.Time
	if a.opts.Router != nil {
		t := time.NewTicker(a.opts.ForwardTimeout / 4)
		defer t.Stop()
		takeBack = t.C
	}
	var resubscribe <-chan time.Time
	var next any // a request read while gathering a batch, handled next
	for {
		if a.broken() {
			a.failPending(fmt.Errorf("document %q reloading: %w", a.id, store.ErrUnavailable))
			return
		}
		// Everything the last request produced goes out now, one write per
		// connection.
		a.flush()
		var req any
		if next != nil {
			req, next = next, nil
		} else {
			var logC <-chan store.Entry
			if logSub != nil {
				logC = logSub.C()
			}
			select {
			case <-a.quit:
				a.shutdown()
				return
			case req = <-a.inbox:
			case e, ok := <-logC:
				if !ok {
					if err := logSub.Err(); errors.Is(err, store.ErrDeleted) {
						a.deleted()
						continue
					}
					if err := logSub.Err(); errors.Is(err, store.ErrReset) {
						a.unload("log reset", err)
						continue
					}
					a.log.Warn("log subscription ended; resubscribing", "err", logSub.Err())
					logSub = nil
					resubscribe = time.After(500 * time.Millisecond)
					continue
				}
				a.remote(e)
				// Apply what else has arrived before flushing, so a run of
				// entries reaches each member in one write.
				for more := true; more && !a.broken(); {
					select {
					case e, ok := <-logC:
						if !ok {
							more = false // seen again by the select above
							break
						}
						a.remote(e)
					default:
						more = false
					}
				}
				continue
			case <-resubscribe:
				resubscribe = nil
				// Catch up first: entries committed while unsubscribed.
				a.catchUp()
				if logSub, err = a.subscribeLog(subCtx); errors.Is(err, store.ErrReset) {
					a.unload("log reset", err)
				} else if err != nil {
					a.log.Warn("resubscribe to log", "err", err)
					resubscribe = time.After(2 * time.Second)
				}
				continue
			case ev, ok := <-presence:
				if !ok {
					presence = nil
					continue
				}
				a.presenceEvent(ev)
				continue
			case now := <-takeBack:
				if len(a.forwarded) > 0 {
					a.takeBack(now)
				}
				continue
			case <-tick.C:
				if len(a.members) == 0 && time.Since(a.idle) >= a.opts.IdleTimeout {
					a.log.Debug("unloading idle document")
					return
				}
				a.refreshPresence()
				continue
			}
		}
		switch r := req.(type) {
		case submitReq:
			batch := []submitReq{r}
		gather:
			for len(batch) < a.opts.MaxBatch {
				select {
				case more := <-a.inbox:
					if s, ok := more.(submitReq); ok {
						batch = append(batch, s)
						continue
					}
					next = more
					break gather
				default:
					break gather
				}
			}
			a.submit(batch)
		case joinReq:
			a.join(r.member, r.rev)
			r.reply <- result[*actor]{v: a}
		case leaveReq:
			a.drop(r.conn)
		case cursorReq:
			a.setCursor(r)
		case snapshotReq:
			r.reply <- result[store.Snapshot]{v: store.Snapshot{Doc: a.id, Rev: a.head, Text: a.text.String()}}
		case encodedReq:
			t, err := a.encodedText()
			r.reply <- result[*protocol.EncodedText]{v: t, err: err}
		case replyReq:
			a.reply(r.r)
		case deletedReq:
			a.deleted()
			r.reply <- result[struct{}]{}
		}
	}
}

// failPending answers whatever is already queued when the document cannot
// be served; later callers see done and retry with a new actor.
func (a *actor) failPending(err error) {
	for {
		select {
		case req := <-a.inbox:
			switch r := req.(type) {
			case joinReq:
				r.reply <- result[*actor]{err: err}
			case snapshotReq:
				r.reply <- result[store.Snapshot]{err: err}
			case encodedReq:
				r.reply <- result[*protocol.EncodedText]{err: err}
			case deletedReq:
				r.reply <- result[struct{}]{}
			case submitReq:
				a.sendProblem(r.member, problemf(protocol.CodeUnavailable, &r.seq, "document unavailable, retry"))
			}
		default:
			return
		}
	}
}

func (a *actor) load() error {
	ctx, cancel := a.storeCtx()
	defer cancel()
	snap := store.Snapshot{Doc: a.id}
	if a.opts.Durable != nil {
		var err error
		if snap, err = a.opts.Durable.Load(ctx, a.id); err != nil {
			return fmt.Errorf("load snapshot: %w", err)
		}
	}
	head, err := a.opts.Log.Head(ctx, a.id)
	if err != nil {
		return fmt.Errorf("read head: %w", err)
	}
	if head < snap.Rev {
		return fmt.Errorf("log head %d is behind the stored snapshot at %d", head, snap.Rev)
	}
	a.text = rope.New(snap.Text)
	a.head = snap.Rev
	if head > snap.Rev {
		entries, err := readRange(ctx, a.opts.Log, a.opts.Durable, a.id, snap.Rev, head)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := a.applyEntry(e); err != nil {
				return err
			}
		}
	}
	return nil
}

func (a *actor) subscribeLog(ctx context.Context) (store.Subscription, error) {
	sub, err := a.opts.Log.Subscribe(ctx, a.id, a.head)
	if err != nil {
		return nil, fmt.Errorf("subscribe to %q after %d: %w", a.id, a.head, err)
	}
	return sub, nil
}

func (a *actor) subscribePresence(ctx context.Context) (<-chan store.PresenceEvent, error) {
	ch, err := a.opts.Presence.Subscribe(ctx, a.id)
	if err != nil {
		return nil, fmt.Errorf("subscribe to presence of %q: %w", a.id, err)
	}
	lctx, cancel := a.storeCtx()
	defer cancel()
	list, err := a.opts.Presence.List(lctx, a.id)
	if err != nil {
		return nil, fmt.Errorf("list presence of %q: %w", a.id, err)
	}
	for _, e := range list {
		a.present[e.Conn] = a.cursorAtHead(e)
	}
	return ch, nil
}

// broken reports a document whose text no longer accepts committed
// entries; the actor exits and the next request reloads it from storage.
func (a *actor) broken() bool { return a.text == nil }

// applyEntry moves the text to e.Rev. It is the only place the text
// changes.
func (a *actor) applyEntry(e store.Entry) error {
	if e.Rev != a.head+1 {
		return fmt.Errorf("apply %q rev %d at head %d: out of order", a.id, e.Rev, a.head)
	}
	if err := a.text.Apply(e.Op); err != nil {
		return fmt.Errorf("apply %q rev %d: %w", a.id, e.Rev, err)
	}
	a.head = e.Rev
	a.window = append(a.window, e)
	if over := len(a.window) - a.opts.Window; over > a.opts.Window/4 {
		// Trim in chunks so appends stay amortised O(1).
		a.window = append([]store.Entry(nil), a.window[over:]...)
	}
	if k := entryAuthor(e); e.Seq > a.lastSeq[k].seq {
		a.lastSeq[k] = committedSeq{seq: e.Seq, rev: e.Rev}
	}
	for conn, p := range a.present {
		a.present[conn] = transformPresence(p, e)
	}
	return nil
}

// commit applies a committed entry and sends it to every member: an ack to
// the connections of the author that wrote it (the same user with the same
// client id), the operation to the others.
func (a *actor) commit(e store.Entry) {
	if err := a.applyEntry(e); err != nil {
		a.unload("committed entry does not apply", err)
		return
	}
	k := entryAuthor(e)
	// A forwarded submission is done once its entry is here: commit acks
	// its member below like any other.
	if f, ok := a.forwarded[clientSeq{k, e.Seq}]; ok {
		delete(a.forwarded, clientSeq{k, e.Seq})
		a.opts.Metrics.AckTime.WithLabelValues(metrics.RouteForwarded).Observe(time.Since(f.req.received).Seconds())
	}
	var ack, op *protocol.Frame // each encoded once, for all its receivers
	for conn, m := range a.members {
		var f *protocol.Frame
		if m.author() == k {
			if ack == nil {
				ack = protocol.NewFrame(protocol.Ack{Type: protocol.TypeAck, Seq: e.Seq, Rev: e.Rev})
			}
			f = ack
		} else {
			if op == nil {
				op = protocol.NewFrame(protocol.OpFromEntry(e))
			}
			f = op
		}
		if !a.deliver(m, f) {
			a.drop(conn)
		}
	}
	if ack != nil {
		a.opts.Metrics.Acks.WithLabelValues(metrics.AckCommit).Inc()
	}
}

// remote handles an entry from the log subscription: own entries were
// applied already, others are applied now.
func (a *actor) remote(e store.Entry) {
	switch {
	case e.Rev <= a.head:
		return
	case e.Rev == a.head+1:
		a.commit(e)
	default:
		a.catchUp()
	}
}

// catchUp applies everything committed after head.
func (a *actor) catchUp() {
	ctx, cancel := a.storeCtx()
	defer cancel()
	entries, err := readRange(ctx, a.opts.Log, a.opts.Durable, a.id, a.head, -1)
	if errors.Is(err, store.ErrReset) {
		a.unload("log reset", err)
		return
	}
	if err != nil {
		a.log.Warn("catch up from log", "err", err)
		return
	}
	for _, e := range entries {
		if a.broken() {
			return
		}
		if e.Rev == a.head+1 {
			a.commit(e)
		}
	}
}

// entriesAfter returns the committed entries with Rev > rev.
func (a *actor) entriesAfter(rev int64) ([]store.Entry, error) {
	if rev >= a.head {
		return nil, nil
	}
	if n := len(a.window); n > 0 && a.window[0].Rev <= rev+1 {
		start := int(rev + 1 - a.window[0].Rev)
		return a.window[start:], nil
	}
	ctx, cancel := a.storeCtx()
	defer cancel()
	return readRange(ctx, a.opts.Log, a.opts.Durable, a.id, rev, a.head)
}

func (a *actor) join(m *Member, rev *int64) {
	w := protocol.Welcome{
		Type: protocol.TypeWelcome, V: protocol.Version, Rev: a.head,
		User: m.User, Conn: m.Conn, Perm: m.Perm, Presence: []protocol.Presence{},
		AuthTTLMs: m.AuthTTLMs,
	}
	if limits := m.Limits; limits != (protocol.Limits{}) || a.opts.MaxDocBytes > 0 {
		limits.MaxDocBytes = max(a.opts.MaxDocBytes, 0)
		w.Limits = &limits
	}
	resumed := false
	if rev != nil && *rev <= a.head && a.head-*rev <= int64(a.opts.Window) {
		if entries, err := a.entriesAfter(*rev); err == nil {
			w.Ops = make([]protocol.Op, len(entries))
			for i, e := range entries {
				w.Ops[i] = protocol.OpFromEntry(e)
			}
			resumed = true
		} else {
			a.log.Warn("resume from log failed; sending full text", "err", err)
		}
	}
	var text *protocol.EncodedText
	if !resumed {
		var err error
		if text, err = a.encodedText(); err != nil {
			a.log.Error("encode text", "err", err)
			return
		}
	}
	conns := make([]string, 0, len(a.present))
	for conn := range a.present {
		if conn != m.Conn {
			conns = append(conns, conn)
		}
	}
	sort.Strings(conns)
	for _, conn := range conns {
		p := a.present[conn]
		w.Presence = append(w.Presence, protocol.Presence{Type: protocol.TypePresence, User: p.User, Conn: conn, Client: p.Client, Cursor: p.Cursor})
	}
	m.joined = a.head
	f := protocol.NewFrame(w)
	if text != nil {
		f = protocol.NewTextFrame(w, text)
	}
	if !a.deliver(m, f) {
		return
	}
	a.members[m.Conn] = m
	a.updatePresence(a.presenceOf(m))
}

// encodedText returns the text at the head encoded once for every
// welcome and GET at this revision.
func (a *actor) encodedText() (*protocol.EncodedText, error) {
	if a.encoded == nil || a.encoded.Rev != a.head {
		t, err := protocol.EncodeText(a.head, a.text.String())
		if err != nil {
			return nil, err
		}
		a.encoded = t
	}
	return a.encoded, nil
}

// drop removes a member (left, or too slow) and its presence.
func (a *actor) drop(conn string) {
	if _, ok := a.members[conn]; !ok {
		return
	}
	delete(a.members, conn)
	if len(a.members) == 0 {
		a.idle = time.Now()
	}
	if a.opts.Presence == nil {
		a.presenceEvent(store.PresenceEvent{Entry: a.present[conn], Left: true})
		return
	}
	ctx, cancel := a.storeCtx()
	defer cancel()
	if err := a.opts.Presence.Remove(ctx, a.id, conn); err != nil {
		a.log.Warn("remove presence", "conn", conn, "err", err)
	}
}

// unload gives up the in-memory state: the log no longer matches it (it
// was reset, or an entry does not apply). Members are disconnected so they
// reconnect and resume from a freshly loaded document; the actor exits at
// the top of its loop.
func (a *actor) unload(why string, err error) {
	a.log.Error("unloading document: "+why, "err", err)
	a.text = nil
	for conn, m := range a.members {
		a.drop(conn)
		if m.Kick != nil {
			m.Kick("document reloading")
		}
	}
}

// deleted gives up the document because it was deleted: its members are
// told so (they must not reconnect to it) and the actor exits at the top
// of its loop; the next open loads the document afresh, empty.
func (a *actor) deleted() {
	if a.text == nil {
		return
	}
	a.log.Info("document deleted; closing its connections", "members", len(a.members))
	a.text = nil
	// New requests start a fresh actor at once: the document is empty now,
	// not unavailable.
	a.m.forget(a)
	for conn, m := range a.members {
		a.drop(conn)
		switch {
		case m.Deleted != nil:
			m.Deleted()
		case m.Kick != nil:
			m.Kick("document deleted")
		}
	}
}

func (a *actor) shutdown() {
	for conn, m := range a.members {
		a.drop(conn)
		if m.Kick != nil {
			m.Kick("server shutting down")
		}
	}
	a.failPending(fmt.Errorf("document %q: %w", a.id, ErrClosed))
}

func (a *actor) setCursor(r cursorReq) {
	m, ok := a.members[r.conn]
	if !ok {
		return
	}
	e := a.presenceOf(m)
	if r.cursor != nil {
		c := *r.cursor
		e.Cursor = &c
		if r.rev != nil && *r.rev < a.head {
			e.Rev = *r.rev
			e = a.cursorAtHead(e)
		}
		if e.Cursor != nil {
			e.Cursor.Anchor = clamp(e.Cursor.Anchor, a.text.Len())
			e.Cursor.Head = clamp(e.Cursor.Head, a.text.Len())
		}
	}
	a.updatePresence(e)
}

func clamp(v, hi int) int { return max(0, min(v, hi)) }

// presenceOf starts the member's next presence update: a new Seq, at the
// head, without a cursor.
func (a *actor) presenceOf(m *Member) store.PresenceEntry {
	m.presenceSeq++
	return store.PresenceEntry{Doc: a.id, Conn: m.Conn, User: m.User, Client: m.Client, Rev: a.head, Seq: m.presenceSeq}
}

// updatePresence stores e; the announcement to members follows from the
// presence subscription, so replicas and this process behave the same.
func (a *actor) updatePresence(e store.PresenceEntry) {
	if a.opts.Presence == nil {
		a.presenceEvent(store.PresenceEvent{Entry: e})
		return
	}
	ctx, cancel := a.storeCtx()
	defer cancel()
	if m := a.members[e.Conn]; m != nil && e.Seq >= m.presence.Seq {
		m.presence = e
	}
	if err := a.opts.Presence.Update(ctx, e); err != nil {
		a.log.Warn("update presence", "conn", e.Conn, "err", err)
	}
}

// refreshPresence keeps local entries from expiring: one call for the
// whole document, which announces nothing (nothing changed). An entry the
// store no longer has (it expired meanwhile) is written again.
func (a *actor) refreshPresence() {
	if a.opts.Presence == nil || len(a.members) == 0 {
		return
	}
	conns := make([]string, 0, len(a.members))
	for conn, m := range a.members {
		if m.presence.Seq > 0 {
			conns = append(conns, conn)
		}
	}
	ctx, cancel := a.storeCtx()
	missing, err := a.opts.Presence.Refresh(ctx, a.id, conns)
	cancel()
	if err != nil {
		a.log.Warn("refresh presence", "err", err)
		return
	}
	for _, conn := range missing {
		m := a.members[conn]
		if m == nil {
			continue
		}
		// The copy kept at the head once the last update came back;
		// before that (it is on its way, or was lost), the update itself.
		e, ok := a.present[conn]
		if !ok || e.Seq < m.presence.Seq {
			e = a.cursorAtHead(m.presence)
		}
		a.updatePresence(e)
	}
}

func (a *actor) presenceEvent(ev store.PresenceEvent) {
	conn := ev.Entry.Conn
	if ev.Left {
		if _, ok := a.present[conn]; !ok && a.opts.Presence != nil {
			return
		}
		delete(a.present, conn)
		a.broadcastExcept(conn, protocol.Leave{Type: protocol.TypeLeave, User: ev.Entry.User.ID, Conn: conn})
		return
	}
	e := a.cursorAtHead(ev.Entry)
	old, had := a.present[conn]
	if had && e.Seq != 0 && e.Seq < old.Seq {
		return // overtaken by a later update of its owner
	}
	a.present[conn] = e
	if had && isRefresh(old, e) {
		return // nothing changed for anyone
	}
	a.broadcastExcept(conn, protocol.Presence{Type: protocol.TypePresence, User: e.User, Conn: conn, Client: e.Client, Cursor: e.Cursor})
}

// isRefresh reports whether e only keeps old alive. Only the owner's Seq
// can say so: comparing positions would swallow an update whose cursor
// this process had already moved to the same place, while members that
// were told an older position (or placed it differently) wait for exactly
// that update.
func isRefresh(old, e store.PresenceEntry) bool {
	if e.Seq != 0 {
		return e.Seq == old.Seq
	}
	return old.Seq == 0 && old.User == e.User && sameCursor(old.Cursor, e.Cursor)
}

func sameCursor(a, b *store.Cursor) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func (a *actor) broadcastExcept(conn string, msg any) {
	f := protocol.NewFrame(msg)
	for c, m := range a.members {
		if c != conn && !a.deliver(m, f) {
			a.drop(c)
		}
	}
}

// cursorAtHead transforms a presence entry's cursor from its revision to
// the head; a cursor older than the window is dropped (the owner resends it
// on the next move).
func (a *actor) cursorAtHead(e store.PresenceEntry) store.PresenceEntry {
	if e.Cursor == nil || e.Rev >= a.head {
		e.Rev = a.head
		return e
	}
	if a.head-e.Rev > int64(a.opts.Window) {
		// Never read history for a cursor: a client could send old
		// revisions at will and keep the document busy reading.
		e.Cursor, e.Rev = nil, a.head
		return e
	}
	entries, err := a.entriesAfter(e.Rev)
	if err != nil {
		e.Cursor, e.Rev = nil, a.head
		return e
	}
	for _, c := range entries {
		e = transformPresence(e, c)
	}
	return e
}

func transformPresence(p store.PresenceEntry, e store.Entry) store.PresenceEntry {
	if p.Rev >= e.Rev {
		return p
	}
	p.Rev = e.Rev
	if p.Cursor == nil {
		return p
	}
	// The cursor's owner typed its own operations at the caret, so its own
	// insert there moves the caret after it; anyone else's stays after the
	// caret. With the server's order (the later of two concurrent inserts at
	// one spot goes first, see submit.go) this puts every owner's caret
	// right after their own text, as in their own editor. A range moves as
	// one selection, the same rule as the clients' (ot.TransformSelection).
	var c store.Cursor
	c.Anchor, c.Head = ot.TransformSelection(p.Cursor.Anchor, p.Cursor.Head, e.Op, ot.OwnsCaret(p.User.ID, p.Client, e.User, e.Client))
	p.Cursor = &c
	return p
}

// deliver gives f to a member, to be written at the next flush.
func (a *actor) deliver(m *Member, f *protocol.Frame) bool {
	if !m.Send(f) {
		return false
	}
	if m.Flush != nil && !m.unflushed {
		m.unflushed = true
		a.unflushed = append(a.unflushed, m)
	}
	return true
}

// flush ends the burst for every member sent to since the last flush.
func (a *actor) flush() {
	for i, m := range a.unflushed {
		m.unflushed = false
		m.Flush()
		a.unflushed[i] = nil
	}
	a.unflushed = a.unflushed[:0]
}

func (a *actor) sendProblem(m *Member, p *Problem) {
	a.opts.Metrics.Errors.WithLabelValues(p.Code).Inc()
	if m == nil {
		return
	}
	if !a.deliver(m, protocol.NewFrame(p.Wire())) {
		a.drop(m.Conn)
	}
}
