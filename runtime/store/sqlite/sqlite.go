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
	text    TEXT NOT NULL,    -- the text at rev (may lag head)
	rev     INTEGER NOT NULL,
	created INTEGER NOT NULL, -- unix milliseconds
	updated INTEGER NOT NULL  -- unix milliseconds of the last write
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
CREATE TABLE IF NOT EXISTS snapshots (
	doc  TEXT NOT NULL,
	rev  INTEGER NOT NULL,
	text TEXT NOT NULL,
	PRIMARY KEY (doc, rev)
) WITHOUT ROWID;
`

// columns added to documents after the first release: the head revision
// and the text's size at it, kept current by every Write so that listing
// documents reads one row each.
var addedColumns = []struct{ name, ddl string }{
	{"head", `ALTER TABLE documents ADD COLUMN head INTEGER NOT NULL DEFAULT 0`},
	{"size", `ALTER TABLE documents ADD COLUMN size INTEGER NOT NULL DEFAULT 0`},
}

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

	// interval is how many revisions apart snapshots are kept.
	interval               int64
	insertSnap, upsertHead *sql.Stmt
	selectDoc, selectOps   *sql.Stmt
	// compactOps bounds the operations one compaction step removes.
	compactOps int64
}

// storedDoc is a document as the database holds it after a commit: its
// text and revision, and the revision of its row in documents.
type storedDoc struct {
	rope    *rope.Rope
	rev     int64
	snapRev int64
	// written: this Write stored entries of the document (reset per Write).
	written bool
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
	// The newest of the documents row and the periodic snapshots: after
	// compaction the operations before the newest snapshot may be gone.
	selectDocSQL = `SELECT text, rev FROM (
			SELECT text, rev FROM documents WHERE id = ?1
			UNION ALL
			SELECT text, rev FROM (SELECT text, rev FROM snapshots WHERE doc = ?1 ORDER BY rev DESC LIMIT 1)
		) ORDER BY rev DESC LIMIT 1`
	selectOpsSQL = `SELECT rev, op FROM operations WHERE doc = ? AND rev > ? ORDER BY rev`
	insertOpSQL  = `INSERT INTO operations (doc, rev, client, seq, user, op, time) VALUES (?, ?, ?, ?, ?, ?, ?)`
	upsertDocSQL = `INSERT INTO documents (id, text, rev, created, updated, head, size) VALUES (?, ?, ?, ?, ?, ?, ?)
			 ON CONFLICT(id) DO UPDATE SET text = excluded.text, rev = excluded.rev, updated = excluded.updated,
			 head = excluded.head, size = excluded.size`
	// upsertHead records head and size without rewriting the text; a new
	// document's row starts empty at revision 0, its operations after it.
	upsertHeadSQL = `INSERT INTO documents (id, text, rev, created, updated, head, size) VALUES (?, '', 0, ?, ?, ?, ?)
			 ON CONFLICT(id) DO UPDATE SET updated = excluded.updated, head = excluded.head, size = excluded.size`
	insertSnapSQL = `INSERT OR IGNORE INTO snapshots (doc, rev, text) VALUES (?, ?, ?)`
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
	// auto_vacuum(INCREMENTAL) must come first: it only takes effect on a
	// database without tables (an older file is converted once below).
	dsn := "file:" + path + "?_pragma=auto_vacuum(INCREMENTAL)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(ON)"
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
	if err := upgrade(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("upgrade schema in %q: %w", path, err)
	}
	st := &Store{db: db, recent: map[string]*storedDoc{}, interval: store.DefaultSnapshotInterval, compactOps: compactOpsPerTx}
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{{&st.insertOp, insertOpSQL}, {&st.upsertDoc, upsertDocSQL}, {&st.upsertHead, upsertHeadSQL}, {&st.insertSnap, insertSnapSQL},
		{&st.selectDoc, selectDocSQL}, {&st.selectOps, selectOpsSQL}} {
		if *p.stmt, err = db.PrepareContext(ctx, p.sql); err != nil {
			db.Close()
			return nil, fmt.Errorf("prepare statement in %q: %w", path, err)
		}
	}
	return st, nil
}

// upgrade brings a database made by an older release to the current
// schema: the head and size columns (filled from what is stored), and
// incremental auto-vacuum, which needs one full VACUUM to switch on.
func upgrade(ctx context.Context, db *sql.DB) error {
	have := map[string]bool{}
	rows, err := db.QueryContext(ctx, `SELECT name FROM pragma_table_info('documents')`)
	if err != nil {
		return fmt.Errorf("read columns: %w", err)
	}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return fmt.Errorf("read columns: %w", err)
		}
		have[name] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read columns: %w", err)
	}
	added := false
	for _, c := range addedColumns {
		if !have[c.name] {
			if _, err := db.ExecContext(ctx, c.ddl); err != nil {
				return fmt.Errorf("add column %s: %w", c.name, err)
			}
			added = true
		}
	}
	if added {
		// Documents whose row was never written (fewer operations than
		// the snapshot interval) get one at revision 0; head and size
		// come from what is stored (size as of the row's text: exact
		// again after the document's next write).
		for _, q := range []string{
			`INSERT OR IGNORE INTO documents (id, text, rev, created, updated)
			 SELECT doc, '', 0, min(time) / 1000000, max(time) / 1000000 FROM operations GROUP BY doc`,
			`UPDATE documents SET size = length(CAST(text AS BLOB)),
			 head = max(rev, coalesce((SELECT max(o.rev) FROM operations o WHERE o.doc = documents.id), 0))`,
		} {
			if _, err := db.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("fill head and size: %w", err)
			}
		}
	}
	var mode int
	if err := db.QueryRowContext(ctx, `PRAGMA auto_vacuum`).Scan(&mode); err != nil {
		return fmt.Errorf("read auto_vacuum: %w", err)
	}
	if mode != 2 { // 2 = incremental
		if _, err := db.ExecContext(ctx, `PRAGMA auto_vacuum = INCREMENTAL`); err != nil {
			return fmt.Errorf("set auto_vacuum: %w", err)
		}
		if _, err := db.ExecContext(ctx, `VACUUM`); err != nil {
			return fmt.Errorf("vacuum to enable incremental auto_vacuum: %w", err)
		}
	}
	return nil
}

// SetSnapshotInterval sets how many revisions apart snapshots are kept
// (default store.DefaultSnapshotInterval). Call it before the first Write.
func (s *Store) SetSnapshotInterval(n int64) {
	if n > 0 {
		s.interval = n
	}
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
	st, err := latest(ctx, s.selectDoc, s.selectOps, doc)
	if err != nil {
		return store.Snapshot{}, err
	}
	return store.Snapshot{Doc: doc, Text: st.rope.String(), Rev: st.rev}, nil
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// latest reads doc's newest snapshot (its row in documents or a periodic
// one) and applies the operations stored after it. selectDoc and
// selectOps are the prepared selectDocSQL and selectOpsSQL, for the
// database or a transaction: a Write of many documents runs them once
// each, and parsing them every time was most of its cost.
func latest(ctx context.Context, selectDoc, selectOps *sql.Stmt, doc string) (*storedDoc, error) {
	var text string
	st := &storedDoc{}
	err := selectDoc.QueryRowContext(ctx, doc).Scan(&text, &st.snapRev)
	if errors.Is(err, sql.ErrNoRows) {
		// Every Write stores a row for each document it writes, in the
		// same transaction as its operations: no row, no operations.
		st.rope = rope.New("")
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load %q: %w", doc, err)
	}
	st.rope, st.rev = rope.New(text), st.snapRev
	rows, err := selectOps.QueryContext(ctx, doc, st.snapRev)
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
	return readOps(ctx, s.db, doc, from, to)
}

func readOps(ctx context.Context, q querier, doc string, from, to int64) ([]store.Entry, error) {
	if to < 0 {
		to = 1<<63 - 1
	}
	rows, err := q.QueryContext(ctx,
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
	upsertHead := tx.StmtContext(ctx, s.upsertHead)
	insertSnap := tx.StmtContext(ctx, s.insertSnap)
	selectDoc := tx.StmtContext(ctx, s.selectDoc)
	selectOps := tx.StmtContext(ctx, s.selectOps)

	now := time.Now().UnixMilli()
	for _, e := range entries {
		st, ok := docs[e.Doc]
		if !ok {
			st = s.recent[e.Doc]
			if st == nil {
				if st, err = latest(ctx, selectDoc, selectOps, e.Doc); err != nil {
					return fmt.Errorf("write: %w", err)
				}
			}
			st.written = false
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
		st.written = true
		if e.Rev%s.interval == 0 {
			// A snapshot for reading old revisions (time travel) and the
			// point compaction may cut history at.
			if _, err := insertSnap.ExecContext(ctx, e.Doc, e.Rev, st.rope.String()); err != nil {
				return fmt.Errorf("store snapshot of %q at %d: %w", e.Doc, e.Rev, err)
			}
		}
	}
	for _, id := range order {
		st := docs[id]
		if !st.written {
			continue
		}
		size := int64(st.rope.Bytes())
		if st.rev-st.snapRev < snapshotEvery {
			if _, err := upsertHead.ExecContext(ctx, id, now, now, st.rev, size); err != nil {
				return fmt.Errorf("store head of %q at %d: %w", id, st.rev, err)
			}
			continue
		}
		if _, err := upsertDoc.ExecContext(ctx, id, st.rope.String(), st.rev, now, now, st.rev, size); err != nil {
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
		if _, err := tx.StmtContext(ctx, s.upsertDoc).ExecContext(ctx, id, st.rope.String(), st.rev, now, now, st.rev, int64(st.rope.Bytes())); err != nil {
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
	for _, st := range []*sql.Stmt{s.insertOp, s.upsertDoc, s.upsertHead, s.insertSnap, s.selectDoc, s.selectOps} {
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
