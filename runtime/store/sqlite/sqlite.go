// Package sqlite is the embedded store.Durable: documents and their full
// history in one SQLite database file (modernc.org/sqlite, no cgo) in WAL
// mode under the runtime's data directory.
package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/rope"
	"github.com/tandem-dev/tandem/runtime/store"
)

// FileName is the database file inside the data directory.
const FileName = "tandem.db"

const schema = `
CREATE TABLE IF NOT EXISTS documents (
	id      TEXT PRIMARY KEY,
	text    TEXT NOT NULL,
	rev     INTEGER NOT NULL,
	created INTEGER NOT NULL, -- unix milliseconds
	updated INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS operations (
	doc    TEXT NOT NULL,
	rev    INTEGER NOT NULL,
	client TEXT NOT NULL,
	seq    INTEGER NOT NULL,
	user   TEXT NOT NULL,
	op     TEXT NOT NULL,    -- JSON, as on the wire
	time   INTEGER NOT NULL, -- unix nanoseconds
	PRIMARY KEY (doc, rev)
) WITHOUT ROWID;
`

// Store is a store.Durable backed by SQLite.
type Store struct {
	db *sql.DB
	// Statements of Write, prepared once: with a transaction per group
	// commit, parsing them on every call was a large part of its cost.
	insertOp, upsertDoc *sql.Stmt

	// mu serialises Writes (the one connection does anyway) and guards
	// recent. recent holds the stored text and revision of the documents
	// written last, so that the next write of a busy document applies its
	// entries to the text in memory instead of reading the whole snapshot
	// back and rebuilding it: in embedded mode every acknowledgement waits
	// for a write. This process is the database's only writer.
	mu     sync.Mutex
	recent map[string]*storedDoc
}

// storedDoc is a document as the database holds it after a commit: its
// text and revision, and the revision of its row in documents.
type storedDoc struct {
	rope    *rope.Rope
	rev     int64
	snapRev int64
}

// snapshotEvery is how far a document's row in documents may fall behind
// its operations before Write rewrites it. Rewriting the whole text on
// every write made a busy document's writes grow with its size, and in
// embedded mode every acknowledgement waits for a write; Load replays the
// operations after the row instead (fewer than snapshotEvery plus one
// write's worth).
const snapshotEvery = 256

// maxRecent bounds the documents whose text Write keeps in memory.
const maxRecent = 64

const (
	selectDocSQL = `SELECT text, rev FROM documents WHERE id = ?`
	insertOpSQL  = `INSERT INTO operations (doc, rev, client, seq, user, op, time) VALUES (?, ?, ?, ?, ?, ?, ?)`
	upsertDocSQL = `INSERT INTO documents (id, text, rev, created, updated) VALUES (?, ?, ?, ?, ?)
			 ON CONFLICT(id) DO UPDATE SET text = excluded.text, rev = excluded.rev, updated = excluded.updated`
)

var _ store.Durable = (*Store)(nil)

// Open opens (creating if needed) the database in dir.
func Open(ctx context.Context, dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create data dir %q: %w", dir, err)
	}
	path := filepath.Join(dir, FileName)
	// WAL lets readers proceed during a write; synchronous(FULL) makes a
	// committed flush survive power loss, which is what "acknowledged and
	// flushed" promises.
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(ON)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %q: %w", path, err)
	}
	// One connection serialises writers inside the process, so SQLite never
	// answers "database is locked" to ourselves.
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("create schema in %q: %w", path, err)
	}
	st := &Store{db: db, recent: map[string]*storedDoc{}}
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{{&st.insertOp, insertOpSQL}, {&st.upsertDoc, upsertDocSQL}} {
		if *p.stmt, err = db.PrepareContext(ctx, p.sql); err != nil {
			db.Close()
			return nil, fmt.Errorf("prepare statement in %q: %w", path, err)
		}
	}
	return st, nil
}

// Ready reports whether the database answers.
func (s *Store) Ready(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite ping: %w", err)
	}
	return nil
}

// Load implements store.Durable: the document's row and the operations
// stored after it.
func (s *Store) Load(ctx context.Context, doc string) (store.Snapshot, error) {
	st, err := latest(ctx, s.db, doc)
	if err != nil {
		return store.Snapshot{}, err
	}
	return store.Snapshot{Doc: doc, Text: st.rope.String(), Rev: st.rev}, nil
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// latest reads doc's row in documents and applies the operations stored
// after it.
func latest(ctx context.Context, q querier, doc string) (*storedDoc, error) {
	var text string
	st := &storedDoc{}
	err := q.QueryRowContext(ctx, selectDocSQL, doc).Scan(&text, &st.snapRev)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("load %q: %w", doc, err)
	}
	st.rope, st.rev = rope.New(text), st.snapRev
	rows, err := q.QueryContext(ctx, `SELECT rev, op FROM operations WHERE doc = ? AND rev > ? ORDER BY rev`, doc, st.snapRev)
	if err != nil {
		return nil, fmt.Errorf("load %q: operations after its snapshot: %w", doc, err)
	}
	defer rows.Close()
	for rows.Next() {
		var rev int64
		var opJSON string
		if err := rows.Scan(&rev, &opJSON); err != nil {
			return nil, fmt.Errorf("load %q: %w", doc, err)
		}
		var op ot.Op
		if err := json.Unmarshal([]byte(opJSON), &op); err != nil {
			return nil, fmt.Errorf("load %q: decode rev %d: %w", doc, rev, err)
		}
		if rev != st.rev+1 {
			return nil, fmt.Errorf("load %q: rev %d follows %d", doc, rev, st.rev)
		}
		if err := st.rope.Apply(op); err != nil {
			return nil, fmt.Errorf("load %q: apply rev %d: %w", doc, rev, err)
		}
		st.rev = rev
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load %q: %w", doc, err)
	}
	return st, nil
}

