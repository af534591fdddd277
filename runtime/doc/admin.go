package doc

import (
	"context"
	"errors"
	"fmt"

	"github.com/tandem-dev/tandem/runtime/rope"
	"github.com/tandem-dev/tandem/runtime/store"
)

// ErrNoRevision means a revision asked for is after the document's head.
var ErrNoRevision = errors.New("doc: no such revision")

// ErrNotSupported means the stores this manager runs on cannot do what was
// asked (no durable store with snapshots, or a log that cannot delete).
var ErrNotSupported = errors.New("doc: not supported by this store")

// Archive returns the durable store's archive (listing, deletion,
// snapshots), or nil when it has none.
func (m *Manager) Archive() store.Archive {
	a, _ := m.opts.Durable.(store.Archive)
	return a
}

// loaded reports whether the document has an actor in this process.
func (m *Manager) loaded(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.docs[id]
	return ok
}

// durableOnly returns the durable snapshot of a document the log holds
// nothing of (store.Peeker), so that reading it creates no log state: a
// GET of a document that does not exist leaves Redis as it was. ok is
// false when the log must be asked.
func (m *Manager) durableOnly(ctx context.Context, id string) (store.Snapshot, bool, error) {
	p, isPeeker := m.opts.Log.(store.Peeker)
	if !isPeeker || m.opts.Durable == nil || m.loaded(id) {
		return store.Snapshot{}, false, nil
	}
	if _, known, err := p.Peek(ctx, id); err != nil || known {
		return store.Snapshot{}, false, err
	}
	snap, err := m.opts.Durable.Load(ctx, id)
	if err != nil {
		return store.Snapshot{}, false, fmt.Errorf("load %q: %w", id, err)
	}
	return snap, true, nil
}

// Head returns the document's current revision without loading it.
func (m *Manager) Head(ctx context.Context, id string) (int64, error) {
	if snap, ok, err := m.durableOnly(ctx, id); err != nil {
		return 0, err
	} else if ok {
		return snap.Rev, nil
	}
	head, err := m.opts.Log.Head(ctx, id)
	if err != nil {
		return 0, fmt.Errorf("head of %q: %w", id, err)
	}
	return head, nil
}

// TextAt returns the text of a document at revision rev: the newest
// snapshot at or below it from the durable store plus the operations after
// it (at most the snapshot interval of them), from the log or the durable
// store. It returns ErrNoRevision for a revision after the head and
// store.ErrCompacted for one older than the retained history.
func (m *Manager) TextAt(ctx context.Context, id string, rev int64) (store.Snapshot, error) {
	head, err := m.Head(ctx, id)
	if err != nil {
		return store.Snapshot{}, err
	}
	if rev > head {
		return store.Snapshot{}, fmt.Errorf("%q at revision %d (head %d): %w", id, rev, head, ErrNoRevision)
	}
	base := store.Snapshot{Doc: id}
	if a := m.Archive(); a != nil {
		if base, err = a.SnapshotAt(ctx, id, rev); err != nil {
			return store.Snapshot{}, fmt.Errorf("text of %q at %d: %w", id, rev, err)
		}
	}
	if base.Rev == rev {
		return base, nil
	}
	entries, err := readRange(ctx, m.opts.Log, m.opts.Durable, id, base.Rev, rev)
	if err != nil {
		return store.Snapshot{}, fmt.Errorf("text of %q at %d: %w", id, rev, err)
	}
	if int64(len(entries)) != rev-base.Rev {
		return store.Snapshot{}, fmt.Errorf("text of %q at %d: %d operations after the snapshot at %d: %w",
			id, rev, len(entries), base.Rev, store.ErrUnavailable)
	}
	text := rope.New(base.Text)
	for _, e := range entries {
		if err := text.Apply(e.Op); err != nil {
			return store.Snapshot{}, fmt.Errorf("text of %q at %d: apply revision %d: %w", id, rev, e.Rev, err)
		}
	}
	return store.Snapshot{Doc: id, Rev: rev, Text: text.String()}, nil
}

// Delete removes a document from every store. Its editors, on this
// process and (through the log) on every other, are disconnected with the
// "deleted" close code; a later open starts empty at revision 0.
func (m *Manager) Delete(ctx context.Context, id string) error {
	d, ok := m.opts.Log.(store.Deleter)
	if !ok {
		return fmt.Errorf("delete %q: the log cannot delete: %w", id, ErrNotSupported)
	}
	if err := d.Delete(ctx, id); err != nil {
		return fmt.Errorf("delete %q: %w", id, err)
	}
	// The log ends the actor's subscription with ErrDeleted; telling the
	// actor directly as well makes the close happen before Delete returns.
	m.mu.Lock()
	a := m.docs[id]
	m.mu.Unlock()
	if a == nil {
		return nil
	}
	reply := make(chan result[struct{}], 1)
	if err := a.send(ctx, deletedReq{reply: reply}); err != nil {
		return nil // the actor is gone already
	}
	select {
	case <-reply:
	case <-a.done:
	case <-ctx.Done():
		return fmt.Errorf("delete %q: close its connections: %w", id, ctx.Err())
	}
	return nil
}
