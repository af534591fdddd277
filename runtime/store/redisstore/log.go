package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-dev/tandem/runtime/store"
)

// Log implements store.Log on Redis Streams.
type Log struct {
	c *core

	mu sync.Mutex
	// epochs remembers the epoch under which this process first saw each
	// document; a different epoch later means the log was reset under it.
	// Entries unused for epochTTL are pruned so the map does not grow with
	// every document ever opened.
	epochs map[string]knownEpoch
	// queued holds the persistence pointers commits have asked for and
	// pointerLoop has not written yet, in commit order; wake tells
	// pointerLoop there are some.
	queued []persistPointer
	wake   chan struct{}
	// unpointed holds documents whose persistence pointer could not be
	// written; repointLoop queues them again every second.
	unpointed map[string]int64
	// own hands this process's commits to its own subscriptions without
	// a round trip through JSON (own.go).
	own *ownCommits

	flusher   *flusher
	stop      context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

var _ store.Log = (*Log)(nil)

func newLog(c *core) *Log {
	l := &Log{
		c:         c,
		epochs:    map[string]knownEpoch{},
		wake:      make(chan struct{}, 1),
		unpointed: map[string]int64{},
		own:       newOwnCommits(),
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.stop = cancel
	l.wg.Add(2)
	go func() {
		defer l.wg.Done()
		l.repointLoop(ctx)
	}()
	go func() {
		defer l.wg.Done()
		l.pointerLoop(ctx)
	}()
	if !c.opts.NoFlusher {
		l.flusher = newFlusher(c)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.flusher.run(ctx)
		}()
	}
	return l
}

// Ready fails while the breaker is open or Redis does not answer a PING.
func (l *Log) Ready(ctx context.Context) error {
	_, err := call(l.c.cb, "ping redis", func() (string, error) { return l.c.rdb.Ping(ctx).Result() })
	return err
}

// Close stops background work: queued persistence pointers are written,
// then the flusher writes what this process has read but not yet flushed
// and drains the persistence streams as far as ctx allows. Entries left
// behind stay in Redis for other replicas.
func (l *Log) Close(ctx context.Context) error {
	l.closeOnce.Do(func() {
		l.stop()
		l.wg.Wait()
		if l.flusher != nil {
			l.closeErr = l.flusher.drain(ctx)
		}
	})
	return l.closeErr
}

type metaState struct {
	head, persisted int64
	epoch           string
}

// meta returns doc's metadata, seeding it from the durable store when Redis
// has none (a new document, or Redis lost it).
func (l *Log) meta(ctx context.Context, doc string) (metaState, error) {
	vals, err := call(l.c.cb, "read meta of doc "+strconv.Quote(doc), func() ([]any, error) {
		return l.c.rdb.HMGet(ctx, metaKey(doc), "head", "epoch", "persisted").Result()
	})
	if err != nil {
		return metaState{}, err
	}
	if vals[0] != nil && vals[1] != nil {
		return parseMeta(vals[0], vals[1], vals[2])
	}
	snap, err := l.c.durable.Load(ctx, doc)
	if err != nil {
		return metaState{}, fmt.Errorf("seed doc %q: %w", doc, err)
	}
	res, err := call(l.c.cb, "seed meta of doc "+strconv.Quote(doc), func() ([]any, error) {
		return l.c.sc.meta.Run(ctx, l.c.rdb, []string{metaKey(doc), logKey(doc)}, snap.Rev, newEpoch(), l.c.opts.IdleTTL.Milliseconds()).Slice()
	})
	if err != nil {
		return metaState{}, err
	}
	if len(res) != 4 {
		return metaState{}, fmt.Errorf("seed meta of doc %q: unexpected reply %v", doc, res)
	}
	if seeded, _ := res[3].(int64); seeded == 1 && snap.Rev > 0 {
		l.c.logger.Warn("document log missing in redis; reseeded from postgres under a new epoch",
			"doc", doc, "rev", snap.Rev)
	}
	return parseMeta(res[0], res[1], res[2])
}

func parseMeta(head, epoch, persisted any) (metaState, error) {
	var m metaState
	var err error
	hs, _ := head.(string)
	if m.head, err = strconv.ParseInt(hs, 10, 64); err != nil {
		return m, fmt.Errorf("parse head %v: %w", head, err)
	}
	m.epoch, _ = epoch.(string)
	if ps, ok := persisted.(string); ok {
		if m.persisted, err = strconv.ParseInt(ps, 10, 64); err != nil {
			return m, fmt.Errorf("parse persisted %v: %w", persisted, err)
		}
	}
	return m, nil
}

func newEpoch() string {
	return strconv.FormatInt(time.Now().UnixMilli(), 36) + "-" + randomID(4)
}

// epoch returns the epoch this process works under for doc, learning it
// on first contact.
func (l *Log) epoch(ctx context.Context, doc string) (string, error) {
	l.mu.Lock()
	e, ok := l.epochs[doc]
	if ok {
		e.used = time.Now()
		l.epochs[doc] = e
	}
	l.mu.Unlock()
	if ok {
		return e.epoch, nil
	}
	m, err := l.meta(ctx, doc)
	if err != nil {
		return "", err
	}
	if err := l.observe(doc, m.epoch); err != nil {
		return "", err
	}
	if m.persisted < m.head {
		// A commit whose persistence pointer was lost (its replica died
		// between the two writes) is picked up here, the next time any
		// replica opens the document.
		l.enqueuePointer(doc, m.head)
	}
	return m.epoch, nil
}

// observe checks epoch against the one remembered for doc. A change is
// reported once (ErrReset) and then forgotten, so the caller's reload
// starts under the new epoch.
func (l *Log) observe(doc, epoch string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	known, ok := l.epochs[doc]
	if !ok {
		l.epochs[doc] = knownEpoch{epoch: epoch, used: time.Now()}
		return nil
	}
	if known.epoch != epoch {
		delete(l.epochs, doc)
		return resetError(doc)
	}
	return nil
}

// knownEpoch is an epoch this process works under and when it last did.
type knownEpoch struct {
	epoch string
	used  time.Time
}

// epochTTL is how long an unused document's epoch is remembered. Forgetting
// is safe: a document loaded again learns the current epoch, and one still
// loaded but idle that long keeps its subscription, which checks the epoch
// of every notification itself.
const epochTTL = time.Hour

func (l *Log) pruneEpochs(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for doc, e := range l.epochs {
		if now.Sub(e.used) > epochTTL {
			delete(l.epochs, doc)
		}
	}
}

func (l *Log) forget(doc string) {
	l.mu.Lock()
	delete(l.epochs, doc)
	l.mu.Unlock()
}

func resetError(doc string) error {
	return fmt.Errorf("doc %q: %w (%w)", doc, store.ErrUnavailable, ErrReset)
}

var _ store.Peeker = (*Log)(nil)

// Peek implements store.Peeker: the head as Redis holds it, creating
// nothing; known is false when Redis has no state for doc (never opened,
// or expired after it was fully persisted).
func (l *Log) Peek(ctx context.Context, doc string) (int64, bool, error) {
	vals, err := call(l.c.cb, "peek at doc "+strconv.Quote(doc), func() ([]any, error) {
		return l.c.rdb.HMGet(ctx, metaKey(doc), "head", "epoch").Result()
	})
	if err != nil {
		return 0, false, err
	}
	if vals[0] == nil || vals[1] == nil {
		return 0, false, nil
	}
	hs, _ := vals[0].(string)
	head, err := strconv.ParseInt(hs, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("peek at doc %q: parse head %v: %w", doc, vals[0], err)
	}
	return head, true, nil
}

// Head returns the current revision of doc.
func (l *Log) Head(ctx context.Context, doc string) (int64, error) {
	m, err := l.meta(ctx, doc)
	if err != nil {
		return 0, err
	}
	if err := l.observe(doc, m.epoch); err != nil {
		return 0, err
	}
	return m.head, nil
}

// notification is the pub/sub payload published by a commit.
type notification struct {
	// Tag names the Append that published it, so the subscriptions of
	// the process that made the commit take its entries from memory
	// (own.go). It must stay the first field: they read it without
	// decoding the rest.
	Tag     string            `json:"tag,omitempty"`
	Epoch   string            `json:"epoch"`
	Entries []json.RawMessage `json:"entries"`
	// Deleted: the document was deleted; subscriptions end with
	// store.ErrDeleted.
	Deleted bool `json:"deleted,omitempty"`
}

// Append commits entries at expected+1... if the head is at expected.
func (l *Log) Append(ctx context.Context, doc string, expected int64, entries []store.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	encoded := make([]json.RawMessage, len(entries))
	filled := make([]store.Entry, len(entries))
	for i := range entries {
		e := entries[i]
		if want := expected + 1 + int64(i); e.Rev != want {
			return fmt.Errorf("append to doc %q: entry %d has rev %d, want %d", doc, i, e.Rev, want)
		}
		if e.Doc != "" && e.Doc != doc {
			return fmt.Errorf("append to doc %q: entry %d belongs to doc %q", doc, i, e.Doc)
		}
		e.Doc = doc
		if e.Time.IsZero() {
			e.Time = time.Now().UTC()
		}
		raw, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("append to doc %q: encode entry %d: %w", doc, e.Rev, err)
		}
		encoded[i] = raw
		filled[i] = e
	}
	epoch, err := l.epoch(ctx, doc)
	if err != nil {
		return fmt.Errorf("append to doc %q: %w", doc, err)
	}
	tag := l.own.offer(doc, epoch, filled)
	payload, err := json.Marshal(notification{Tag: tag, Epoch: epoch, Entries: encoded})
	if err != nil {
		l.own.withdraw(tag)
		return fmt.Errorf("append to doc %q: encode notification: %w", doc, err)
	}
	args := make([]any, 0, 4+len(encoded))
	args = append(args, epoch, expected, l.c.hub.publishCommand(), opsChannel(doc), string(payload))
	for _, raw := range encoded {
		args = append(args, string(raw))
	}
	res, err := call(l.c.cb, "append to doc "+strconv.Quote(doc), func() ([]any, error) {
		return l.c.evalReplicated(ctx, l.c.sc.append, []string{metaKey(doc), logKey(doc)}, args...)
	})
	if status, _ := firstString(res); err != nil || status != "ok" {
		// The subscriptions decode whatever was published instead.
		l.own.withdraw(tag)
	}
	if err != nil {
		// Replicas that did not confirm in time leave a commit that may
		// stand on the master: it still needs its persistence pointer.
		if errors.Is(err, errNotReplicated) && len(res) == 2 && res[0] == "ok" {
			head, _ := strconv.ParseInt(fmt.Sprint(res[1]), 10, 64)
			l.queuePointer(doc, head)
		}
		return err
	}
	status, _ := res[0].(string)
	switch status {
	case "ok":
		head, _ := strconv.ParseInt(fmt.Sprint(res[1]), 10, 64)
		l.queuePointer(doc, head)
		return nil
	case "conflict":
		l.c.m.commitRetries.Inc()
		return fmt.Errorf("append to doc %q at rev %d (head %v): %w", doc, expected, res[1], store.ErrConflict)
	case "epoch", "nometa":
		l.forget(doc)
		return fmt.Errorf("append to doc %q: %w", doc, resetError(doc))
	default:
		return fmt.Errorf("append to doc %q: unexpected script reply %v", doc, res)
	}
}

