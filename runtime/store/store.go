// Package store defines the seams between a document's in-memory state and
// the services that order, persist and share it. Each concern has one
// interface; the embedded mode and the distributed (Redis + PostgreSQL) mode
// implement every one of them, and storetest holds the conformance suite
// that both must pass.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/tandem-dev/tandem/runtime/ot"
)

// Entry is one committed operation. The operation committed as revision N
// takes the text from revision N-1 to N; the first operation is revision 1.
type Entry struct {
	Doc    string    `json:"doc"`
	Rev    int64     `json:"rev"`
	Op     ot.Op     `json:"op"`
	Client string    `json:"client"` // stable client id of the author
	Seq    int64     `json:"seq"`    // the author's per-client sequence number
	User   string    `json:"user"`   // user id of the author
	Time   time.Time `json:"time"`
}

// Snapshot is the text of a document at a revision.
type Snapshot struct {
	Doc  string
	Rev  int64
	Text string
}

var (
	// ErrConflict means the log's head was not at the expected revision:
	// someone else committed first. Read the newer entries, transform, retry.
	ErrConflict = errors.New("store: revision conflict")
	// ErrTrimmed means the requested entries are no longer held by the log;
	// read them from the Durable store instead.
	ErrTrimmed = errors.New("store: entries trimmed from the log")
	// ErrUnavailable means a backing service cannot be reached right now
	// (for example an open circuit breaker). Callers report "unavailable,
	// retry" and must not hang.
	ErrUnavailable = errors.New("store: backend unavailable")
	// ErrReset means the log lost a document's history (for example Redis
	// lost its data) and restarted it from the durable store under a new
	// epoch. Whatever the caller holds in memory for the document is stale:
	// unload it and load the document again. Errors carrying ErrReset also
	// carry ErrUnavailable, so clients are told to retry.
	ErrReset = errors.New("store: document log reset")
	// ErrCompacted means a revision asked for is older than the history
	// the retention policy keeps: its operations were compacted away.
	ErrCompacted = errors.New("store: revision compacted away")
	// ErrDeleted ends a subscription whose document was deleted: whatever
	// the caller holds of it is gone, and so are its editors' connections.
	ErrDeleted = errors.New("store: document deleted")
	// ErrCompactionBusy means another process sharing the store holds its
	// compaction lock: this one has nothing to do until it is free.
	ErrCompactionBusy = errors.New("store: another replica is compacting")
)

// Log is the per-document operation log and sequencer: the single source of
// truth for revision order.
type Log interface {
	// Head returns the current revision of doc (0 for a document that has
	// no operations).
	Head(ctx context.Context, doc string) (int64, error)

	// Append commits entries as revisions expected+1, expected+2, ... if and
	// only if the head is at expected (compare-and-set). Entries carry those
	// revisions in Rev already. It returns ErrConflict, committing nothing,
	// when the head has moved. The batch is atomic: all or none.
	Append(ctx context.Context, doc string, expected int64, entries []Entry) error

	// Read returns the committed entries with from < Rev <= to in revision
	// order; to < 0 means up to the head. It returns ErrTrimmed when some of
	// them are no longer in the log.
	Read(ctx context.Context, doc string, from, to int64) ([]Entry, error)

	// Subscribe delivers every entry committed to doc after revision after,
	// from any writer, in revision order and without gaps (implementations
	// repair gaps themselves), until ctx is cancelled or the subscription
	// fails; the channel is then closed and Err reports why.
	Subscribe(ctx context.Context, doc string, after int64) (Subscription, error)

	// Close stops background work and flushes whatever is pending to the
	// durable store.
	Close(ctx context.Context) error
}

// Subscription is a live feed of committed entries.
type Subscription interface {
	C() <-chan Entry
	// Err is non-nil once C is closed because of a failure (nil when the
	// subscription ended because its context was cancelled).
	Err() error
}

