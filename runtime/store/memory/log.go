// Package memory implements the store interfaces inside one process: the
// operation log and sequencer of the embedded mode, and presence. With a
// store.Durable behind it the log loads document heads from it and writes
// committed entries to it in coalesced batches.
package memory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tandem-dev/tandem/runtime/store"
)

// LogOptions configures a Log. The zero value is an in-memory log with no
// durable store.
type LogOptions struct {
	// Durable, when set, provides the head of documents this log has not
	// seen yet and receives every committed entry.
	Durable store.Durable
	// FlushInterval is the longest time a committed entry waits before it
	// is written to Durable (default 500ms).
	FlushInterval time.Duration
	// FlushBatch makes the flusher write as soon as this many entries are
	// pending (default 256).
	FlushBatch int
	// Window is how many flushed entries per document stay in memory for
	// Read; older ones are dropped and Read returns ErrTrimmed for them.
	// Without Durable nothing is ever dropped. Default 1000.
	Window int
	// ForgetAfter drops a document's state from memory once everything of
	// it is durable, nobody subscribes to it and it was not used for this
	// long (default 10m); it is loaded again from Durable on the next use.
	// Without Durable nothing is forgotten.
	ForgetAfter time.Duration
	// SyncCommit makes Append return only once its entries are in Durable,
	// so that an acknowledged operation survives a crash of the process
	// (SIGKILL, OOM kill). Appends that arrive while a write is under way
	// are written together in the next one (group commit): a busy process
	// pays one transaction for everything queued meanwhile, across
	// documents, and an idle one writes at once. Readers and subscribers
	// see entries only once they are written. Without SyncCommit entries
	// are written in coalesced batches, FlushInterval after their commit at
	// the latest.
	SyncCommit bool
	// Logger receives flush failures (default slog.Default()).
	Logger *slog.Logger
}

// Log is an in-process store.Log.
type Log struct {
	opts LogOptions

	mu      sync.Mutex
	docs    map[string]*docLog
	pending []store.Entry // committed, not yet written to Durable
	closed  bool

	kick chan struct{} // wakes the flusher early
	stop chan struct{}
	done chan struct{}

	// With SyncCommit: appends waiting for the committer, in order, and
	// its wake-up and exit signals.
	commitQ    []*commitReq
	commitWake chan struct{}
	commitDone chan struct{}

	flushMu sync.Mutex // one Durable.Write at a time, in commit order
}

// docLog is one document's state. base is the revision before entries[0]:
// entries at or below base are not held (trimmed, or older than the durable
// snapshot the head was loaded from).
type docLog struct {
	ready   chan struct{} // closed once head was loaded
	loadErr error
	base    int64
	entries []store.Entry
	flushed int64           // highest revision written to Durable
	subs    []*subscription // live subscriptions
	used    time.Time       // last access, for forgetting idle documents
	writing bool            // SyncCommit: an append is being written; it goes after head
	deleted bool            // the document was deleted: subscriptions end with store.ErrDeleted
}

// commitReq is one Append waiting for its durable write.
type commitReq struct {
	d       *docLog
	doc     string
	entries []store.Entry
	done    chan error
}

func (d *docLog) head() int64 { return d.base + int64(len(d.entries)) }

// NewLog returns a running Log; Close it to stop the flusher and write what
// is pending.
func NewLog(opts LogOptions) *Log {
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = 500 * time.Millisecond
	}
	if opts.FlushBatch <= 0 {
		opts.FlushBatch = 256
	}
	if opts.Window <= 0 {
		opts.Window = 1000
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ForgetAfter <= 0 {
		opts.ForgetAfter = 10 * time.Minute
	}
	if opts.Durable == nil {
		opts.SyncCommit = false // nothing to wait for
	}
	l := &Log{
		opts:       opts,
		docs:       map[string]*docLog{},
		kick:       make(chan struct{}, 1),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
		commitWake: make(chan struct{}, 1),
		commitDone: make(chan struct{}),
	}
	if opts.Durable != nil {
		go l.flushLoop()
	} else {
		close(l.done)
	}
	if opts.SyncCommit {
		go l.commitLoop()
	} else {
		close(l.commitDone)
	}
	return l
}

var errClosed = errors.New("memory log: closed")