func firstString(res []any) (string, bool) {
	if len(res) == 0 {
		return "", false
	}
	s, ok := res[0].(string)
	return s, ok
}

func shardOf(doc string, shards int) int {
	h := fnv.New32a()
	h.Write([]byte(doc))
	return int(h.Sum32() % uint32(shards))
}

// persistPointer is one persistence pointer: doc has commits up to rev.
type persistPointer struct {
	doc string
	rev int64
}

// queuePointer asks for a persistence pointer telling the flushers that
// doc has commits up to head. The pointer is a separate command from the
// commit (the shard lives in another Redis Cluster slot), and Append does
// not wait for it: pointerLoop writes the pointers of all commits since its
// last write in one pipeline, so a commit costs one round trip to Redis,
// not two. There is still one pointer per commit, so the flushers' batch
// size (FlushBatch) keeps counting commits. A pointer that is never
// written (Redis refuses it, or the process dies first) loses nothing: the
// commit is in the document's stream, a failed pointer is retried, the
// next commit's pointer covers it, and any replica that opens a document
// whose persisted marker is behind its head adds one (see epoch).
func (l *Log) queuePointer(doc string, head int64) {
	l.mu.Lock()
	l.queued = append(l.queued, persistPointer{doc, head})
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// pointerLoop writes queued pointers until ctx ends, then once more so
// that Close leaves none behind for the flusher's drain.
func (l *Log) pointerLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
		case <-l.wake:
		}
		if ctx.Err() != nil {
			// Last call: the ones that failed before get one more try.
			l.mu.Lock()
			for doc, head := range l.unpointed {
				l.queued = append(l.queued, persistPointer{doc, head})
			}
			l.unpointed = map[string]int64{}
			l.mu.Unlock()
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			l.writePointers(final)
			cancel()
			return
		}
		l.writePointers(ctx)
	}
}

