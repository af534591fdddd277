// Package pgstore is the PostgreSQL implementation of store.Durable: the
// long-term home of every document's snapshot and full operation history in
// the distributed mode.
package pgstore

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/tandem-dev/tandem/runtime/rope"
	"github.com/tandem-dev/tandem/runtime/store"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLockID is the PostgreSQL advisory lock key held while migrations
// run, so replicas starting together apply each migration exactly once.
// The value is arbitrary but must never change.
const migrationLockID int64 = 0x74616e64656d01 // "tandem" + 1

// ErrInvalidBatch marks a Write that can never succeed as given (a gap in a
// document's revisions, or an operation that does not apply to the stored
// snapshot). Retrying the same batch is pointless; callers dead-letter it.
var ErrInvalidBatch = errors.New("pgstore: invalid batch")

// Store implements store.Durable on PostgreSQL.
type Store struct {
	pool *pgxpool.Pool
	// interval is how many revisions apart snapshots are kept.
	interval int64
	// compactOps bounds the operations one compaction step removes.
	compactOps int64
}

var _ store.Durable = (*Store)(nil)

// Ready reports whether PostgreSQL answers a ping.
func (s *Store) Ready(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping postgres: %w", err)
	}
	return nil
}

// Open connects to url, applies the embedded migrations under an advisory
// lock and returns the store.
func Open(ctx context.Context, url string, logger *slog.Logger) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse postgres url: %w", err)
	}
	return OpenConfig(ctx, cfg, logger)
}

// OpenConfig is Open with a parsed configuration (for settings a URL
// cannot carry).
func OpenConfig(ctx context.Context, cfg *pgxpool.Config, logger *slog.Logger) (*Store, error) {
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	if err := Migrate(ctx, pool, logger); err != nil {
		pool.Close()
		return nil, err
	}
	return &Store{pool: pool, interval: store.DefaultSnapshotInterval, compactOps: compactOpsPerTx}, nil
}

// SetSnapshotInterval sets how many revisions apart snapshots are kept
// (default store.DefaultSnapshotInterval). Call it before the first Write.
func (s *Store) SetSnapshotInterval(n int64) {
	if n > 0 {
		s.interval = n
	}
}

// Migrate applies the embedded schema migrations while holding a session
// advisory lock.
func Migrate(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	return migrate(ctx, db, logger)
}

func migrate(ctx context.Context, db *sql.DB, logger *slog.Logger) error {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return fmt.Errorf("open embedded migrations: %w", err)
	}
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(migrationLockID))
	if err != nil {
		return fmt.Errorf("create migration lock: %w", err)
	}
	provider, err := goose.NewProvider(goose.DialectPostgres, db, sub,
		goose.WithSessionLocker(locker),
		goose.WithTableName("tandem_schema_migrations"),
		goose.WithDisableGlobalRegistry(true),
		goose.WithSlog(logger),
	)
	if err != nil {
		return fmt.Errorf("create migration provider: %w", err)
	}
	results, err := provider.Up(ctx)
	if err != nil {
		return fmt.Errorf("apply migrations: %w", err)
	}
	for _, r := range results {
		logger.Info("applied migration", "source", r.Source.Path, "duration", r.Duration)
	}
	return nil
}

// Ping reports whether PostgreSQL answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping postgres: %w", err)
	}
	return nil
}

// Pool exposes the connection pool for tests and tooling.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close releases all connections.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// Load returns the latest snapshot of doc (empty at revision 0 if unknown).
func (s *Store) Load(ctx context.Context, doc string) (store.Snapshot, error) {
	snap := store.Snapshot{Doc: doc}
	err := s.pool.QueryRow(ctx, `SELECT text, rev FROM documents WHERE id = $1`, doc).Scan(&snap.Text, &snap.Rev)
	if errors.Is(err, pgx.ErrNoRows) {
		return snap, nil
	}
	if err != nil {
		return store.Snapshot{}, fmt.Errorf("load doc %q: %w", doc, err)
	}
	return snap, nil
}

// Ops returns stored entries with from < rev <= to (to < 0: all) in order.
func (s *Store) Ops(ctx context.Context, doc string, from, to int64) ([]store.Entry, error) {
	return readOps(ctx, s.pool, doc, from, to)
}