// Durable is the long-term store of documents: snapshots and full history.
type Durable interface {
	// Load returns the latest snapshot of doc; a document never written
	// returns an empty snapshot at revision 0 and no error.
	Load(ctx context.Context, doc string) (Snapshot, error)

	// Ops returns stored entries with from < Rev <= to in order; to < 0
	// means all.
	Ops(ctx context.Context, doc string, from, to int64) ([]Entry, error)

	// Write stores committed entries (any documents, each document's entries
	// in revision order) and advances each document's snapshot, in one
	// transaction. It is idempotent on (doc, rev): entries already stored
	// are skipped, so a batch may be written twice.
	Write(ctx context.Context, entries []Entry) error

	Close() error
}

// CheckedWriter is implemented by durable stores whose writes can be
// confirmed against a concurrent Delete (PostgreSQL). A flush reads
// entries from the log, then writes them: a document deleted in between
// must not be written back (it would come back as a partial history).
type CheckedWriter interface {
	// WriteChecked is Write, except that once it holds the batch's
	// documents against Archive.Delete (a Delete waits for it, and one
	// that went first is over), it calls check with their ids. The
	// entries of the documents check returns (stale: deleted, or of an
	// older generation of the document, since they were read) are left
	// out, nothing of them is stored, and WriteChecked returns those ids.
	WriteChecked(ctx context.Context, entries []Entry, check func(ctx context.Context, docs []string) (stale []string, err error)) (stale []string, err error)
}

// DefaultSnapshotInterval is how many revisions apart the durable stores
// keep snapshots of a document's text by default: reading the text at any
// revision costs one snapshot plus at most this many operations.
const DefaultSnapshotInterval = 500

// DocInfo describes a stored document in a listing.
type DocInfo struct {
	ID  string `json:"id"`
	Rev int64  `json:"rev"`
	// Size is the text's length in UTF-8 bytes at Rev.
	Size    int64     `json:"size"`
	Updated time.Time `json:"updated"` // when the last operation was stored
}

// Retention says which history may be compacted away. An operation is
// removed only when it is outside every window that is set: older than
// Age (when Age > 0) and more than Revisions behind the head (when
// Revisions > 0). The zero value keeps everything.
type Retention struct {
	Age       time.Duration
	Revisions int64
}

// Keeps reports whether the policy keeps all history.
func (r Retention) Keeps() bool { return r.Age <= 0 && r.Revisions <= 0 }

// CompactResult is what one bounded compaction step did.
type CompactResult struct {
	Docs      int  // documents examined
	Ops       int  // operations removed
	Snapshots int  // superseded snapshots removed
	More      bool // more documents remain: call again with Cursor
	Cursor    string
}

// Archive is implemented by durable stores that keep periodic snapshots
// and can list, delete and compact documents (the SQLite and PostgreSQL
// stores).
type Archive interface {
	// SnapshotAt returns the newest stored snapshot at or below rev: the
	// text at rev is that snapshot plus the operations after it. A
	// document with its whole history returns an empty snapshot at 0 when
	// no snapshot is old enough; one whose operations up to rev were
	// compacted away returns ErrCompacted.
	SnapshotAt(ctx context.Context, doc string, rev int64) (Snapshot, error)
	// Oldest returns the snapshot the retained history starts from: empty
	// at 0 while the whole history is kept, else the snapshot compaction
	// cut at. The stored operations follow it without a gap.
	Oldest(ctx context.Context, doc string) (Snapshot, error)
	// HistoryStart is the revision the retained operations follow,
	// Oldest's revision without its text: 0 while the whole history is
	// kept. The logs keep a tail of recent operations that may reach
	// below it; reads of the history check it so that they answer
	// ErrCompacted below the cut, as SnapshotAt does.
	HistoryStart(ctx context.Context, doc string) (int64, error)
	// List returns up to limit stored documents whose ids start with
	// prefix and sort (bytewise) after after, in id order.
	List(ctx context.Context, prefix, after string, limit int) ([]DocInfo, error)
	// Delete removes every trace of doc: text, operations and snapshots.
	// Deleting a document that does not exist is not an error.
	Delete(ctx context.Context, doc string) error
	// Compact removes, for at most batch documents after cursor (in id
	// order), the operations and snapshots ret does not keep: it cuts each
	// document's history at the newest revision ret lets go and stores a
	// snapshot there (CompactDoc), so only the retained window of
	// operations is left, the current text and every kept revision stay
	// exact, and it removes only what is stored (persisted) already. Each
	// step is one short transaction: interrupted, it leaves a consistent
	// store, and running it again finishes the job.
	//
	// A store shared by several processes takes its compaction lock for the
	// call and returns ErrCompactionBusy when another process holds it; a
	// pass over all documents holds the lock throughout instead (PassLocker).
	Compact(ctx context.Context, ret Retention, now time.Time, cursor string, batch int) (CompactResult, error)
}

