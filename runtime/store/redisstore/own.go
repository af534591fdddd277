package redisstore

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandem-dev/tandem/runtime/store"
)

// ownCommits hands a process's own commits to its own subscriptions.
//
// The replica that holds a document's owner lease makes nearly all of its
// commits, and its subscription to the document must still deliver each of
// them (the store.Log contract: every entry, in order, no gaps). Without
// this, the owner decoded the pub/sub notification of every commit it had
// just made from entries it still held in memory: about 8 % of its CPU in
// S2 across replicas. Now Append tags its notification and leaves the
// entries here for the process's subscriptions of that document; a
// subscription that receives a notification with a tag it finds here
// delivers the entries it is given and skips the decoding. Anything else,
// such as a tag it does not know (another replica's commit) or an epoch
// that moved, takes the decoding path as before, so the contract does not
// depend on this.
type ownCommits struct {
	prefix string // unique to this Log: tags never match another process's
	seq    atomic.Uint64

	mu      sync.Mutex
	byTag   map[string]*ownCommit
	readers map[string]int // doc -> subscriptions in this process
	hits    atomic.Int64   // notifications served from here (tests)
}

// ownCommit is one Append's entries, waiting for its notification to
// reach the process's subscriptions.
type ownCommit struct {
	epoch   string
	entries []store.Entry
	left    int // subscriptions that have not taken it yet
	added   time.Time
}

// ownCommitTTL bounds how long entries wait for a notification that never
// comes (dropped by a full listener, or a subscription that ended): the
// subscription repairs such a gap from the stream anyway.
const ownCommitTTL = 10 * time.Second

func newOwnCommits() *ownCommits {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &ownCommits{prefix: hex.EncodeToString(b[:]) + "-", byTag: map[string]*ownCommit{}, readers: map[string]int{}}
}

// reading counts a subscription of doc in this process; the returned
// function ends it.
func (o *ownCommits) reading(doc string) func() {
	o.mu.Lock()
	o.readers[doc]++
	o.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			o.mu.Lock()
			if o.readers[doc]--; o.readers[doc] <= 0 {
				delete(o.readers, doc)
			}
			o.mu.Unlock()
		})
	}
}

// offer leaves entries for the process's subscriptions of doc and returns
// the tag for their notification, or "" when nobody here subscribes to
// doc. withdraw must be called with the tag if the commit fails.
func (o *ownCommits) offer(doc, epoch string, entries []store.Entry) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := o.readers[doc]
	if n == 0 {
		return ""
	}
	tag := o.prefix + strconv.FormatUint(o.seq.Add(1), 36)
	now := time.Now()
	o.byTag[tag] = &ownCommit{epoch: epoch, entries: entries, left: n, added: now}
	if o.seq.Load()%1024 == 0 {
		for t, c := range o.byTag {
			if now.Sub(c.added) > ownCommitTTL {
				delete(o.byTag, t)
			}
		}
	}
	return tag
}

func (o *ownCommits) withdraw(tag string) {
	if tag == "" {
		return
	}
	o.mu.Lock()
	delete(o.byTag, tag)
	o.mu.Unlock()
}

// take returns the entries of the commit payload announces, when this
// process made it under epoch; each subscription takes them once.
func (o *ownCommits) take(payload, epoch string) ([]store.Entry, bool) {
	tag, ok := notificationTag(payload)
	if !ok || !strings.HasPrefix(tag, o.prefix) {
		return nil, false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	c := o.byTag[tag]
	if c == nil {
		return nil, false
	}
	if c.left--; c.left <= 0 {
		delete(o.byTag, tag)
	}
	if c.epoch != epoch {
		return nil, false
	}
	o.hits.Add(1)
	return c.entries, true
}

// notificationTag reads the tag a notification starts with (the first
// field of notification) without decoding the rest.
func notificationTag(payload string) (string, bool) {
	const start = `{"tag":"`
	if !strings.HasPrefix(payload, start) {
		return "", false
	}
	rest := payload[len(start):]
	end := strings.IndexByte(rest, '"')
	if end <= 0 {
		return "", false
	}
	return rest[:end], true
}