// querier is a pool, a connection or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func readOps(ctx context.Context, q querier, doc string, from, to int64) ([]store.Entry, error) {
	if to < 0 {
		to = 1<<63 - 1
	}
	rows, err := q.Query(ctx, `
		SELECT rev, author, client_id, seq, op, created_at
		FROM operations WHERE doc_id = $1 AND rev > $2 AND rev <= $3
		ORDER BY rev`, doc, from, to)
	if err != nil {
		return nil, fmt.Errorf("read ops of doc %q: %w", doc, err)
	}
	defer rows.Close()
	var out []store.Entry
	for rows.Next() {
		e := store.Entry{Doc: doc}
		var raw []byte
		if err := rows.Scan(&e.Rev, &e.User, &e.Client, &e.Seq, &raw, &e.Time); err != nil {
			return nil, fmt.Errorf("scan op of doc %q: %w", doc, err)
		}
		if err := json.Unmarshal(raw, &e.Op); err != nil {
			return nil, fmt.Errorf("decode op %d of doc %q: %w", e.Rev, doc, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read ops of doc %q: %w", doc, err)
	}
	return out, nil
}

// docBatch is one document's share of a Write.
type docBatch struct {
	doc     string
	entries []store.Entry
}

// groupByDoc splits entries by document, keeping first-seen document order
// so that row locks are always taken in a deterministic order per batch.
func groupByDoc(entries []store.Entry) ([]docBatch, error) {
	index := map[string]int{}
	var out []docBatch
	for _, e := range entries {
		i, ok := index[e.Doc]
		if !ok {
			i = len(out)
			index[e.Doc] = i
			out = append(out, docBatch{doc: e.Doc})
		}
		b := &out[i]
		if n := len(b.entries); n > 0 && e.Rev <= b.entries[n-1].Rev {
			return nil, fmt.Errorf("%w: doc %q revisions out of order (%d after %d)", ErrInvalidBatch, e.Doc, e.Rev, b.entries[n-1].Rev)
		}
		b.entries = append(b.entries, e)
	}
	return out, nil
}

// Write stores entries and advances each document's snapshot in one
// transaction. Entries at or below a document's stored revision are skipped,
// so writing a batch twice is harmless.
//
// A flush carries a few entries for each of hundreds of documents, so the
// statements are set-based over all of them: a Write costs the same handful
// of round trips (begin, lock, store, commit) whatever its number of
// documents.
func (s *Store) Write(ctx context.Context, entries []store.Entry) error {
	_, err := s.WriteChecked(ctx, entries, nil)
	return err
}

var _ store.CheckedWriter = (*Store)(nil)

// WriteChecked implements store.CheckedWriter. Write and Delete both take
// a transaction-scoped advisory lock per document (docLockSQL) before
// touching its rows: a Delete that comes first has removed everything by
// the time check runs (so check, reading the log, sees the document
// gone), and one that comes later waits for the commit and then removes
// what was written. Row locks alone cannot do it: a Delete does not wait
// for a row another transaction is still inserting.
func (s *Store) WriteChecked(ctx context.Context, entries []store.Entry, check func(ctx context.Context, docs []string) ([]string, error)) ([]string, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	batches, err := groupByDoc(entries)
	if err != nil {
		return nil, err
	}
	// Sorting documents by id avoids deadlocks between two flushers locking
	// the same documents in different orders.
	sortBatches(batches)
	ids := make([]string, len(batches))
	for i, b := range batches {
		ids[i] = b.doc
	}
	now := time.Now()

	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin write: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit

	var stale []string
	if check != nil {
		if _, err := tx.Exec(ctx, docLockSQL, ids); err != nil {
			return nil, fmt.Errorf("lock %d docs against deletion: %w", len(ids), err)
		}
		if stale, err = check(ctx, ids); err != nil {
			return nil, fmt.Errorf("check %d docs: %w", len(ids), err)
		}
		if len(stale) > 0 {
			batches, ids = dropDocs(batches, stale)
			if len(batches) == 0 {
				return stale, nil
			}
		}
	}

	stored, err := lockDocs(ctx, tx, ids, now)
	if err != nil {
		return nil, err
	}
	var snaps snapshotColumns
	var ops opColumns
	for i, b := range batches {
		if err := advance(b, stored[i], now, s.interval, &snaps, &ops); err != nil {
			return nil, err
		}
	}
	if len(snaps.ids) > 0 {
		if err := storeAdvances(ctx, tx, &snaps, &ops, now); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit write of %d entries: %w", len(entries), err)
	}
	return stale, nil
}

// docLockSQL takes the transaction-scoped advisory lock of each document
// in $1, in the order of their keys, so that two transactions locking
// overlapping sets cannot deadlock. The key is the id's 64-bit hash: two
// ids sharing one only wait for each other.
const docLockSQL = `SELECT pg_advisory_xact_lock(k) FROM (
	SELECT DISTINCT hashtextextended(id, 7) AS k FROM unnest($1::text[]) AS u(id)) AS l ORDER BY k`

// dropDocs leaves the documents in drop out of batches and ids.
func dropDocs(batches []docBatch, drop []string) ([]docBatch, []string) {
	gone := map[string]bool{}
	for _, d := range drop {
		gone[d] = true
	}
	var kept []docBatch
	var ids []string
	for _, b := range batches {
		if !gone[b.doc] {
			kept = append(kept, b)
			ids = append(ids, b.doc)
		}
	}
	return kept, ids
}

// storedDoc is a document's row as locked at the start of a Write.
type storedDoc struct {
	text string
	rev  int64
}

// lockDocs creates the rows of documents not stored yet and locks the rows
// of all of ids (sorted), in one round trip. It returns their stored
// snapshots in the order of ids.
func lockDocs(ctx context.Context, tx pgx.Tx, ids []string, now time.Time) ([]storedDoc, error) {
	var batch pgx.Batch
	// Rows are inserted and locked in the order of ids, which sortBatches
	// sorted bytewise; COLLATE "C" makes PostgreSQL's ORDER BY the same
	// order whatever the database's collation, so concurrent Writes take
	// their row locks (including those on rows a concurrent Write is
	// inserting) in one global order and cannot deadlock.
	batch.Queue(`
		INSERT INTO documents (id, created_at, updated_at)
		SELECT id, $2, $2 FROM unnest($1::text[]) WITH ORDINALITY AS u(id, ord)
		ORDER BY ord
		ON CONFLICT (id) DO NOTHING`, ids, now)
	// FOR NO KEY UPDATE, not FOR UPDATE: it serialises Writes all the
	// same, and lets compaction hold a document FOR KEY SHARE (keeping it
	// from being deleted) without stalling them.
	batch.Queue(`SELECT id, text, rev FROM documents WHERE id = ANY($1) ORDER BY id COLLATE "C" FOR NO KEY UPDATE`, ids)
	br := tx.SendBatch(ctx, &batch)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return nil, fmt.Errorf("create %d docs: %w", len(ids), err)
	}
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("lock %d docs: %w", len(ids), err)
	}
	defer rows.Close()
	out := make([]storedDoc, 0, len(ids))
	for rows.Next() {
		var id string
		var d storedDoc
		if err := rows.Scan(&id, &d.text, &d.rev); err != nil {
			return nil, fmt.Errorf("scan locked doc: %w", err)
		}
		// Both sides are in the same order, so row i must be ids[i]; a
		// mismatch would silently apply one document's entries to another.
		if i := len(out); i >= len(ids) || ids[i] != id {
			return nil, fmt.Errorf("lock %d docs: row %d is doc %q, out of order", len(ids), i, id)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lock %d docs: %w", len(ids), err)
	}
	if len(out) != len(ids) {
		return nil, fmt.Errorf("lock %d docs: only %d rows found", len(ids), len(out))
	}
	return out, nil
}

