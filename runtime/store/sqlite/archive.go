package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/tandem-dev/tandem/runtime/store"
)

var _ store.Archive = (*Store)(nil)

// compactOpsPerTx bounds the operations one compaction transaction
// removes by default, so that a document with a long history is cut in
// steps and the writes that acknowledge edits (which wait for the same
// connection) are never held for long.
const compactOpsPerTx = 2000

// compactBytesPerTx bounds the bytes of operations one compaction
// transaction removes, whatever their number: deleting large operations
// (pasted text) frees many overflow pages, and a write waits for it.
const compactBytesPerTx = 1 << 20

// vacuumPages is how many free pages (4 KiB each) one incremental vacuum
// step hands back to the file system, and vacuumSteps how many steps one
// compaction call takes at most. Each step holds the connection that
// acknowledged writes wait for, so it is kept short, and the lock is let
// go between steps so that waiting writes go first.
const (
	vacuumPages = 256
	vacuumSteps = 32
)

// SnapshotAt implements store.Archive. The documents row is a snapshot
// too, so it is considered alongside the periodic ones.
func (s *Store) SnapshotAt(ctx context.Context, doc string, rev int64) (store.Snapshot, error) {
	snap := store.Snapshot{Doc: doc}
	err := s.db.QueryRowContext(ctx, `
		SELECT rev, text FROM (
			SELECT rev, text FROM snapshots WHERE doc = ? AND rev <= ?
			UNION ALL
			SELECT rev, text FROM documents WHERE id = ? AND rev <= ? AND rev > 0
		) ORDER BY rev DESC LIMIT 1`, doc, rev, doc, rev).Scan(&snap.Rev, &snap.Text)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return store.Snapshot{}, fmt.Errorf("snapshot of %q at %d: %w", doc, rev, err)
	}
	if snap.Rev == rev {
		return snap, nil
	}
	// The operations after the snapshot must all be there: the documents
	// row may be older than where compaction cut.
	var first sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT min(rev) FROM operations WHERE doc = ?`, doc).Scan(&first); err != nil {
		return store.Snapshot{}, fmt.Errorf("first operation of %q: %w", doc, err)
	}
	if !first.Valid {
		// No operations at all: a document never written, or one whose
		// history compaction cut at its head (the snapshot there is all
		// that is left, and it is after rev).
		var cut bool
		if err := s.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM snapshots WHERE doc = ?)`, doc).Scan(&cut); err != nil {
			return store.Snapshot{}, fmt.Errorf("snapshots of %q: %w", doc, err)
		}
		if cut {
			return store.Snapshot{}, fmt.Errorf("%q at %d (history cut at its head): %w", doc, rev, store.ErrCompacted)
		}
	}
	if first.Valid && first.Int64 > snap.Rev+1 {
		return store.Snapshot{}, fmt.Errorf("%q at %d (history starts after %d): %w", doc, rev, first.Int64-1, store.ErrCompacted)
	}
	return snap, nil
}

