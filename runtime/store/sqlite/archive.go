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
// removes, so that a document with a long history is cut in steps and the
// writes that acknowledge edits (which wait for the same connection) are
// never held for long.
const compactOpsPerTx = 2000

// vacuumPages is how many free pages one compaction call hands back to the
// file system (incremental vacuum); 4 KiB each.
const vacuumPages = 2048

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

// Compact implements store.Archive. A document's history is cut at a
// periodic snapshot B: operations up to B and snapshots below it go. Load
// starts from the newest of the documents row and the snapshots, so it
// never needs an operation that was removed.
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
	for _, d := range docs {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		ops, snaps, err := s.compactDoc(ctx, d, ret, now)
		if err != nil {
			return res, err
		}
		res.Docs++
		res.Ops += ops
		res.Snapshots += snaps
		res.Cursor = d
	}
	res.More = len(docs) == batch
	if !res.More {
		res.Cursor = ""
	}
	return res, s.vacuum(ctx)
}

// compactDoc cuts one document's history, at most compactOpsPerTx
// operations per transaction.
func (s *Store) compactDoc(ctx context.Context, doc string, ret store.Retention, now time.Time) (ops, snaps int, err error) {
	for {
		n, m, more, err := s.compactStep(ctx, doc, ret, now)
		ops += n
		snaps += m
		if err != nil || !more {
			return ops, snaps, err
		}
	}
}

func (s *Store) compactStep(ctx context.Context, doc string, ret store.Retention, now time.Time) (ops, snaps int, more bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, false, fmt.Errorf("compact %q: begin: %w", doc, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	var head int64
	if err := tx.QueryRowContext(ctx, `SELECT head FROM documents WHERE id = ?`, doc).Scan(&head); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return 0, 0, false, nil // deleted meanwhile
		}
		return 0, 0, false, fmt.Errorf("compact %q: %w", doc, err)
	}
	limit := head
	if ret.Revisions > 0 {
		limit = min(limit, head-ret.Revisions)
	}
	if ret.Age > 0 {
		// Everything up to the cut must be older than the window.
		var young sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT min(rev) FROM operations WHERE doc = ? AND time >= ?`,
			doc, now.Add(-ret.Age).UnixNano()).Scan(&young); err != nil {
			return 0, 0, false, fmt.Errorf("compact %q: %w", doc, err)
		}
		if young.Valid {
			limit = min(limit, young.Int64-1)
		}
	}
	var cut sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT max(rev) FROM snapshots WHERE doc = ? AND rev <= ?`, doc, limit).Scan(&cut); err != nil {
		return 0, 0, false, fmt.Errorf("compact %q: %w", doc, err)
	}
	if !cut.Valid || cut.Int64 <= 0 {
		return 0, 0, false, nil
	}
	var first sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT min(rev) FROM operations WHERE doc = ?`, doc).Scan(&first); err != nil {
		return 0, 0, false, fmt.Errorf("compact %q: %w", doc, err)
	}
	upto := cut.Int64
	if first.Valid && upto-first.Int64 >= compactOpsPerTx {
		upto = first.Int64 + compactOpsPerTx - 1
		more = true
	}
	r, err := tx.ExecContext(ctx, `DELETE FROM operations WHERE doc = ? AND rev <= ?`, doc, upto)
	if err != nil {
		return 0, 0, false, fmt.Errorf("compact %q: remove operations: %w", doc, err)
	}
	n, _ := r.RowsAffected()
	var m int64
	if !more {
		r, err = tx.ExecContext(ctx, `DELETE FROM snapshots WHERE doc = ? AND rev < ?`, doc, cut.Int64)
		if err != nil {
			return 0, 0, false, fmt.Errorf("compact %q: remove snapshots: %w", doc, err)
		}
		m, _ = r.RowsAffected()
	}
	if err := tx.Commit(); err != nil {
		return 0, 0, false, fmt.Errorf("compact %q: commit: %w", doc, err)
	}
	return int(n), int(m), more, nil
}

// vacuum hands up to vacuumPages free pages back to the file system.
func (s *Store) vacuum(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.db.ExecContext(ctx, fmt.Sprintf(`PRAGMA incremental_vacuum(%d)`, vacuumPages)); err != nil {
		return fmt.Errorf("incremental vacuum: %w", err)
	}
	return nil
}