// doc returns the loaded state of id, loading its head from Durable the
// first time. The caller must not hold l.mu.
func (l *Log) doc(ctx context.Context, id string) (*docLog, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, errClosed
	}
	d, ok := l.docs[id]
	if !ok {
		d = &docLog{ready: make(chan struct{}), used: time.Now()}
		l.docs[id] = d
		l.mu.Unlock()
		// Only the goroutine that created the entry loads it; others wait
		// on ready. Loading outside the lock keeps other documents moving.
		if l.opts.Durable != nil {
			snap, err := l.opts.Durable.Load(ctx, id)
			l.mu.Lock()
			if err != nil {
				// Forget the entry so the next call retries the load.
				if l.docs[id] == d {
					delete(l.docs, id)
				}
				d.loadErr = fmt.Errorf("load head of %q: %w", id, err)
			} else {
				d.base, d.flushed = snap.Rev, snap.Rev
			}
			l.mu.Unlock()
		}
		close(d.ready)
	} else {
		l.mu.Unlock()
	}
	select {
	case <-d.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if d.loadErr != nil {
		return nil, d.loadErr
	}
	return d, nil
}

// locked runs fn with l.mu held on the current state of id. A state that
// was forgotten between loading and locking is loaded again, so nothing is
// ever written to a forgotten state.
func (l *Log) locked(ctx context.Context, id string, fn func(d *docLog) error) error {
	for {
		d, err := l.doc(ctx, id)
		if err != nil {
			return err
		}
		l.mu.Lock()
		if l.docs[id] != d {
			l.mu.Unlock()
			continue
		}
		d.used = time.Now()
		err = fn(d)
		l.mu.Unlock()
		return err
	}
}

// Head implements store.Log.
func (l *Log) Head(ctx context.Context, doc string) (int64, error) {
	var head int64
	err := l.locked(ctx, doc, func(d *docLog) error {
		head = d.head()
		return nil
	})
	return head, err
}

// Append implements store.Log.
func (l *Log) Append(ctx context.Context, doc string, expected int64, entries []store.Entry) error {
	for i, e := range entries {
		if e.Rev != expected+int64(i)+1 {
			return fmt.Errorf("append to %q at %d: entry %d has rev %d, want %d", doc, expected, i, e.Rev, expected+int64(i)+1)
		}
		if e.Doc != doc {
			return fmt.Errorf("append to %q: entry %d belongs to %q", doc, i, e.Doc)
		}
	}
	var req *commitReq
	err := l.locked(ctx, doc, func(d *docLog) error {
		if l.closed {
			return errClosed
		}
		if d.writing {
			// Another append's entries are being written after the head.
			return fmt.Errorf("append to %q at %d (head %d, an append in flight): %w", doc, expected, d.head(), store.ErrConflict)
		}
		if d.head() != expected {
			return fmt.Errorf("append to %q at %d (head %d): %w", doc, expected, d.head(), store.ErrConflict)
		}
		if len(entries) == 0 {
			return nil
		}
		if l.opts.SyncCommit {
			d.writing = true
			req = &commitReq{d: d, doc: doc, entries: entries, done: make(chan error, 1)}
			l.commitQ = append(l.commitQ, req)
			select {
			case l.commitWake <- struct{}{}:
			default:
			}
			return nil
		}
		d.entries = append(d.entries, entries...)
		l.notifyLocked(d)
		if l.opts.Durable != nil {
			l.pending = append(l.pending, entries...)
			if len(l.pending) >= l.opts.FlushBatch {
				select {
				case l.kick <- struct{}{}:
				default:
				}
			}
		}
		return nil
	})
	if err != nil || req == nil {
		return err
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		// The write goes on; if it succeeds the entries are committed, and
		// the caller finds them when it next reads or appends (a conflict).
		return fmt.Errorf("append to %q at %d: waiting for the durable write: %w (%w)", doc, expected, ctx.Err(), store.ErrUnavailable)
	}
}

// commitLoop writes queued appends until the log is closed and nothing is
// left: everything queued at the moment it looks goes in one Durable.Write.
func (l *Log) commitLoop() {
	defer close(l.commitDone)
	for {
		l.mu.Lock()
		batch := l.commitQ
		l.commitQ = nil
		closed := l.closed
		l.mu.Unlock()
		if len(batch) > 0 {
			l.commit(batch)
			continue
		}
		if closed {
			return
		}
		select {
		case <-l.commitWake:
		case <-l.stop:
		}
	}
}

// commit writes the entries of batch (one request per document: a
// document has at most one append in flight) in one transaction. If that
// fails and several documents are in it, each is written on its own, so
// one document the store refuses does not fail the others' appends.
func (l *Log) commit(batch []*commitReq) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := 0
	for _, r := range batch {
		n += len(r.entries)
	}
	all := make([]store.Entry, 0, n)
	for _, r := range batch {
		all = append(all, r.entries...)
	}
	err := l.opts.Durable.Write(ctx, all)
	if err == nil || len(batch) == 1 {
		l.committed(batch, err)
		return
	}
	l.opts.Logger.Warn("group commit failed; writing its documents one by one", "docs", len(batch), "entries", n, "err", err)
	for _, r := range batch {
		l.committed([]*commitReq{r}, l.opts.Durable.Write(ctx, r.entries))
	}
}