// snapshotColumns are the advanced snapshots of a Write, one slice per
// column: the shape unnest takes them in.
type snapshotColumns struct {
	ids, texts  []string
	revs, sizes []int64
	// The periodic snapshots passed on the way (time travel).
	pastIDs, pastTexts []string
	pastRevs           []int64
}

// opColumns are the operation rows of a Write, one slice per column.
type opColumns struct {
	docs, authors, clients, ops []string
	revs, seqs                  []int64
	times                       []time.Time
}

// advance applies the entries of b newer than its stored revision to its
// snapshot and appends the advanced snapshot (if any) and the operation rows
// to insert to snaps and ops.
func advance(b docBatch, stored storedDoc, now time.Time, interval int64, snaps *snapshotColumns, ops *opColumns) error {
	next := stored.rev
	// A rope, not ot.Apply on the string: that copies the whole text for
	// every entry, which made a busy document's flush quadratic.
	doc := rope.New(stored.text)
	for _, e := range b.entries {
		if e.Rev <= stored.rev {
			continue // already stored: idempotent rewrite
		}
		if e.Rev != next+1 {
			return fmt.Errorf("%w: doc %q stored at rev %d, batch jumps to rev %d", ErrInvalidBatch, b.doc, next, e.Rev)
		}
		if err := doc.Apply(e.Op); err != nil {
			return fmt.Errorf("%w: doc %q rev %d does not apply: %v", ErrInvalidBatch, b.doc, e.Rev, err)
		}
		opJSON, err := json.Marshal(e.Op)
		if err != nil {
			return fmt.Errorf("%w: encode op of doc %q rev %d: %v", ErrInvalidBatch, b.doc, e.Rev, err)
		}
		t := e.Time
		if t.IsZero() {
			t = now
		}
		ops.docs = append(ops.docs, b.doc)
		ops.revs = append(ops.revs, e.Rev)
		ops.authors = append(ops.authors, e.User)
		ops.clients = append(ops.clients, e.Client)
		ops.seqs = append(ops.seqs, e.Seq)
		ops.ops = append(ops.ops, string(opJSON))
		ops.times = append(ops.times, t)
		next = e.Rev
		if e.Rev%interval == 0 {
			snaps.pastIDs = append(snaps.pastIDs, b.doc)
			snaps.pastTexts = append(snaps.pastTexts, doc.String())
			snaps.pastRevs = append(snaps.pastRevs, e.Rev)
		}
	}
	if next == stored.rev {
		return nil
	}
	snaps.ids = append(snaps.ids, b.doc)
	snaps.texts = append(snaps.texts, doc.String())
	snaps.revs = append(snaps.revs, next)
	snaps.sizes = append(snaps.sizes, int64(doc.Bytes()))
	return nil
}

