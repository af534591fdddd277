package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tandem-dev/tandem/runtime/store"
)

type subscription struct {
	ch  chan store.Entry
	mu  sync.Mutex
	err error
}

func (s *subscription) C() <-chan store.Entry { return s.ch }

func (s *subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *subscription) fail(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

// Subscribe delivers every entry committed to doc after revision after, in
// order and without gaps. Notifications arrive over pub/sub; a revision
// jump, a resubscription after a dropped connection, or CatchUp of silence
// makes the subscription read the missing revisions from the stream.
// When the document's epoch changes the subscription ends with ErrReset.
func (l *Log) Subscribe(ctx context.Context, doc string, after int64) (store.Subscription, error) {
	epoch, err := l.epoch(ctx, doc)
	if err != nil {
		return nil, fmt.Errorf("subscribe to doc %q: %w", doc, err)
	}
	// Counted before listening, so every commit this process makes from
	// now on is left for this subscription too.
	unread := l.own.reading(doc)
	// Listen before reading, so nothing committed in between is missed.
	lis, unlisten, err := l.c.hub.listen(ctx, opsChannel(doc))
	if err != nil {
		unread()
		return nil, fmt.Errorf("subscribe to doc %q: %w: %w", doc, store.ErrUnavailable, err)
	}
	backlog, head, err := l.read(ctx, doc, epoch, after, -1)
	if err != nil {
		unlisten()
		unread()
		return nil, fmt.Errorf("subscribe to doc %q after rev %d: %w", doc, after, err)
	}
	if after > head {
		// Only a caller holding state from before a reset can be ahead of
		// the log.
		unlisten()
		unread()
		return nil, fmt.Errorf("subscribe to doc %q after rev %d beyond head %d: %w", doc, after, head, resetError(doc))
	}
	s := &subscription{ch: make(chan store.Entry, 64)}
	w := &subWorker{l: l, doc: doc, epoch: epoch, last: after, sub: s, lis: lis}
	go func() {
		defer close(s.ch)
		defer unlisten()
		defer unread()
		defer func() {
			if ctx.Err() != nil {
				// The subscriber gave the document up (its state with
				// it): its next load learns the epoch afresh, so keys
				// that expired while nobody had it open come back
				// without a spurious reset.
				l.forget(doc)
			}
		}()
		if err := w.run(ctx, backlog); err != nil && ctx.Err() == nil {
			s.fail(err)
		}
	}()
	return s, nil
}

type subWorker struct {
	l     *Log
	doc   string
	epoch string
	last  int64
	sub   *subscription
	lis   *listener
}

func (w *subWorker) deliver(ctx context.Context, entries []store.Entry) error {
	for _, e := range entries {
		if e.Rev <= w.last {
			continue
		}
		if e.Rev != w.last+1 {
			return fmt.Errorf("doc %q: internal: delivering rev %d after %d", w.doc, e.Rev, w.last)
		}
		select {
		case w.sub.ch <- e:
			w.last = e.Rev
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// catchUp reads whatever was committed after the last delivered revision.
// repair says whether this was needed because pub/sub failed us (metric).
func (w *subWorker) catchUp(ctx context.Context, repair bool) error {
	entries, head, err := w.l.c.readLog(ctx, w.doc, w.epoch, w.last, -1)
	if err != nil {
		return err
	}
	if head < w.last {
		// The log went back in time under the same epoch: Redis restarted
		// from an append-only file older than what we delivered (a crash
		// within the fsync window). Same remedy as a lost log.
		return resetError(w.doc)
	}
	if len(entries) > 0 && repair {
		w.l.c.m.gapsRepaired.Inc()
	}
	return w.deliver(ctx, entries)
}

func (w *subWorker) run(ctx context.Context, backlog []store.Entry) error {
	if err := w.deliver(ctx, backlog); err != nil {
		return err
	}
	silence := time.NewTimer(w.l.c.opts.CatchUp)
	defer silence.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return nil
		case payload := <-w.lis.msgs:
			err = w.onNotification(ctx, payload)
		case <-w.lis.resync:
			err = w.catchUp(ctx, true)
		case <-silence.C:
			err = w.catchUp(ctx, true)
		}
		if err != nil {
			if isReset(err) || errors.Is(err, store.ErrDeleted) || ctx.Err() != nil {
				return err
			}
			// Redis trouble: keep the subscription and try again at the
			// next notification or silence check, since transient
			// outages must not tear down every open document.
			w.l.c.logger.Debug("subscription catch-up failed", "doc", w.doc, "err", err)
		}
		silence.Reset(w.l.c.opts.CatchUp)
	}
}

func (w *subWorker) onNotification(ctx context.Context, payload string) error {
	if entries, ok := w.l.own.take(payload, w.epoch); ok {
		// This process made the commit: its entries were left in memory.
		return w.onEntries(ctx, entries)
	}
	var n notification
	if err := json.Unmarshal([]byte(payload), &n); err != nil {
		return w.catchUp(ctx, true)
	}
	if n.Deleted {
		w.l.forget(w.doc) // the next open learns the new epoch quietly
		return fmt.Errorf("subscription to doc %q: %w", w.doc, store.ErrDeleted)
	}
	if n.Epoch != w.epoch {
		// The reset is left for the next Append/Read/Head to report too:
		// the subscription only ends itself.
		return resetError(w.doc)
	}
	entries := make([]store.Entry, 0, len(n.Entries))
	for _, raw := range n.Entries {
		var e store.Entry
		if err := json.Unmarshal(raw, &e); err != nil {
			return w.catchUp(ctx, true)
		}
		entries = append(entries, e)
	}
	return w.onEntries(ctx, entries)
}

// onEntries delivers the entries of one notification, in revision order.
func (w *subWorker) onEntries(ctx context.Context, entries []store.Entry) error {
	if len(entries) == 0 || entries[len(entries)-1].Rev <= w.last {
		return nil // already delivered by a catch-up
	}
	if entries[0].Rev > w.last+1 {
		// A notification went missing: fetch the gap (and these) from the
		// stream.
		return w.catchUp(ctx, true)
	}
	return w.deliver(ctx, entries)
}