// writePointers writes every queued pointer in one pipeline; the ones
// that fail are retried by repointLoop.
func (l *Log) writePointers(ctx context.Context) {
	l.mu.Lock()
	batch := l.queued
	if len(batch) == 0 {
		l.mu.Unlock()
		return
	}
	l.queued = nil
	l.mu.Unlock()

	cmds := make([]*redis.StringCmd, len(batch))
	_, err := call(l.c.cb, "enqueue persistence", func() ([]redis.Cmder, error) {
		return l.c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, pp := range batch {
				cmds[i] = p.XAdd(ctx, &redis.XAddArgs{
					Stream: persistShardKey(shardOf(pp.doc, l.c.opts.Shards)),
					Values: []any{"doc", pp.doc, "rev", pp.rev},
				})
			}
			return nil
		})
	})
	failed := 0
	for i, pp := range batch {
		if cmds[i] == nil || cmds[i].Err() != nil {
			failed++
			l.enqueuePointer(pp.doc, pp.rev)
		}
	}
	if failed > 0 {
		l.c.logger.Warn("persistence pointers not written; will retry", "pointers", failed, "err", err)
	}
}

func (l *Log) enqueuePointer(doc string, head int64) {
	l.mu.Lock()
	if head > l.unpointed[doc] {
		l.unpointed[doc] = head
	}
	l.mu.Unlock()
}

