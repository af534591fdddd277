package store

import (
	"context"
	"log/slog"
	"time"
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
}

// RunCompaction compacts a's history by ret in the background until ctx
// ends: a pass over every document every opts.Every, in batches. A failed
// batch is logged and the pass starts over at the next tick; compaction is
// idempotent, so an interrupted pass loses nothing. It returns at once when
// the retention keeps everything.
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
// what it removed.
func CompactAll(ctx context.Context, a Archive, opts CompactionOptions) CompactResult {
	var total CompactResult
	cursor := ""
	start := time.Now()
	batch := opts.Batch
	if batch <= 0 {
		batch = 100
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	for {
		res, err := a.Compact(ctx, opts.Retention, now(), cursor, batch)
		total.Docs += res.Docs
		total.Ops += res.Ops
		total.Snapshots += res.Snapshots
		if err != nil {
			if ctx.Err() == nil && opts.Logger != nil {
				opts.Logger.Warn("history compaction failed; retrying next pass", "after", cursor, "err", err)
			}
			return total
		}
		if !res.More {
			break
		}
		cursor = res.Cursor
		select {
		case <-ctx.Done():
			return total
		case <-time.After(opts.Pause):
		}
	}
	if total.Ops > 0 && opts.Logger != nil {
		opts.Logger.Info("history compacted", "docs", total.Docs, "ops", total.Ops, "snapshots", total.Snapshots, "took", time.Since(start))
	}
	return total
}
