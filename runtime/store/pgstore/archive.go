package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tandem-dev/tandem/runtime/store"
)

var _ store.Archive = (*Store)(nil)

// compactionLockID is the advisory lock a replica holds while it runs a
// compaction batch, so that the replicas of a cluster do not compact the
// same documents at once. The value must never change.
const compactionLockID int64 = 0x74616e64656d02 // "tandem" + 2

// compactOpsPerTx bounds the operations one compaction transaction
// removes: a long history is cut in steps, each a short transaction that
// never holds locks a flush needs.
const compactOpsPerTx = 5000

// SnapshotAt implements store.Archive; the documents row (the text at the
// stored head) counts as a snapshot too.
func (s *Store) SnapshotAt(ctx context.Context, doc string, rev int64) (store.Snapshot, error) {
	snap := store.Snapshot{Doc: doc}
	err := s.pool.QueryRow(ctx, `
		SELECT rev, text FROM (
			SELECT rev, text FROM snapshots WHERE doc_id = $1 AND rev <= $2
			UNION ALL
			SELECT rev, text FROM documents WHERE id = $1 AND rev <= $2 AND rev > 0
		) AS s ORDER BY rev DESC LIMIT 1`, doc, rev).Scan(&snap.Rev, &snap.Text)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return store.Snapshot{}, fmt.Errorf("snapshot of doc %q at %d: %w", doc, rev, err)
	}
	if snap.Rev > 0 || rev == 0 {
		return snap, nil
	}
	var first *int64
	if err := s.pool.QueryRow(ctx, `SELECT min(rev) FROM operations WHERE doc_id = $1`, doc).Scan(&first); err != nil {
		return store.Snapshot{}, fmt.Errorf("first operation of doc %q: %w", doc, err)
	}
	if first != nil && *first > 1 {
		return store.Snapshot{}, fmt.Errorf("doc %q at %d (history starts after %d): %w", doc, rev, *first-1, store.ErrCompacted)
	}
	return snap, nil
}

// Oldest implements store.Archive.
func (s *Store) Oldest(ctx context.Context, doc string) (store.Snapshot, error) {
	var first *int64
	if err := s.pool.QueryRow(ctx, `SELECT min(rev) FROM operations WHERE doc_id = $1`, doc).Scan(&first); err != nil {
		return store.Snapshot{}, fmt.Errorf("first operation of doc %q: %w", doc, err)
	}
	switch {
	case first == nil:
		return s.Load(ctx, doc)
	case *first <= 1:
		return store.Snapshot{Doc: doc}, nil
	}
	return s.SnapshotAt(ctx, doc, *first-1)
}

// List implements store.Archive. Ids compare bytewise (COLLATE "C"),
// whatever the database's collation, so cursors are stable.
func (s *Store) List(ctx context.Context, prefix, after string, limit int) ([]store.DocInfo, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT id, rev, size, updated_at FROM documents
		WHERE id COLLATE "C" > $1 AND starts_with(id, $2) AND rev > 0
		ORDER BY id COLLATE "C" LIMIT $3`, after, prefix, limit)
	if err != nil {
		return nil, fmt.Errorf("list documents: %w", err)
	}
	defer rows.Close()
	var out []store.DocInfo
	for rows.Next() {
		var d store.DocInfo
		if err := rows.Scan(&d.ID, &d.Rev, &d.Size, &d.Updated); err != nil {
			return nil, fmt.Errorf("list documents: %w", err)
		}
		d.Updated = d.Updated.UTC()
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list documents: %w", err)
	}
	return out, nil
}

// Delete implements store.Archive: operations and snapshots go with the
// document's row (ON DELETE CASCADE).
func (s *Store) Delete(ctx context.Context, doc string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM documents WHERE id = $1`, doc); err != nil {
		return fmt.Errorf("delete doc %q: %w", doc, err)
	}
	return nil
}