// Ops implements store.Durable.
func (s *Store) Ops(ctx context.Context, doc string, from, to int64) ([]store.Entry, error) {
	if to < 0 {
		to = 1<<63 - 1
	}
	rows, err := s.db.QueryContext(ctx,
		`SELECT rev, client, seq, user, op, time FROM operations WHERE doc = ? AND rev > ? AND rev <= ? ORDER BY rev`,
		doc, from, to)
	if err != nil {
		return nil, fmt.Errorf("read ops of %q: %w", doc, err)
	}
	defer rows.Close()
	var out []store.Entry
	for rows.Next() {
		e := store.Entry{Doc: doc}
		var opJSON string
		var nanos int64
		if err := rows.Scan(&e.Rev, &e.Client, &e.Seq, &e.User, &opJSON, &nanos); err != nil {
			return nil, fmt.Errorf("scan op of %q: %w", doc, err)
		}
		if err := json.Unmarshal([]byte(opJSON), &e.Op); err != nil {
			return nil, fmt.Errorf("decode op %q rev %d: %w", doc, e.Rev, err)
		}
		e.Time = time.Unix(0, nanos).UTC()
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read ops of %q: %w", doc, err)
	}
	return out, nil
}

// Write implements store.Durable: one transaction for the whole batch.
// Entries at or below a document's stored revision are skipped; the others
// must continue it without a gap.
func (s *Store) Write(ctx context.Context, entries []store.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	docs := map[string]*storedDoc{}
	var order []string
	committed := false
	defer func() {
		if !committed {
			// Their ropes may hold entries that were not stored.
			for _, id := range order {
				delete(s.recent, id)
			}
		}
	}()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin write: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	insertOp := tx.StmtContext(ctx, s.insertOp)
	upsertDoc := tx.StmtContext(ctx, s.upsertDoc)

	now := time.Now().UnixMilli()
	for _, e := range entries {
		st, ok := docs[e.Doc]
		if !ok {
			st = s.recent[e.Doc]
			if st == nil {
				if st, err = latest(ctx, tx, e.Doc); err != nil {
					return fmt.Errorf("write: %w", err)
				}
			}
			docs[e.Doc] = st
			order = append(order, e.Doc)
		}
		if e.Rev <= st.rev {
			continue // already stored: writes are idempotent
		}
		if e.Rev != st.rev+1 {
			return fmt.Errorf("write %q rev %d: stored revision is %d (gap)", e.Doc, e.Rev, st.rev)
		}
		if err := st.rope.Apply(e.Op); err != nil {
			return fmt.Errorf("apply %q rev %d to snapshot: %w", e.Doc, e.Rev, err)
		}
		opJSON, err := json.Marshal(e.Op)
		if err != nil {
			return fmt.Errorf("encode %q rev %d: %w", e.Doc, e.Rev, err)
		}
		if _, err := insertOp.ExecContext(ctx, e.Doc, e.Rev, e.Client, e.Seq, e.User, string(opJSON), e.Time.UnixNano()); err != nil {
			return fmt.Errorf("insert %q rev %d: %w", e.Doc, e.Rev, err)
		}
		st.rev = e.Rev
	}
	for _, id := range order {
		st := docs[id]
		if st.rev-st.snapRev < snapshotEvery {
			continue
		}
		if _, err := upsertDoc.ExecContext(ctx, id, st.rope.String(), st.rev, now, now); err != nil {
			return fmt.Errorf("store snapshot of %q at %d: %w", id, st.rev, err)
		}
		st.snapRev = st.rev
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit write of %d entries: %w", len(entries), err)
	}
	committed = true
	for _, id := range order {
		if _, ok := s.recent[id]; !ok && len(s.recent) >= maxRecent {
			for old := range s.recent { // any one: this is a cache of the busy ones
				delete(s.recent, old)
				break
			}
		}
		s.recent[id] = docs[id]
	}
	return nil
}

// writeSnapshots brings the rows of the documents in recent up to date, so
// that a database closed cleanly needs no replay; s.mu must be held.
func (s *Store) writeSnapshots() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin final snapshots: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	now := time.Now().UnixMilli()
	for id, st := range s.recent {
		if st.rev == st.snapRev {
			continue
		}
		if _, err := tx.StmtContext(ctx, s.upsertDoc).ExecContext(ctx, id, st.rope.String(), st.rev, now, now); err != nil {
			return fmt.Errorf("store snapshot of %q at %d: %w", id, st.rev, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit final snapshots: %w", err)
	}
	return nil
}

// Close implements store.Durable.
func (s *Store) Close() error {
	s.mu.Lock()
	err := s.writeSnapshots()
	s.mu.Unlock()
	for _, st := range []*sql.Stmt{s.insertOp, s.upsertDoc} {
		st.Close()
	}
	if err != nil {
		s.db.Close()
		return err
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close sqlite: %w", err)
	}
	return nil
}
