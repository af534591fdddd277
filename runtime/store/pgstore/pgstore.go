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
}

var _ store.Durable = (*Store)(nil)

// Open connects to url, applies the embedded migrations under an advisory
// lock and returns the store.
func Open(ctx context.Context, url string, logger *slog.Logger) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse postgres url: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	if err := Migrate(ctx, pool, logger); err != nil {
		pool.Close()
		return nil, err
	}
	return &Store{pool: pool}, nil
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
	if to < 0 {
		to = 1<<63 - 1
	}
	rows, err := s.pool.Query(ctx, `
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
func (s *Store) Write(ctx context.Context, entries []store.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	batches, err := groupByDoc(entries)
	if err != nil {
		return err
	}
	// Sorting documents by id avoids deadlocks between two flushers locking
	// the same documents in different orders.
	sortBatches(batches)

	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin write: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit

	var rows [][]any
	for _, b := range batches {
		newRows, err := advance(ctx, tx, b)
		if err != nil {
			return err
		}
		rows = append(rows, newRows...)
	}
	if len(rows) > 0 {
		if _, err := tx.Exec(ctx, `CREATE TEMP TABLE tandem_ops_in (LIKE operations) ON COMMIT DROP`); err != nil {
			return fmt.Errorf("create staging table: %w", err)
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"tandem_ops_in"},
			[]string{"doc_id", "rev", "author", "client_id", "seq", "op", "created_at"},
			pgx.CopyFromRows(rows)); err != nil {
			return fmt.Errorf("copy %d ops: %w", len(rows), err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO operations SELECT * FROM tandem_ops_in ON CONFLICT (doc_id, rev) DO NOTHING`); err != nil {
			return fmt.Errorf("insert %d ops: %w", len(rows), err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit write of %d entries: %w", len(entries), err)
	}
	return nil
}

// advance locks the document's row, applies the entries newer than its
// stored revision to its snapshot and returns the operation rows to insert.
func advance(ctx context.Context, tx pgx.Tx, b docBatch) ([][]any, error) {
	now := time.Now()
	if _, err := tx.Exec(ctx, `INSERT INTO documents (id, created_at, updated_at) VALUES ($1, $2, $2) ON CONFLICT (id) DO NOTHING`, b.doc, now); err != nil {
		return nil, fmt.Errorf("create doc %q: %w", b.doc, err)
	}
	var text string
	var rev int64
	if err := tx.QueryRow(ctx, `SELECT text, rev FROM documents WHERE id = $1 FOR UPDATE`, b.doc).Scan(&text, &rev); err != nil {
		return nil, fmt.Errorf("lock doc %q: %w", b.doc, err)
	}
	var rows [][]any
	next := rev
	// A rope, not ot.Apply on the string: that copies the whole text for
	// every entry, which made a busy document's flush quadratic.
	doc := rope.New(text)
	for _, e := range b.entries {
		if e.Rev <= rev {
			continue // already stored: idempotent rewrite
		}
		if e.Rev != next+1 {
			return nil, fmt.Errorf("%w: doc %q stored at rev %d, batch jumps to rev %d", ErrInvalidBatch, b.doc, next, e.Rev)
		}
		if err := doc.Apply(e.Op); err != nil {
			return nil, fmt.Errorf("%w: doc %q rev %d does not apply: %v", ErrInvalidBatch, b.doc, e.Rev, err)
		}
		opJSON, err := json.Marshal(e.Op)
		if err != nil {
			return nil, fmt.Errorf("%w: encode op of doc %q rev %d: %v", ErrInvalidBatch, b.doc, e.Rev, err)
		}
		t := e.Time
		if t.IsZero() {
			t = now
		}
		rows = append(rows, []any{b.doc, e.Rev, e.User, e.Client, e.Seq, string(opJSON), t})
		next = e.Rev
	}
	if next == rev {
		return nil, nil
	}
	if _, err := tx.Exec(ctx, `UPDATE documents SET text = $2, rev = $3, updated_at = $4 WHERE id = $1`, b.doc, doc.String(), next, now); err != nil {
		return nil, fmt.Errorf("update snapshot of doc %q: %w", b.doc, err)
	}
	return rows, nil
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