func (l *Log) repointLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	lastPrune := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if now.Sub(lastPrune) > time.Minute {
				l.pruneEpochs(now)
				lastPrune = now
			}
		}
		l.mu.Lock()
		pending := l.unpointed
		l.unpointed = map[string]int64{}
		l.mu.Unlock()
		for doc, head := range pending {
			l.queuePointer(doc, head)
		}
	}
}

// Read returns entries with from < rev <= to (to < 0: up to the head).
func (l *Log) Read(ctx context.Context, doc string, from, to int64) ([]store.Entry, error) {
	epoch, err := l.epoch(ctx, doc)
	if err != nil {
		return nil, fmt.Errorf("read doc %q: %w", doc, err)
	}
	entries, _, err := l.read(ctx, doc, epoch, from, to)
	return entries, err
}

// read is Read under a known epoch; it also returns the head.
func (l *Log) read(ctx context.Context, doc, epoch string, from, to int64) ([]store.Entry, int64, error) {
	entries, head, err := l.c.readLog(ctx, doc, epoch, from, to)
	if isReset(err) {
		l.forget(doc)
	}
	return entries, head, err
}

// readLog reads a range of doc's log under epoch, returning the head too.
func (c *core) readLog(ctx context.Context, doc, epoch string, from, to int64) ([]store.Entry, int64, error) {
	res, err := call(c.cb, "read doc "+strconv.Quote(doc), func() ([]any, error) {
		return c.sc.read.Run(ctx, c.rdb, []string{metaKey(doc), logKey(doc)}, from, to, c.opts.IdleTTL.Milliseconds()).Slice()
	})
	if err != nil {
		return nil, 0, err
	}
	return parseRead(doc, epoch, from, to, res)
}

// parseRead decodes the reply of the read script (lua/read.lua) for the
// range from < rev <= to of doc under epoch.
func parseRead(doc, epoch string, from, to int64, res []any) ([]store.Entry, int64, error) {
	if len(res) < 2 {
		return nil, 0, resetError(doc)
	}
	head, err := strconv.ParseInt(fmt.Sprint(res[0]), 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("read doc %q: parse head: %w", doc, err)
	}
	if ep, _ := res[1].(string); ep != epoch {
		return nil, 0, resetError(doc)
	}
	last := to
	if last < 0 || last > head {
		last = head
	}
	if from >= last {
		return nil, head, nil
	}
	entries := make([]store.Entry, 0, len(res)-2)
	for _, v := range res[2:] {
		s, _ := v.(string)
		var e store.Entry
		if err := json.Unmarshal([]byte(s), &e); err != nil {
			return nil, 0, fmt.Errorf("read doc %q: decode entry: %w", doc, err)
		}
		entries = append(entries, e)
	}
	if int64(len(entries)) != last-from || entries[0].Rev != from+1 {
		return nil, head, fmt.Errorf("read doc %q revs %d..%d: %w", doc, from+1, last, store.ErrTrimmed)
	}
	return entries, head, nil
}

// isReset reports whether err says the document's log was reset.
func isReset(err error) bool { return errors.Is(err, ErrReset) }

var _ store.Deleter = (*Log)(nil)

// Delete implements store.Deleter: the document's keys go (log, metadata,
// owner lease, presence), every replica's subscriptions to it end with
// store.ErrDeleted (pub/sub), and its rows go from the durable store. The
// keys are deleted again after the durable store, in case a replica
// reseeded the document from it in between. A persistence pointer left
// for it finds no log and writes nothing.
func (l *Log) Delete(ctx context.Context, doc string) error {
	payload, err := json.Marshal(notification{Deleted: true})
	if err != nil {
		return fmt.Errorf("delete doc %q: %w", doc, err)
	}
	del := func() error {
		_, err := call(l.c.cb, "delete doc "+strconv.Quote(doc), func() (any, error) {
			return l.c.sc.delete.Run(ctx, l.c.rdb,
				[]string{metaKey(doc), logKey(doc), ownerKey(doc), presenceKey(doc), presenceExpKey(doc)},
				opsChannel(doc), string(payload), l.c.hub.publishCommand()).Result()
		})
		return err
	}
	if err := del(); err != nil {
		return err
	}
	l.forget(doc)
	if a, ok := l.c.durable.(store.Archive); ok {
		if err := a.Delete(ctx, doc); err != nil {
			return fmt.Errorf("delete doc %q from the durable store: %w", doc, err)
		}
		if err := del(); err != nil {
			return err
		}
	}
	return nil
}