// storeAdvances writes the advanced snapshots and inserts the new operation
// rows in one round trip. The rows are already locked, so the UPDATE's
// order does not matter.
func storeAdvances(ctx context.Context, tx pgx.Tx, snaps *snapshotColumns, ops *opColumns, now time.Time) error {
	var batch pgx.Batch
	batch.Queue(`
		UPDATE documents AS d SET text = u.text, rev = u.rev, size = u.size, updated_at = $4
		FROM unnest($1::text[], $2::text[], $3::bigint[], $5::bigint[]) AS u(id, text, rev, size)
		WHERE d.id = u.id`, snaps.ids, snaps.texts, snaps.revs, now, snaps.sizes)
	batch.Queue(`
		INSERT INTO operations (doc_id, rev, author, client_id, seq, op, created_at)
		SELECT doc_id, rev, author, client_id, seq, op::jsonb, created_at
		FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::timestamptz[])
			AS u(doc_id, rev, author, client_id, seq, op, created_at)
		ON CONFLICT (doc_id, rev) DO NOTHING`,
		ops.docs, ops.revs, ops.authors, ops.clients, ops.seqs, ops.ops, ops.times)
	if len(snaps.pastIDs) > 0 {
		batch.Queue(`
			INSERT INTO snapshots (doc_id, rev, text)
			SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[])
			ON CONFLICT (doc_id, rev) DO NOTHING`, snaps.pastIDs, snaps.pastRevs, snaps.pastTexts)
	}
	br := tx.SendBatch(ctx, &batch)
	defer br.Close()
	tag, err := br.Exec()
	if err != nil {
		return fmt.Errorf("update snapshots of %d docs: %w", len(snaps.ids), err)
	}
	if n := tag.RowsAffected(); n != int64(len(snaps.ids)) {
		return fmt.Errorf("update snapshots of %d docs: %d rows updated", len(snaps.ids), n)
	}
	if _, err := br.Exec(); err != nil {
		return fmt.Errorf("insert %d ops: %w", len(ops.docs), err)
	}
	if len(snaps.pastIDs) > 0 {
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("insert %d snapshots: %w", len(snaps.pastIDs), err)
		}
	}
	if err := br.Close(); err != nil {
		return fmt.Errorf("store %d docs' advances: %w", len(snaps.ids), err)
	}
	return nil
}

// IsPermanent reports whether a Write error will recur on retry (bad data)
// rather than being an outage worth waiting out.
func IsPermanent(err error) bool {
	if errors.Is(err, ErrInvalidBatch) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Class 22: data exception; class 23: integrity constraint violation.
		return len(pgErr.Code) == 5 && (pgErr.Code[:2] == "22" || pgErr.Code[:2] == "23")
	}
	return false
}