// committed makes the entries of reqs visible (when err is nil) and
// answers their appends.
func (l *Log) committed(reqs []*commitReq, err error) {
	l.mu.Lock()
	for _, r := range reqs {
		d := r.d
		d.writing = false
		if err != nil {
			continue
		}
		d.entries = append(d.entries, r.entries...)
		d.flushed = d.head()
		l.notifyLocked(d)
		if len(d.entries) >= 2*l.opts.Window {
			// Only once twice the window is held: trimming copies what
			// stays, and this runs after every append.
			d.trim(l.opts.Window)
		}
	}
	l.mu.Unlock()
	for _, r := range reqs {
		if err != nil {
			l.opts.Logger.Error("durable write of committed operations failed; the append is refused", "doc", r.doc,
				"entries", len(r.entries), "err", err)
			r.done <- fmt.Errorf("append to %q: durable write: %w (%w)", r.doc, err, store.ErrUnavailable)
			continue
		}
		r.done <- nil
	}
}

// Read implements store.Log.
func (l *Log) Read(ctx context.Context, doc string, from, to int64) ([]store.Entry, error) {
	var out []store.Entry
	err := l.locked(ctx, doc, func(d *docLog) error {
		var err error
		out, err = d.read(from, to)
		return err
	})
	return out, err
}

func (d *docLog) read(from, to int64) ([]store.Entry, error) {
	head := d.head()
	if to < 0 || to > head {
		to = head
	}
	if from >= to {
		return nil, nil
	}
	if from < d.base {
		return nil, fmt.Errorf("read revisions %d..%d (held from %d): %w", from+1, to, d.base+1, store.ErrTrimmed)
	}
	out := make([]store.Entry, to-from)
	copy(out, d.entries[from-d.base:to-d.base])
	return out, nil
}

// subscriptionBuffer is how many entries a subscription holds for its
// reader before a feeder goroutine takes over from the appends.
const subscriptionBuffer = 16

