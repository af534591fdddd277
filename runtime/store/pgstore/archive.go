package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tandem-dev/tandem/runtime/store"
)

var (
	_ store.Archive    = (*Store)(nil)
	_ store.PassLocker = (*Store)(nil)
)

// compactionLockID is the advisory lock a replica holds while it runs a
// compaction pass, so that one replica of a cluster compacts at a time and
// makes a whole pass. The value must never change.
const compactionLockID int64 = 0x74616e64656d02 // "tandem" + 2

// compactOpsPerTx bounds the operations one compaction transaction
// removes by default: a long history is cut in steps, each a short transaction that
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
	if snap.Rev == rev {
		return snap, nil
	}
	// The operations after the snapshot must all be there: a cut that
	// was interrupted leaves older snapshots behind for a while.
	var first *int64
	if err := s.pool.QueryRow(ctx, `SELECT min(rev) FROM operations WHERE doc_id = $1`, doc).Scan(&first); err != nil {
		return store.Snapshot{}, fmt.Errorf("first operation of doc %q: %w", doc, err)
	}
	if first == nil {
		// No operations at all: a document never written, or one whose
		// history compaction cut at its head (the snapshot there is all
		// that is left, and it is after rev).
		var cut bool
		if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM snapshots WHERE doc_id = $1)`, doc).Scan(&cut); err != nil {
			return store.Snapshot{}, fmt.Errorf("snapshots of doc %q: %w", doc, err)
		}
		if cut {
			return store.Snapshot{}, fmt.Errorf("doc %q at %d (history cut at its head): %w", doc, rev, store.ErrCompacted)
		}
	}
	if first != nil && *first > snap.Rev+1 {
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

// HistoryStart implements store.Archive: right before the oldest stored
// operation, or, when none is left, at the newest snapshot (a cut at the
// head), or 0.
func (s *Store) HistoryStart(ctx context.Context, doc string) (int64, error) {
	var start int64
	if err := s.pool.QueryRow(ctx, `
		SELECT coalesce(
			(SELECT min(rev) - 1 FROM operations WHERE doc_id = $1),
			(SELECT max(rev) FROM snapshots WHERE doc_id = $1),
			0)`, doc).Scan(&start); err != nil {
		return 0, fmt.Errorf("history start of doc %q: %w", doc, err)
	}
	return start, nil
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
// document's row (ON DELETE CASCADE). It takes the document's advisory
// lock first, as WriteChecked does, so a write checked before the delete
// is committed (and removed here) before it.
func (s *Store) Delete(ctx context.Context, doc string) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, docLockSQL, []string{doc}); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		_, err := tx.Exec(ctx, `DELETE FROM documents WHERE id = $1`, doc)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete doc %q: %w", doc, err)
	}
	return nil
}

// Compact implements store.Archive for one batch on its own: it takes
// the compaction advisory lock for the call and returns
// store.ErrCompactionBusy when another session holds it. A background pass
// takes the lock once for all its batches instead (LockPass). Everything
// in PostgreSQL is persisted by definition, and store.CompactDoc stores a
// snapshot at each cut, so cutting never loses the text or an unflushed
// edit (those are still in Redis).
func (s *Store) Compact(ctx context.Context, ret store.Retention, now time.Time, cursor string, batch int) (store.CompactResult, error) {
	if ret.Keeps() {
		return store.CompactResult{Cursor: cursor}, nil
	}
	pass, release, held, err := s.LockPass(ctx)
	if err != nil {
		return store.CompactResult{Cursor: cursor}, fmt.Errorf("compact: %w", err)
	}
	if !held {
		return store.CompactResult{Cursor: cursor}, fmt.Errorf("compact: %w", store.ErrCompactionBusy)
	}
	defer release()
	return pass.Compact(ctx, ret, now, cursor, batch)
}

// LockPass implements store.PassLocker: it takes the compaction advisory
// lock (pg_try_advisory_lock, a session lock) on a connection of its own,
// which the pass keeps, pauses between batches included, until release.
// Advisory locks belong to the session, so the lock cannot outlive the
// connection: if the connection breaks, the lock is gone and so is the
// pass's next batch (an error, and the next pass starts over).
func (s *Store) LockPass(ctx context.Context) (store.Compacter, func(), bool, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, nil, false, fmt.Errorf("acquire a connection for the compaction lock: %w", err)
	}
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, compactionLockID).Scan(&locked); err != nil {
		conn.Release()
		return nil, nil, false, fmt.Errorf("take the compaction lock: %w", err)
	}
	if !locked {
		conn.Release()
		return nil, nil, false, nil
	}
	release := func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, compactionLockID); err != nil {
			// A session that may still hold the lock must not go back to
			// the pool: closing it frees the lock.
			_ = conn.Conn().Close(ctx)
		}
		conn.Release()
	}
	return lockedPass{s: s, conn: conn.Conn()}, release, true, nil
}

// lockedPass compacts on the connection that holds the compaction lock.
type lockedPass struct {
	s    *Store
	conn *pgx.Conn
}

func (p lockedPass) Compact(ctx context.Context, ret store.Retention, now time.Time, cursor string, batch int) (store.CompactResult, error) {
	res := store.CompactResult{Cursor: cursor}
	if ret.Keeps() {
		return res, nil
	}
	rows, err := p.conn.Query(ctx, `SELECT id FROM documents WHERE id COLLATE "C" > $1 ORDER BY id COLLATE "C" LIMIT $2`, cursor, batch)
	if err != nil {
		return res, fmt.Errorf("compact: list documents: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return res, fmt.Errorf("compact: list documents: %w", err)
	}
	res, err = store.CompactDocs(ctx, ids, func(ctx context.Context, doc string) (int, int, bool, error) {
		return p.s.compactStep(ctx, p.conn, doc, ret, now)
	})
	if res.Cursor == "" {
		res.Cursor = cursor
	}
	if err != nil {
		return res, err
	}
	res.More = len(ids) == batch
	if !res.More {
		res.Cursor = ""
	}
	return res, nil
}

// compactStep is one store.CompactDoc step in one transaction. It holds
// the document's row FOR KEY SHARE: a Write (FOR NO KEY UPDATE) goes on
// beside it, a Delete waits for it, so the snapshot it stores at the cut
// is built from and for the same document.
func (s *Store) compactStep(ctx context.Context, conn *pgx.Conn, doc string, ret store.Retention, now time.Time) (ops, snaps int, more bool, err error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, 0, false, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	ops, snaps, more, err = store.CompactDoc(ctx, cutTx{tx: tx, doc: doc}, ret, now, s.compactOps)
	if err != nil {
		return 0, 0, false, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, 0, false, fmt.Errorf("commit: %w", err)
	}
	return ops, snaps, more, nil
}

// cutTx is store.CutTx on one PostgreSQL transaction.
type cutTx struct {
	tx  pgx.Tx
	doc string
}

func (c cutTx) Head(ctx context.Context) (int64, bool, error) {
	var head int64
	err := c.tx.QueryRow(ctx, `SELECT rev FROM documents WHERE id = $1 FOR KEY SHARE`, c.doc).Scan(&head)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("head: %w", err)
	}
	return head, true, nil
}

func (c cutTx) revAgg(ctx context.Context, what, query string, args ...any) (int64, error) {
	var rev *int64
	if err := c.tx.QueryRow(ctx, query, args...).Scan(&rev); err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	if rev == nil {
		return 0, nil
	}
	return *rev, nil
}

func (c cutTx) Young(ctx context.Context, since time.Time) (int64, error) {
	return c.revAgg(ctx, "operations in the window", `SELECT min(rev) FROM operations WHERE doc_id = $1 AND created_at >= $2`, c.doc, since)
}

func (c cutTx) First(ctx context.Context) (int64, error) {
	return c.revAgg(ctx, "oldest operation", `SELECT min(rev) FROM operations WHERE doc_id = $1`, c.doc)
}

func (c cutTx) NextSnapshot(ctx context.Context, after int64) (int64, error) {
	return c.revAgg(ctx, "next snapshot", `SELECT min(rev) FROM snapshots WHERE doc_id = $1 AND rev > $2`, c.doc, after)
}

func (c cutTx) SnapshotIn(ctx context.Context, lo, hi int64) (store.Snapshot, bool, error) {
	snap := store.Snapshot{Doc: c.doc}
	err := c.tx.QueryRow(ctx, `
		SELECT rev, text FROM (
			SELECT rev, text FROM snapshots WHERE doc_id = $1 AND rev BETWEEN $2 AND $3
			UNION ALL
			SELECT rev, text FROM documents WHERE id = $1 AND rev BETWEEN $2 AND $3 AND rev > 0
		) AS s ORDER BY rev DESC LIMIT 1`, c.doc, lo, hi).Scan(&snap.Rev, &snap.Text)
	if errors.Is(err, pgx.ErrNoRows) {
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
	if _, err := c.tx.Exec(ctx, `INSERT INTO snapshots (doc_id, rev, text) VALUES ($1, $2, $3) ON CONFLICT (doc_id, rev) DO NOTHING`,
		c.doc, snap.Rev, snap.Text); err != nil {
		return fmt.Errorf("store snapshot at %d: %w", snap.Rev, err)
	}
	return nil
}

func (c cutTx) DeleteOps(ctx context.Context, upto int64) (int, error) {
	tag, err := c.tx.Exec(ctx, `DELETE FROM operations WHERE doc_id = $1 AND rev <= $2`, c.doc, upto)
	if err != nil {
		return 0, fmt.Errorf("remove operations: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

func (c cutTx) DeleteSnapshots(ctx context.Context, below int64) (int, error) {
	tag, err := c.tx.Exec(ctx, `DELETE FROM snapshots WHERE doc_id = $1 AND rev < $2`, c.doc, below)
	if err != nil {
		return 0, fmt.Errorf("remove snapshots: %w", err)
	}
	return int(tag.RowsAffected()), nil
}
