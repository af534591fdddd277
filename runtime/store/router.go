package store

import (
	"context"
	"errors"
	"time"

	"github.com/tandem-dev/tandem/runtime/ot"
)

// ErrNoReceiver means a forwarded message reached no process: the replica
// it was addressed to is gone. The sender appends the submissions itself.
var ErrNoReceiver = errors.New("store: no replica is listening")

// Forwarded is one submission a replica hands to the owner of its document
// instead of appending it itself. It carries what the owner needs to run the
// normal submit path on it: the author's identity and the operation as the
// client made it (on revision Rev, not transformed).
type Forwarded struct {
	Doc    string `json:"doc"`
	Origin string `json:"origin"` // replica id to send a Reply to
	Conn   string `json:"conn"`
	Client string `json:"client"`
	User   User   `json:"user"`
	Perm   string `json:"perm"`
	Seq    int64  `json:"seq"`
	Rev    int64  `json:"rev"`
	Op     ot.Op  `json:"op"`
}

// Reply is the owner's answer to a forwarded submission that did not commit
// a new entry: a resubmission already committed as DupRev, or an error for
// the client (Code and Message). A committed submission needs no reply: the
// origin sees its entry in the log like every other.
type Reply struct {
	Doc    string `json:"doc"`
	Client string `json:"client"`
	// User is the author's user id: with Client, it names the submission
	// (a client id alone is not an identity; see docs/protocol.md).
	User    string `json:"user,omitempty"`
	Seq     int64  `json:"seq"`
	DupRev  int64  `json:"dupRev,omitempty"`
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// Routed is what arrives in a replica's inbox: submissions forwarded to it
// as a document's owner, or replies to submissions it forwarded.
type Routed struct {
	Forwarded []Forwarded `json:"forwarded,omitempty"`
	Replies   []Reply     `json:"replies,omitempty"`
}

// Router lets the replicas serving one document agree on one of them to
// append its operations, so that they stop racing on the log's
// compare-and-set. The agreement is a lease with a TTL: it is a performance
// hint, never a safety property. Two replicas that both believe they own a
// document still append with compare-and-set and only cost each other
// retries, and a forwarded submission that is lost is taken back by its
// origin. A nil Router means a single process, which always appends itself.
type Router interface {
	// Self is this replica's id, unique among the live replicas.
	Self() string
	// LeaseTTL is how long a claim lasts without renewal.
	LeaseTTL() time.Duration
	// Claim takes doc's lease for this replica when nobody holds it, renews
	// it when this replica holds it, and returns the holder either way.
	// acquired reports that the lease was free and is now this replica's.
	Claim(ctx context.Context, doc string) (owner string, acquired bool, err error)
	// Release gives up doc's lease if this replica holds it.
	Release(ctx context.Context, doc string) error
	// Forward sends submissions to replica to, at most once: delivery is not
	// confirmed. It returns ErrNoReceiver when no process listens as to.
	Forward(ctx context.Context, to string, subs []Forwarded) error
	// Reply sends replies to forwarded submissions back to replica to, at
	// most once.
	Reply(ctx context.Context, to string, replies []Reply) error
	// Inbox delivers what other replicas forward and reply to this one,
	// in the order each sender sent it, until the router is closed.
	Inbox() <-chan Routed
}