// Oldest implements store.Archive.
func (s *Store) Oldest(ctx context.Context, doc string) (store.Snapshot, error) {
	var first sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT min(rev) FROM operations WHERE doc = ?`, doc).Scan(&first); err != nil {
		return store.Snapshot{}, fmt.Errorf("first operation of %q: %w", doc, err)
	}
	switch {
	case !first.Valid:
		// No operations kept at all: the newest snapshot is all there is.
		return s.Load(ctx, doc)
	case first.Int64 <= 1:
		return store.Snapshot{Doc: doc}, nil
	}
	return s.SnapshotAt(ctx, doc, first.Int64-1)
}

// HistoryStart implements store.Archive: right before the oldest stored
// operation, or, when none is left, at the newest snapshot (a cut at the
// head), or 0.
func (s *Store) HistoryStart(ctx context.Context, doc string) (int64, error) {
	var start int64
	if err := s.db.QueryRowContext(ctx, `
		SELECT coalesce(
			(SELECT min(rev) - 1 FROM operations WHERE doc = ?1),
			(SELECT max(rev) FROM snapshots WHERE doc = ?1),
			0)`, doc).Scan(&start); err != nil {
		return 0, fmt.Errorf("history start of %q: %w", doc, err)
	}
	return start, nil
}

// List implements store.Archive.
func (s *Store) List(ctx context.Context, prefix, after string, limit int) ([]store.DocInfo, error) {
	rows, err := s.db.QueryContext(ctx, `
		SELECT id, head, size, updated FROM documents
		WHERE id > ? AND id >= ? AND substr(id, 1, ?) = ? AND head > 0
		ORDER BY id LIMIT ?`, after, prefix, len(prefix), prefix, limit)
	if err != nil {
		return nil, fmt.Errorf("list documents: %w", err)
	}
	defer rows.Close()
	var out []store.DocInfo
	for rows.Next() {
		var d store.DocInfo
		var ms int64
		if err := rows.Scan(&d.ID, &d.Rev, &d.Size, &ms); err != nil {
			return nil, fmt.Errorf("list documents: %w", err)
		}
		d.Updated = time.UnixMilli(ms).UTC()
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list documents: %w", err)
	}
	return out, nil
}

// Delete implements store.Archive.
func (s *Store) Delete(ctx context.Context, doc string) error {
	if err := s.deleteDoc(ctx, doc); err != nil {
		return err
	}
	return s.vacuum(ctx)
}

func (s *Store) deleteDoc(ctx context.Context, doc string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.recent, doc)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin delete of %q: %w", doc, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	for _, q := range []string{
		`DELETE FROM operations WHERE doc = ?`,
		`DELETE FROM snapshots WHERE doc = ?`,
		`DELETE FROM documents WHERE id = ?`,
	} {
		if _, err := tx.ExecContext(ctx, q, doc); err != nil {
			return fmt.Errorf("delete %q: %w", doc, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit delete of %q: %w", doc, err)
	}
	return nil
}

// Compact implements store.Archive: store.CompactDoc cuts each document's
// history, one short transaction per step under s.mu (so no Write sees a
// half-cut document, and no step holds the connection long).
func (s *Store) Compact(ctx context.Context, ret store.Retention, now time.Time, cursor string, batch int) (store.CompactResult, error) {
	res := store.CompactResult{Cursor: cursor}
	if ret.Keeps() {
		return res, nil
	}
	var docs []string
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM documents WHERE id > ? ORDER BY id LIMIT ?`, cursor, batch)
	if err != nil {
		return res, fmt.Errorf("compact: list documents: %w", err)
	}
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			rows.Close()
			return res, fmt.Errorf("compact: list documents: %w", err)
		}
		docs = append(docs, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return res, fmt.Errorf("compact: list documents: %w", err)
	}
	res, err = store.CompactDocs(ctx, docs, func(ctx context.Context, doc string) (int, int, bool, error) {
		return s.compactStep(ctx, doc, ret, now)
	})
	if res.Cursor == "" {
		res.Cursor = cursor
	}
	if err != nil {
		return res, err
	}
	res.More = len(docs) == batch
	if !res.More {
		res.Cursor = ""
	}
	return res, s.vacuum(ctx)
}

func (s *Store) compactStep(ctx context.Context, doc string, ret store.Retention, now time.Time) (ops, snaps int, more bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, false, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	ops, snaps, more, err = store.CompactDoc(ctx, cutTx{tx: tx, doc: doc}, ret, now, s.compactOps)
	if err != nil {
		return 0, 0, false, err
	}
	if err := tx.Commit(); err != nil {
		return 0, 0, false, fmt.Errorf("commit: %w", err)
	}
	// s.recent stays right: compaction changes no revision's text.
	return ops, snaps, more, nil
}

// cutTx is store.CutTx on one SQLite transaction.
type cutTx struct {
	tx  *sql.Tx
	doc string
}

func (c cutTx) Head(ctx context.Context) (int64, bool, error) {
	var head int64
	err := c.tx.QueryRowContext(ctx, `SELECT head FROM documents WHERE id = ?`, c.doc).Scan(&head)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("head: %w", err)
	}
	return head, true, nil
}

// StepEnd implements store.StepBounder: the newest revision up to which
// the operations from first on take at most compactBytesPerTx. It reads
// the operations' sizes in order and stops at the budget, so it reads
// about as much as the step then deletes.
func (c cutTx) StepEnd(ctx context.Context, first, upto int64) (int64, error) {
	rows, err := c.tx.QueryContext(ctx, `SELECT rev, octet_length(op) FROM operations WHERE doc = ? AND rev BETWEEN ? AND ? ORDER BY rev`, c.doc, first, upto)
	if err != nil {
		return 0, fmt.Errorf("bound the step: %w", err)
	}
	defer rows.Close()
	end, total := min(first, upto), int64(0)
	for rows.Next() {
		var rev, size int64
		if err := rows.Scan(&rev, &size); err != nil {
			return 0, fmt.Errorf("bound the step: %w", err)
		}
		if total += size; total > compactBytesPerTx && rev > first {
			break
		}
		end = rev
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("bound the step: %w", err)
	}
	return end, nil
}

