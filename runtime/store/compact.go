package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tandem-dev/tandem/runtime/rope"
)

// CompactionOptions tune RunCompaction.
type CompactionOptions struct {
	Retention Retention
	// Every is how often a pass over all documents starts (default 1m).
	Every time.Duration
	// Batch is how many documents one Compact call examines (default 100).
	Batch int
	// Pause is the rest between two batches of a pass (default 100ms), so
	// compaction takes a small share of the store, never a long stretch.
	Pause  time.Duration
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Metrics, when set, count passes, what they removed and how long
	// they took.
	Metrics *CompactionMetrics
}

// RunCompaction compacts a's history by ret in the background until ctx
// ends: a pass over every document every opts.Every, in batches. A failed
// batch is logged and the pass starts over at the next tick; compaction is
// idempotent, so an interrupted pass loses nothing. On an archive that
// replicas share (PassLocker), a replica whose tick finds another's pass
// under way skips its own (CompactAll). It returns at once when the
// retention keeps everything.
func RunCompaction(ctx context.Context, a Archive, opts CompactionOptions) {
	if opts.Retention.Keeps() || a == nil {
		return
	}
	if opts.Every <= 0 {
		opts.Every = time.Minute
	}
	if opts.Batch <= 0 {
		opts.Batch = 100
	}
	if opts.Pause <= 0 {
		opts.Pause = 100 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	t := time.NewTicker(opts.Every)
	defer t.Stop()
	for {
		CompactAll(ctx, a, opts)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// CompactAll runs one pass of compaction over every document and reports
// what it removed. On an archive several replicas share (PassLocker) the
// pass runs under the store's compaction lock, held from the first batch
// to the last: when another replica holds it, the pass is skipped (result
// "skipped" in the metrics), since that replica's pass covers every
// document.
func CompactAll(ctx context.Context, a Archive, opts CompactionOptions) CompactResult {
	var total CompactResult
	start := time.Now()
	c := Compacter(a)
	if l, ok := a.(PassLocker); ok {
		pass, release, held, err := l.LockPass(ctx)
		switch {
		case err != nil:
			return endPass(ctx, opts, total, "", start, fmt.Errorf("take the compaction lock: %w", err))
		case !held:
			return endPass(ctx, opts, total, "", start, ErrCompactionBusy)
		}
		defer release()
		c = pass
	}
	cursor := ""
	batch := opts.Batch
	if batch <= 0 {
		batch = 100
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	err := func() error {
		for {
			res, err := c.Compact(ctx, opts.Retention, now(), cursor, batch)
			total.Docs += res.Docs
			total.Ops += res.Ops
			total.Snapshots += res.Snapshots
			if err != nil {
				return err
			}
			if !res.More {
				return nil
			}
			cursor = res.Cursor
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(opts.Pause):
			}
		}
	}()
	return endPass(ctx, opts, total, cursor, start, err)
}

// endPass records and logs how a pass ended: stopped by ctx (counted as
// nothing but what it removed), skipped because another replica holds the
// compaction lock, failed, or ok.
func endPass(ctx context.Context, opts CompactionOptions, total CompactResult, cursor string, start time.Time, err error) CompactResult {
	took := time.Since(start)
	switch {
	case ctx.Err() != nil:
		// Stopped, not failed (shutdown): count what was removed only.
		opts.Metrics.pass(total, took, "", time.Now())
		return total
	case errors.Is(err, ErrCompactionBusy):
		// Another replica holds the lock, so it compacts every document;
		// this is neither a success here nor a failure.
		opts.Metrics.pass(total, took, "skipped", time.Now())
		if opts.Logger != nil {
			opts.Logger.Debug("history compaction skipped: another replica is compacting")
		}
		return total
	case err != nil:
		opts.Metrics.pass(total, took, "error", time.Now())
	default:
		opts.Metrics.pass(total, took, "ok", time.Now())
	}
	switch {
	case err != nil && opts.Logger != nil:
		opts.Logger.Warn("history compaction failed; retrying next pass", "after", cursor, "err", err)
	case total.Ops > 0 && opts.Logger != nil:
		opts.Logger.Info("history compacted", "docs", total.Docs, "ops", total.Ops, "snapshots", total.Snapshots, "took", took)
	}
	return total
}

// Limit returns the newest revision ret lets compaction remove from a
// document whose head is head; young is the oldest stored revision inside
// the Age window (0 when there is none). Below 1, nothing may go.
func (r Retention) Limit(head, young int64) int64 {
	limit := head
	if r.Revisions > 0 {
		limit = min(limit, head-r.Revisions)
	}
	if r.Age > 0 && young > 0 {
		limit = min(limit, young-1)
	}
	return limit
}

// CutTx is what a durable store offers one compaction transaction on one
// document; CompactDoc decides with it where history is cut. The store
// keeps the document from being deleted (and recreated) while the
// transaction runs, so that a snapshot built from its operations is stored
// for the same document.
type CutTx interface {
	// Head is the stored head revision; ok is false when the document is
	// not stored (deleted meanwhile).
	Head(ctx context.Context) (head int64, ok bool, err error)
	// Young is the oldest stored revision whose operation is from since or
	// later (0: none).
	Young(ctx context.Context, since time.Time) (int64, error)
	// First is the oldest stored operation's revision (0: none).
	First(ctx context.Context) (int64, error)
	// SnapshotIn is the newest stored snapshot (periodic, or the text the
	// document's own row holds) with lo <= Rev <= hi; ok is false when
	// there is none.
	SnapshotIn(ctx context.Context, lo, hi int64) (snap Snapshot, ok bool, err error)
	// NextSnapshot is the oldest periodic snapshot's revision after rev
	// (0: none).
	NextSnapshot(ctx context.Context, after int64) (int64, error)
	// Ops are the stored entries with from < Rev <= to, in order.
	Ops(ctx context.Context, from, to int64) ([]Entry, error)
	// PutSnapshot stores a periodic snapshot (one already there at its
	// revision is kept).
	PutSnapshot(ctx context.Context, snap Snapshot) error
	// DeleteOps removes the operations up to rev and says how many.
	DeleteOps(ctx context.Context, upto int64) (int, error)
	// DeleteSnapshots removes the periodic snapshots below rev.
	DeleteSnapshots(ctx context.Context, below int64) (int, error)
}

// StepBounder is implemented by a CutTx whose store bounds the bytes one
// step removes as well as the operations: a store whose writes wait for
// compaction's transaction (SQLite, one connection) must not delete tens of
// megabytes of large operations in one go.
type StepBounder interface {
	// StepEnd returns the revision, from first to upto, up to which one
	// step removes operations: first at least, so that every step makes
	// progress.
	StepEnd(ctx context.Context, first, upto int64) (int64, error)
}

// CompactDoc is one bounded step of compacting a document: the caller runs
// it in one transaction, commits, and calls again while more is true.
//
// History is cut at the newest revision the retention lets go (the cut):
// the first step stores a snapshot at the cut, built from the newest
// snapshot below it and the operations in between (at most a snapshot
// interval of them), and every step removes up to perTx operations from
// the oldest on. The first step also removes the snapshots below the cut:
// the revisions before it are unreadable from then on. So once a pass is
// done only the retained window of operations is left, with one snapshot
// where it starts. An interrupted cut is found again by its snapshot (the
// oldest one, when none is right before the oldest operation) and finished
// first, whatever the retention says by then.
func CompactDoc(ctx context.Context, tx CutTx, ret Retention, now time.Time, perTx int64) (ops, snaps int, more bool, err error) {
	head, ok, err := tx.Head(ctx)
	if err != nil || !ok {
		return 0, 0, false, err
	}
	first, err := tx.First(ctx)
	if err != nil || first == 0 {
		return 0, 0, false, err
	}
	cut := int64(0)
	if first > 1 {
		// The history must start right after a snapshot; if it does not,
		// a cut was interrupted: finish it.
		if _, ok, err := tx.SnapshotIn(ctx, first-1, first-1); err != nil {
			return 0, 0, false, err
		} else if !ok {
			if cut, err = tx.NextSnapshot(ctx, first-1); err != nil {
				return 0, 0, false, err
			}
			if cut == 0 {
				return 0, 0, false, fmt.Errorf("history starts at %d with no snapshot before it or cut to finish", first)
			}
		}
	}
	if cut == 0 {
		var young int64
		if ret.Age > 0 {
			if young, err = tx.Young(ctx, now.Add(-ret.Age)); err != nil {
				return 0, 0, false, err
			}
		}
		cut = ret.Limit(head, young)
		if cut < first {
			return 0, 0, false, nil // nothing old enough
		}
		if err := putCutSnapshot(ctx, tx, first, cut); err != nil {
			return 0, 0, false, err
		}
		// The snapshots below go with it, so that the cut's is the oldest
		// one left: that is how an interrupted cut is found again.
		if snaps, err = tx.DeleteSnapshots(ctx, cut); err != nil {
			return 0, 0, false, err
		}
	}
	upto := cut
	if perTx > 0 && upto-first >= perTx {
		upto, more = first+perTx-1, true
	}
	if b, ok := tx.(StepBounder); ok {
		if upto, err = b.StepEnd(ctx, first, upto); err != nil {
			return 0, 0, false, err
		}
		more = upto < cut
	}
	if ops, err = tx.DeleteOps(ctx, upto); err != nil {
		return 0, 0, false, err
	}
	return ops, snaps, more, nil
}

// putCutSnapshot stores the text at cut as a periodic snapshot, from the
// newest snapshot at or after first-1 (where the stored history starts)
// and the operations after it.
func putCutSnapshot(ctx context.Context, tx CutTx, first, cut int64) error {
	base, ok, err := tx.SnapshotIn(ctx, first-1, cut)
	if err != nil {
		return err
	}
	if !ok {
		if first > 1 {
			return fmt.Errorf("no snapshot between %d and the cut at %d", first-1, cut)
		}
		base = Snapshot{} // the whole history is there: start empty
	}
	entries, err := tx.Ops(ctx, base.Rev, cut)
	if err != nil {
		return err
	}
	snap, err := Replay(base, entries, cut)
	if err != nil {
		return fmt.Errorf("text at the cut %d: %w", cut, err)
	}
	return tx.PutSnapshot(ctx, snap)
}

// Replay returns base advanced by entries, which must be its revisions
// base.Rev+1 up to to, without a gap.
func Replay(base Snapshot, entries []Entry, to int64) (Snapshot, error) {
	text := rope.New(base.Text)
	rev := base.Rev
	for _, e := range entries {
		if e.Rev != rev+1 {
			return Snapshot{}, fmt.Errorf("revision %d follows %d", e.Rev, rev)
		}
		if err := text.Apply(e.Op); err != nil {
			return Snapshot{}, fmt.Errorf("apply revision %d: %w", e.Rev, err)
		}
		rev = e.Rev
	}
	if rev != to {
		return Snapshot{}, fmt.Errorf("operations from %d reach %d, not %d", base.Rev, rev, to)
	}
	return Snapshot{Doc: base.Doc, Rev: rev, Text: text.String()}, nil
}

// CompactDocs runs a store's compaction of each of ids to the end, step
// after step (each step one transaction), and adds up what was removed.
func CompactDocs(ctx context.Context, ids []string, step func(ctx context.Context, doc string) (ops, snaps int, more bool, err error)) (CompactResult, error) {
	var res CompactResult
	for _, id := range ids {
		for {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			ops, snaps, more, err := step(ctx, id)
			res.Ops += ops
			res.Snapshots += snaps
			if err != nil {
				return res, fmt.Errorf("compact %q: %w", id, err)
			}
			if !more {
				break
			}
		}
		res.Docs++
		res.Cursor = id
	}
	return res, nil
}