// Compacter compacts a batch of documents, as Archive.Compact does.
type Compacter interface {
	Compact(ctx context.Context, ret Retention, now time.Time, cursor string, batch int) (CompactResult, error)
}

// PassLocker is implemented by archives that several processes share (the
// replicas of a cluster on one PostgreSQL). One pass over all documents
// runs under one lock, so that exactly one process makes a whole pass
// while the others skip theirs: a lock taken per batch would let a process
// that misses it end its pass early, and with passes restarting from the
// first document, documents late in id order could go uncompacted for good.
type PassLocker interface {
	// LockPass takes the compaction lock without waiting. held is false
	// when another process has it. Otherwise pass compacts batches under
	// the lock (from one goroutine at a time) until release, which must be
	// called once the pass is over.
	LockPass(ctx context.Context) (pass Compacter, release func(), held bool, err error)
}

// Peeker is implemented by logs that keep state per document in a shared
// service (Redis) and can tell a document's head without creating any.
// known is false when the log holds nothing for doc: the durable store then
// has all of it.
type Peeker interface {
	Peek(ctx context.Context, doc string) (head int64, known bool, err error)
}

// Deleter is implemented by logs that can drop a document's history; the
// document's subscribers (in every process) end with ErrDeleted.
type Deleter interface {
	Delete(ctx context.Context, doc string) error
}

// User is who someone is in a document.
type User struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Color string `json:"color"`
}

// Cursor is a selection in code points; Anchor == Head is a caret.
type Cursor struct {
	Anchor int `json:"anchor"`
	Head   int `json:"head"`
}

// PresenceEntry is one connection's presence in a document.
type PresenceEntry struct {
	Doc  string `json:"doc"`
	Conn string `json:"conn"` // unique per connection, across replicas
	User User   `json:"user"`
	// Client is the connection's client id: with User, the author whose
	// operations move the cursor as their owner's (typed at the caret).
	Client string  `json:"client,omitempty"`
	Cursor *Cursor `json:"cursor,omitempty"`
	Rev    int64   `json:"rev"` // the revision the cursor refers to
	// Seq counts the owner's updates of this entry (join, cursor moves)
	// from 1; a refresh that only keeps the entry alive repeats it. Other
	// processes announce an entry to their members when Seq is new, so an
	// update is never mistaken for a refresh because a copy transformed
	// elsewhere happens to hold the same positions. 0 (entries of older
	// versions): unknown, compared by content.
	Seq int64 `json:"seq,omitempty"`
}

// PresenceEvent is an update (Left false) or a departure (Left true).
type PresenceEvent struct {
	Entry PresenceEntry
	Left  bool
}

// Presence tracks who is in each document. Entries expire by themselves
// when not refreshed within the implementation's TTL, so a crashed process
// leaves no ghosts.
type Presence interface {
	// Update inserts or refreshes an entry and announces it.
	Update(ctx context.Context, e PresenceEntry) error
	// Refresh keeps the entries of conns in doc alive for another TTL
	// without changing or announcing them: one call per document and
	// heartbeat, however many connections it has. It returns the conns
	// that had no live entry (expired meanwhile), which the caller writes
	// again with Update.
	Refresh(ctx context.Context, doc string, conns []string) (missing []string, err error)
	// Remove deletes a connection's entry and announces its departure.
	Remove(ctx context.Context, doc, conn string) error
	// List returns the live entries of doc.
	List(ctx context.Context, doc string) ([]PresenceEntry, error)
	// Subscribe delivers updates and departures (including expiries) for
	// doc from every process until ctx is cancelled.
	Subscribe(ctx context.Context, doc string) (<-chan PresenceEvent, error)
}