// Subscribe implements store.Log. A subscription costs no goroutine while
// its reader keeps up: each append hands the new entries to the
// subscription's channel itself, without blocking. Only when the channel
// is full, or the entries must come from the durable store, does a feeder
// goroutine start; it delivers until the subscription has caught up and
// then hands delivery back to the appends. So a slow reader never holds up
// writers or other readers, and an open document that nobody edits costs
// its subscription's channel and no stack.
func (l *Log) Subscribe(ctx context.Context, doc string, after int64) (store.Subscription, error) {
	s := &subscription{c: make(chan store.Entry, subscriptionBuffer), ctx: ctx, doc: doc, next: after}
	err := l.locked(ctx, doc, func(d *docLog) error {
		// Registered under the lock, so the state cannot be forgotten
		// while the subscription reads it, and no append is missed.
		s.d = d
		d.subs = append(d.subs, s)
		l.deliverLocked(s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if !s.feeding {
			l.endLocked(s, nil) // a feeder sees ctx itself
		}
	})
	l.mu.Lock()
	s.stopAfter = stop
	if s.ended {
		stop()
	}
	l.mu.Unlock()
	return s, nil
}

// notifyLocked hands what is new in d to its subscriptions, or ends them
// when d was deleted or the log closed; l.mu must be held.
func (l *Log) notifyLocked(d *docLog) {
	// Backwards: endLocked removes the subscription from d.subs.
	for i := len(d.subs) - 1; i >= 0; i-- {
		l.deliverLocked(d.subs[i])
	}
}

// deliverLocked sends s the entries after s.next that d holds, as far as
// its channel takes them without blocking, and starts a feeder for the
// rest; l.mu must be held.
func (l *Log) deliverLocked(s *subscription) {
	if s.ended || s.feeding {
		return
	}
	d := s.d
	if d.deleted {
		l.endLocked(s, fmt.Errorf("subscription to %q: %w", s.doc, store.ErrDeleted))
		return
	}
	if s.next < d.base {
		// Trimmed from memory: the feeder reads them from the durable store.
		l.startFeederLocked(s)
		return
	}
	for s.next < d.head() {
		e := d.entries[s.next-d.base]
		select {
		case s.c <- e:
			s.next = e.Rev
		default:
			l.startFeederLocked(s)
			return
		}
	}
	if l.closed {
		l.endLocked(s, errClosed)
	}
}

func (l *Log) startFeederLocked(s *subscription) {
	s.feeding = true
	go l.feed(s)
}

// endLocked closes s's channel with err (nil: its context ended) and
// unregisters it; l.mu must be held, and no feeder may be sending.
func (l *Log) endLocked(s *subscription, err error) {
	if s.ended {
		return
	}
	s.ended = true
	if err != nil && s.ctx.Err() == nil {
		s.setErr(err)
	}
	close(s.c)
	if s.stopAfter != nil {
		s.stopAfter()
	}
	d := s.d
	for i, o := range d.subs {
		if o == s {
			d.subs = append(d.subs[:i], d.subs[i+1:]...)
			break
		}
	}
	d.used = time.Now()
}

// feed delivers s's backlog, blocking on its channel, until it has caught
// up, and then hands delivery back to the appends.
func (l *Log) feed(s *subscription) {
	ctx := s.ctx
	for {
		l.mu.Lock()
		if ctx.Err() != nil {
			l.endLocked(s, nil)
			l.mu.Unlock()
			return
		}
		d := s.d
		if d.deleted {
			l.endLocked(s, fmt.Errorf("subscription to %q: %w", s.doc, store.ErrDeleted))
			l.mu.Unlock()
			return
		}
		next := s.next
		batch, err := d.read(next, -1)
		base := d.base // trim moves it under l.mu; read it here, not after Unlock
		if err == nil && len(batch) == 0 {
			if l.closed {
				l.endLocked(s, errClosed)
			}
			s.feeding = false // caught up: appends deliver from here on
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		if errors.Is(err, store.ErrTrimmed) && l.opts.Durable != nil {
			// Dropped entries were flushed first, so the durable store has them.
			batch, err = l.opts.Durable.Ops(ctx, s.doc, next, base)
			if err == nil && (len(batch) == 0 || batch[0].Rev != next+1) {
				err = fmt.Errorf("subscribe %q after %d: durable store lacks revision %d: %w", s.doc, next, next+1, store.ErrTrimmed)
			}
		}
		if err != nil {
			l.mu.Lock()
			l.endLocked(s, err)
			l.mu.Unlock()
			return
		}
		for _, e := range batch {
			select {
			case s.c <- e:
				next = e.Rev
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				break
			}
		}
		l.mu.Lock()
		s.next = next
		l.mu.Unlock()
	}
}

type subscription struct {
	c   chan store.Entry
	mu  sync.Mutex
	err error

	// Guarded by Log.mu.
	ctx       context.Context
	doc       string
	d         *docLog
	next      int64       // the last revision handed to c
	feeding   bool        // a feeder goroutine sends to c; appends do not
	ended     bool        // c is closed
	stopAfter func() bool // unregisters the context's end
}

func (s *subscription) C() <-chan store.Entry { return s.c }

func (s *subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *subscription) setErr(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

func (l *Log) flushLoop() {
	defer close(l.done)
	t := time.NewTicker(l.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		case <-l.kick:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := l.Flush(ctx); err != nil {
			l.opts.Logger.Error("flush committed operations", "err", err)
		}
		cancel()
		l.forget()
	}
}

// Flush writes every pending entry to the durable store now. On failure the
// entries stay pending and the next flush writes them again (Durable.Write
// is idempotent).
func (l *Log) Flush(ctx context.Context) error {
	if l.opts.Durable == nil {
		return nil
	}
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	l.mu.Lock()
	batch := l.pending
	l.pending = nil
	l.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	written, err := l.write(ctx, batch)
	if len(written) < len(batch) {
		// Keep what was not written, in order, ahead of newer entries.
		failed := make([]store.Entry, 0, len(batch)-len(written))
		for _, e := range batch {
			if !written[docRev{e.Doc, e.Rev}] {
				failed = append(failed, e)
			}
		}
		l.mu.Lock()
		l.pending = append(failed, l.pending...)
		l.mu.Unlock()
	}
	batch = batch[:0:0]
	for k := range written {
		batch = append(batch, store.Entry{Doc: k.doc, Rev: k.rev})
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range batch {
		if d, ok := l.docs[e.Doc]; ok && e.Rev > d.flushed {
			d.flushed = e.Rev
		}
	}
	l.trim()
	return err
}

type docRev struct {
	doc string
	rev int64
}

// write stores batch in one Write; if that fails and the batch spans
// several documents, it writes each document on its own so that one
// document the store refuses does not hold back the others. It returns the
// entries written and the first error.
func (l *Log) write(ctx context.Context, batch []store.Entry) (map[docRev]bool, error) {
	written := map[docRev]bool{}
	mark := func(entries []store.Entry) {
		for _, e := range entries {
			written[docRev{e.Doc, e.Rev}] = true
		}
	}
	err := l.opts.Durable.Write(ctx, batch)
	if err == nil {
		mark(batch)
		return written, nil
	}
	err = fmt.Errorf("write %d entries: %w", len(batch), err)
	byDoc := map[string][]store.Entry{}
	var order []string
	for _, e := range batch {
		if _, ok := byDoc[e.Doc]; !ok {
			order = append(order, e.Doc)
		}
		byDoc[e.Doc] = append(byDoc[e.Doc], e)
	}
	if len(order) == 1 || ctx.Err() != nil {
		return written, err
	}
	var firstErr error
	for _, doc := range order {
		if werr := l.opts.Durable.Write(ctx, byDoc[doc]); werr != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("write %d entries of %q: %w", len(byDoc[doc]), doc, werr)
			}
			continue
		}
		mark(byDoc[doc])
	}
	return written, firstErr
}

// trim drops flushed entries beyond the window; l.mu must be held.
func (l *Log) trim() {
	for _, d := range l.docs {
		d.trim(l.opts.Window)
	}
}

// trim drops d's flushed entries beyond window; l.mu must be held.
func (d *docLog) trim(window int) {
	excess := int64(len(d.entries) - window)
	if excess <= 0 {
		return
	}
	if canDrop := d.flushed - d.base; excess > canDrop {
		excess = canDrop
	}
	if excess <= 0 {
		return
	}
	d.entries = append([]store.Entry(nil), d.entries[excess:]...)
	d.base += excess
}

// forget drops idle documents whose every entry is durable.
func (l *Log) forget() {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	for id, d := range l.docs {
		select {
		case <-d.ready:
		default:
			continue // still loading
		}
		if len(d.subs) == 0 && !d.writing && d.flushed == d.head() && now.Sub(d.used) >= l.opts.ForgetAfter {
			delete(l.docs, id)
		}
	}
}

// errDeleting refuses a document while Delete removes it.
var errDeleting = fmt.Errorf("memory log: document being deleted: %w", store.ErrUnavailable)

var _ store.Deleter = (*Log)(nil)

// Delete implements store.Deleter: it drops doc's state and pending
// entries, removes it from the durable store (when that is a store.Archive)
// and ends its subscriptions with store.ErrDeleted. While it runs, the
// document is refused (unavailable), so nothing is written to it between
// the two stores.
func (l *Log) Delete(ctx context.Context, doc string) error {
	tomb := &docLog{ready: make(chan struct{}), loadErr: errDeleting, used: time.Now()}
	close(tomb.ready)
	l.mu.Lock()
	for {
		d := l.docs[doc]
		if d == nil || !d.writing {
			break
		}
		// A synchronous commit of the document is under way: let it end.
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return fmt.Errorf("delete %q: wait for its write: %w", doc, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
		l.mu.Lock()
	}
	if old := l.docs[doc]; old != nil {
		old.deleted = true
		l.notifyLocked(old)
	}
	l.docs[doc] = tomb
	kept := l.pending[:0]
	for _, e := range l.pending {
		if e.Doc != doc {
			kept = append(kept, e)
		}
	}
	clear(l.pending[len(kept):])
	l.pending = kept
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		if l.docs[doc] == tomb {
			delete(l.docs, doc)
		}
		l.mu.Unlock()
	}()
	a, ok := l.opts.Durable.(store.Archive)
	if !ok {
		return nil
	}
	// Flush holds flushMu while it writes: a batch taken before the
	// pending entries were dropped is written before the delete.
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	if err := a.Delete(ctx, doc); err != nil {
		return fmt.Errorf("delete %q from the durable store: %w", doc, err)
	}
	return nil
}

// Docs reports how many documents the log holds in memory.
func (l *Log) Docs() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.docs)
}

// Pending reports how many committed entries are not yet durable.
func (l *Log) Pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pending)
}

// Close implements store.Log: it refuses new appends, stops subscriptions,
// and writes everything pending to the durable store.
func (l *Log) Close(ctx context.Context) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	for _, d := range l.docs {
		l.notifyLocked(d)
	}
	l.mu.Unlock()
	close(l.stop)
	<-l.commitDone // appends queued before the close are written and answered
	<-l.done
	if err := l.Flush(ctx); err != nil {
		return fmt.Errorf("final flush: %w", err)
	}
	return nil
}