func (c cutTx) revAgg(ctx context.Context, what, query string, args ...any) (int64, error) {
	var rev sql.NullInt64
	if err := c.tx.QueryRowContext(ctx, query, args...).Scan(&rev); err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	return rev.Int64, nil
}

func (c cutTx) Young(ctx context.Context, since time.Time) (int64, error) {
	return c.revAgg(ctx, "operations in the window", `SELECT min(rev) FROM operations WHERE doc = ? AND time >= ?`, c.doc, since.UnixNano())
}

func (c cutTx) First(ctx context.Context) (int64, error) {
	return c.revAgg(ctx, "oldest operation", `SELECT min(rev) FROM operations WHERE doc = ?`, c.doc)
}

func (c cutTx) NextSnapshot(ctx context.Context, after int64) (int64, error) {
	return c.revAgg(ctx, "next snapshot", `SELECT min(rev) FROM snapshots WHERE doc = ? AND rev > ?`, c.doc, after)
}

func (c cutTx) SnapshotIn(ctx context.Context, lo, hi int64) (store.Snapshot, bool, error) {
	snap := store.Snapshot{Doc: c.doc}
	err := c.tx.QueryRowContext(ctx, `
		SELECT rev, text FROM (
			SELECT rev, text FROM snapshots WHERE doc = ?1 AND rev BETWEEN ?2 AND ?3
			UNION ALL
			SELECT rev, text FROM documents WHERE id = ?1 AND rev BETWEEN ?2 AND ?3 AND rev > 0
		) ORDER BY rev DESC LIMIT 1`, c.doc, lo, hi).Scan(&snap.Rev, &snap.Text)
	if errors.Is(err, sql.ErrNoRows) {
		return snap, false, nil
	}
	if err != nil {
		return snap, false, fmt.Errorf("snapshot in %d..%d: %w", lo, hi, err)
	}
	return snap, true, nil
}

func (c cutTx) Ops(ctx context.Context, from, to int64) ([]store.Entry, error) {
	return readOps(ctx, c.tx, c.doc, from, to)
}

func (c cutTx) PutSnapshot(ctx context.Context, snap store.Snapshot) error {
	if _, err := c.tx.ExecContext(ctx, insertSnapSQL, c.doc, snap.Rev, snap.Text); err != nil {
		return fmt.Errorf("store snapshot at %d: %w", snap.Rev, err)
	}
	return nil
}

func (c cutTx) exec(ctx context.Context, what, query string, args ...any) (int, error) {
	r, err := c.tx.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	n, _ := r.RowsAffected()
	return int(n), nil
}

func (c cutTx) DeleteOps(ctx context.Context, upto int64) (int, error) {
	return c.exec(ctx, "remove operations", `DELETE FROM operations WHERE doc = ? AND rev <= ?`, c.doc, upto)
}

func (c cutTx) DeleteSnapshots(ctx context.Context, below int64) (int, error) {
	return c.exec(ctx, "remove snapshots", `DELETE FROM snapshots WHERE doc = ? AND rev < ?`, c.doc, below)
}

// vacuum hands up to vacuumSteps × vacuumPages free pages back to the
// file system, vacuumPages at a time, letting writes in between.
func (s *Store) vacuum(ctx context.Context) error {
	for range vacuumSteps {
		free, err := s.vacuumStep(ctx)
		if err != nil {
			return err
		}
		if free == 0 {
			return nil
		}
	}
	return nil
}

// vacuumStep runs one incremental vacuum of up to vacuumPages pages and
// returns how many free pages are left.
func (s *Store) vacuumStep(ctx context.Context) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var free int64
	if err := s.db.QueryRowContext(ctx, `PRAGMA freelist_count`).Scan(&free); err != nil {
		return 0, fmt.Errorf("incremental vacuum: free pages: %w", err)
	}
	if free == 0 {
		return 0, nil
	}
	// The pragma returns a row per page it frees; the rows must be read
	// for it to run to the end.
	rows, err := s.db.QueryContext(ctx, fmt.Sprintf(`PRAGMA incremental_vacuum(%d)`, vacuumPages))
	if err != nil {
		return 0, fmt.Errorf("incremental vacuum: %w", err)
	}
	for rows.Next() {
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("incremental vacuum: %w", err)
	}
	return max(free-vacuumPages, 0), nil
}

// FreePages is how many pages of the file are free (PRAGMA
// freelist_count): space compaction removed that the incremental vacuum
// has not handed back to the file system yet.
func (s *Store) FreePages(ctx context.Context) (int64, error) {
	var n int64
	if err := s.db.QueryRowContext(ctx, `PRAGMA freelist_count`).Scan(&n); err != nil {
		return 0, fmt.Errorf("free pages: %w", err)
	}
	return n, nil
}