// Compact implements store.Archive. The batch runs under a session
// advisory lock: when another replica holds it, this call does nothing
// and reports no more work, and the next round tries again. Everything in
// PostgreSQL is persisted by definition, and the documents row holds the
// current text, so cutting at a periodic snapshot never loses the text or
// an unflushed edit (those are still in Redis).
func (s *Store) Compact(ctx context.Context, ret store.Retention, now time.Time, cursor string, batch int) (store.CompactResult, error) {
	res := store.CompactResult{Cursor: cursor}
	if ret.Keeps() {
		return res, nil
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return res, fmt.Errorf("compact: acquire connection: %w", err)
	}
	defer conn.Release()
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, compactionLockID).Scan(&locked); err != nil {
		return res, fmt.Errorf("compact: take lock: %w", err)
	}
	if !locked {
		res.Cursor = ""
		return res, nil
	}
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, compactionLockID)
	}()
	rows, err := conn.Query(ctx, `SELECT id FROM documents WHERE id COLLATE "C" > $1 ORDER BY id COLLATE "C" LIMIT $2`, cursor, batch)
	if err != nil {
		return res, fmt.Errorf("compact: list documents: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return res, fmt.Errorf("compact: list documents: %w", err)
	}
	for _, id := range ids {
		for {
			ops, snaps, more, err := compactStep(ctx, conn.Conn(), id, ret, now)
			if err != nil {
				return res, err
			}
			res.Ops += ops
			res.Snapshots += snaps
			if !more {
				break
			}
		}
		res.Docs++
		res.Cursor = id
	}
	res.More = len(ids) == batch
	if !res.More {
		res.Cursor = ""
	}
	return res, nil
}

// compactStep removes up to compactOpsPerTx operations of doc below its
// cut, and once the cut is reached the snapshots below it.
func compactStep(ctx context.Context, conn *pgx.Conn, doc string, ret store.Retention, now time.Time) (ops, snaps int, more bool, err error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, 0, false, fmt.Errorf("compact doc %q: begin: %w", doc, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	var head int64
	if err := tx.QueryRow(ctx, `SELECT rev FROM documents WHERE id = $1`, doc).Scan(&head); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, 0, false, nil // deleted meanwhile
		}
		return 0, 0, false, fmt.Errorf("compact doc %q: %w", doc, err)
	}
	limit := head
	if ret.Revisions > 0 {
		limit = min(limit, head-ret.Revisions)
	}
	if ret.Age > 0 {
		var young *int64
		if err := tx.QueryRow(ctx, `SELECT min(rev) FROM operations WHERE doc_id = $1 AND created_at >= $2`,
			doc, now.Add(-ret.Age)).Scan(&young); err != nil {
			return 0, 0, false, fmt.Errorf("compact doc %q: %w", doc, err)
		}
		if young != nil {
			limit = min(limit, *young-1)
		}
	}
	var cut, first *int64
	if err := tx.QueryRow(ctx, `SELECT (SELECT max(rev) FROM snapshots WHERE doc_id = $1 AND rev <= $2),
		(SELECT min(rev) FROM operations WHERE doc_id = $1)`, doc, limit).Scan(&cut, &first); err != nil {
		return 0, 0, false, fmt.Errorf("compact doc %q: %w", doc, err)
	}
	if cut == nil {
		return 0, 0, false, nil
	}
	upto := *cut
	if first != nil && upto-*first >= compactOpsPerTx {
		upto = *first + compactOpsPerTx - 1
		more = true
	}
	tag, err := tx.Exec(ctx, `DELETE FROM operations WHERE doc_id = $1 AND rev <= $2`, doc, upto)
	if err != nil {
		return 0, 0, false, fmt.Errorf("compact doc %q: remove operations: %w", doc, err)
	}
	ops = int(tag.RowsAffected())
	if !more {
		tag, err = tx.Exec(ctx, `DELETE FROM snapshots WHERE doc_id = $1 AND rev < $2`, doc, *cut)
		if err != nil {
			return 0, 0, false, fmt.Errorf("compact doc %q: remove snapshots: %w", doc, err)
		}
		snaps = int(tag.RowsAffected())
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, 0, false, fmt.Errorf("compact doc %q: commit: %w", doc, err)
	}
	return ops, snaps, more, nil
}
