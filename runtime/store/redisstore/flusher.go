package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-dev/tandem/runtime/store"
)

// flushGroup is the consumer group every replica's flusher joins.
const flushGroup = "flushers"

// PermanentError lets a durable store mark Write errors that will recur on
// retry (bad data rather than an outage); such a batch is split into its
// documents at once instead of being retried whole.
type PermanentError interface{ Permanent() bool }

// flusher moves committed operations from Redis to the durable store. It
// reads persistence pointers ("doc D has commits up to rev R") from the
// shard streams through the shared consumer group, loads the entries each
// document has beyond its persisted marker, writes them in one durable
// transaction, and only then advances the markers, trims the documents'
// streams and acknowledges the pointers.
type flusher struct {
	c        *core
	streams  []string
	isPerm   func(error) bool
	groupsOK bool
	// failing holds the documents whose own write the durable store
	// refused while it was up, by id. Only the flusher's goroutine (run,
	// then drain) touches it.
	failing map[string]*failure
	// claimFrom is where the next XAUTOCLAIM scan of each stream starts.
	claimFrom map[string]string
}

// failure is what the flusher remembers of a document whose write keeps
// being refused. Its pointers are never acknowledged meanwhile: they stay
// pending, so the commits stay in Redis (streams are trimmed only below
// what PostgreSQL holds), count in the flush lag, and are written as soon
// as PostgreSQL takes them.
type failure struct {
	since    time.Time // first refusal
	last     time.Time // last attempt
	logged   time.Time // last time it was logged
	retryAt  time.Time // no new attempt before this
	backoff  time.Duration
	err      string
	attempts int
}

func newFlusher(c *core) *flusher {
	f := &flusher{c: c, failing: map[string]*failure{}, claimFrom: map[string]string{}}
	for i := 0; i < c.opts.Shards; i++ {
		f.streams = append(f.streams, persistShardKey(i))
	}
	f.isPerm = c.opts.IsPermanent
	if f.isPerm == nil {
		f.isPerm = func(err error) bool {
			var p PermanentError
			return errors.As(err, &p) && p.Permanent()
		}
	}
	return f
}

func (f *flusher) ensureGroups(ctx context.Context) error {
	if f.groupsOK {
		return nil
	}
	for _, s := range f.streams {
		_, err := call(f.c.cb, "create flusher group on "+s, func() (string, error) {
			return f.c.rdb.XGroupCreateMkStream(ctx, s, flushGroup, "0").Result()
		})
		if err != nil && !strings.Contains(err.Error(), "BUSYGROUP") {
			return err
		}
	}
	f.groupsOK = true
	f.claimFrom = map[string]string{} // the streams may be new
	return nil
}

type pointerMsg struct {
	stream string
	id     string
	doc    string
	rev    int64
}

func (f *flusher) run(ctx context.Context) {
	lagDone := make(chan struct{})
	go func() {
		defer close(lagDone)
		f.lagLoop(ctx)
	}()
	defer func() { <-lagDone }()
	for ctx.Err() == nil {
		batch, err := f.collect(ctx)
		f.expireFailing()
		if len(batch) > 0 {
			// Pointers already read are in this consumer's pending list;
			// write them now rather than wait for a claim.
			f.process(ctx, batch)
		}
		if err != nil && ctx.Err() == nil {
			f.c.logger.Warn("flusher read failed", "err", err)
			sleep(ctx, f.c.opts.FlushInterval)
		}
	}
}

// collect gathers pointers until FlushBatch of them or FlushInterval has
// passed since the first one, claiming entries other consumers left idle.
func (f *flusher) collect(ctx context.Context) ([]pointerMsg, error) {
	if err := f.ensureGroups(ctx); err != nil {
		return nil, err
	}
	var batch []pointerMsg
	poll := f.c.opts.FlushInterval / 10
	if poll < 5*time.Millisecond {
		poll = 5 * time.Millisecond
	}
	// While nothing arrives, return now and then so idle entries of other
	// consumers get claimed even under a long flush interval.
	idleReturn := min(f.c.opts.FlushInterval, f.c.opts.ClaimIdle/2, time.Second)
	claimed, err := f.claim(ctx, f.c.opts.FlushBatch)
	if err != nil {
		return nil, err
	}
	batch = append(batch, claimed...)
	began := time.Now()
	var first time.Time // the interval runs from the first pointer
	if len(batch) > 0 {
		first = began
	}
	for len(batch) < f.c.opts.FlushBatch && ctx.Err() == nil {
		got, err := f.readNew(ctx, f.c.opts.FlushBatch-len(batch), ">")
		if err != nil {
			return batch, err
		}
		batch = append(batch, got...)
		if first.IsZero() && len(batch) > 0 {
			first = time.Now()
		}
		if !first.IsZero() && time.Since(first) >= f.c.opts.FlushInterval {
			break
		}
		if first.IsZero() && time.Since(began) >= idleReturn {
			break
		}
		if len(got) == 0 {
			sleep(ctx, poll)
		}
	}
	return batch, nil
}

// readNew reads up to n pointers from the shards without blocking (one
// shard per command, so it works on Redis Cluster). id ">" reads new
// entries, "0" re-reads this consumer's own pending ones.
func (f *flusher) readNew(ctx context.Context, n int, id string) ([]pointerMsg, error) {
	var out []pointerMsg
	for _, s := range f.streams {
		if len(out) >= n {
			break
		}
		got, err := f.readStream(ctx, s, n-len(out), id)
		if err != nil {
			return out, err
		}
		out = append(out, got...)
	}
	return out, nil
}

// readStream reads up to n pointers of stream s after id (">": new ones).
func (f *flusher) readStream(ctx context.Context, s string, n int, id string) ([]pointerMsg, error) {
	res, err := call(f.c.cb, "read persistence stream "+s, func() ([]redis.XStream, error) {
		return f.c.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: flushGroup, Consumer: f.c.opts.Consumer,
			Streams: []string{s, id}, Count: int64(n), Block: -1,
		}).Result()
	})
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		if strings.Contains(err.Error(), "NOGROUP") {
			f.groupsOK = false // the stream was lost (Redis restart without data)
		}
		return nil, err
	}
	var out []pointerMsg
	for _, st := range res {
		out = append(out, parsePointers(st.Stream, st.Messages)...)
	}
	return out, nil
}

// claim takes over pointers that sat unacknowledged longer than ClaimIdle,
// normally left by a replica that died mid-batch (or this one, after a
// failed attempt).
func (f *flusher) claim(ctx context.Context, n int) ([]pointerMsg, error) {
	var out []pointerMsg
	for _, s := range f.streams {
		if len(out) >= n {
			break
		}
		start := f.claimFrom[s]
		if start == "" {
			start = "0-0"
		}
		msgs, next, err := call2(f, "claim idle persistence entries on "+s, func() ([]redis.XMessage, string, error) {
			return f.c.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
				Stream: s, Group: flushGroup, Consumer: f.c.opts.Consumer,
				MinIdle: f.c.opts.ClaimIdle, Start: start, Count: int64(n - len(out)),
			}).Result()
		})
		if err != nil {
			if strings.Contains(err.Error(), "NOGROUP") {
				f.groupsOK = false
			}
			return out, err
		}
		// Go on from where this claim stopped next time ("0-0" once the
		// scan is complete), so that many pending pointers of a document
		// PostgreSQL refuses cannot hide other idle ones behind them.
		f.claimFrom[s] = next
		if len(msgs) > 0 {
			f.c.logger.Info("claimed idle persistence entries", "stream", s, "count", len(msgs))
		}
		out = append(out, parsePointers(s, msgs)...)
	}
	return out, nil
}

func call2[A, B any](f *flusher, what string, fn func() (A, B, error)) (A, B, error) {
	type pair struct {
		a A
		b B
	}
	p, err := call(f.c.cb, what, func() (pair, error) {
		a, b, err := fn()
		return pair{a, b}, err
	})
	return p.a, p.b, err
}

func parsePointers(stream string, msgs []redis.XMessage) []pointerMsg {
	out := make([]pointerMsg, 0, len(msgs))
	for _, m := range msgs {
		doc, _ := m.Values["doc"].(string)
		revS, _ := m.Values["rev"].(string)
		rev, _ := strconv.ParseInt(revS, 10, 64)
		out = append(out, pointerMsg{stream: stream, id: m.ID, doc: doc, rev: rev})
	}
	return out
}

// docWork is one document's share of a batch.
type docWork struct {
	doc      string
	pointers []pointerMsg
	epoch    string
	entries  []store.Entry
	upTo     int64
}

// process writes one batch. Transient failures (PostgreSQL down) are retried
// here with backoff, holding the batch, so an outage costs no more than the
// outage. A write refused while PostgreSQL answers is about the data, not
// an outage: the batch is written document by document so that one poison
// document cannot hold back the others, and a document that is still
// refused is marked failing and retried on its own with a backoff. Its
// pointers are never acknowledged before its commits are in PostgreSQL.
func (f *flusher) process(ctx context.Context, batch []pointerMsg) {
	var healthy []*docWork
	for _, w := range f.group(batch) {
		if f.failing[w.doc] != nil {
			f.retryFailing(ctx, w)
			continue
		}
		healthy = append(healthy, w)
	}
	if len(healthy) == 0 {
		return
	}
	backoff := 100 * time.Millisecond
	for {
		err := f.prepareAndWrite(ctx, healthy)
		if err == nil {
			return
		}
		if ctx.Err() == nil && refusedData(err) && (f.isPerm(err) || f.durableAnswers(ctx)) {
			// Not a flush error: PostgreSQL answers and refuses some
			// document's rows. Those documents are counted as failing
			// below; counting the refusal here too would page as
			// TandemPostgresUnreachable while PostgreSQL is up.
			f.c.logger.Warn("flush batch refused while PostgreSQL answers; writing its documents one by one",
				"docs", len(healthy), "err", err)
			f.isolate(ctx, healthy)
			return
		}
		f.c.m.flushErrors.Inc()
		if ctx.Err() != nil {
			return
		}
		f.c.logger.Warn("flush failed; retrying", "err", err, "in", backoff)
		sleep(ctx, backoff)
		backoff = min(backoff*2, 2*time.Second)
	}
}

// writeError is a failure of the durable store's Write, as opposed to one
// of the Redis reads and writes around it: only such a failure says
// something about a document's data.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

func refusedData(err error) bool {
	var we *writeError
	return errors.As(err, &we)
}

// durableAnswers reports whether the durable store is up (PostgreSQL
// answers a ping), which makes a failed write a refusal of its data.
func (f *flusher) durableAnswers(ctx context.Context) bool {
	p, ok := f.c.durable.(interface{ Ping(context.Context) error })
	if !ok {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return p.Ping(ctx) == nil
}

func (f *flusher) group(batch []pointerMsg) []*docWork {
	index := map[string]*docWork{}
	var works []*docWork
	for _, p := range batch {
		w, ok := index[p.doc]
		if !ok {
			w = &docWork{doc: p.doc}
			index[p.doc] = w
			works = append(works, w)
		}
		w.pointers = append(w.pointers, p)
		if p.rev > w.upTo {
			w.upTo = p.rev
		}
	}
	return works
}

// prepareAndWrite loads each document's unpersisted entries, writes all of
// them in one durable transaction, then records and acknowledges. The Redis
// side takes a fixed number of round trips whatever the number of
// documents: one pipeline reads their metadata, one their log ranges, one
// marks them persisted and one per shard acknowledges the pointers.
func (f *flusher) prepareAndWrite(ctx context.Context, works []*docWork) error {
	if err := f.prepare(ctx, works); err != nil {
		return err
	}
	var all []store.Entry
	for _, w := range works {
		all = append(all, w.entries...)
	}
	start := time.Now()
	if len(all) > 0 {
		if err := f.write(ctx, works, all); err != nil {
			err = fmt.Errorf("write %d entries of %d docs: %w", len(all), len(works), err)
			var ce *checkError
			if errors.As(err, &ce) {
				return err // Redis failed, not the write: an outage
			}
			return &writeError{err}
		}
	}
	f.recovered(works)
	f.finish(ctx, works)
	f.c.m.flushBatch.Observe(float64(len(all)))
	f.c.m.flushLatency.Observe(time.Since(start).Seconds())
	return nil
}

// write stores the entries prepared for works. A document deleted since
// they were read from Redis must not come back as the part of its history
// this flush holds: where the durable store can, the write checks each
// document's epoch (its generation: a delete drops it, the next open
// starts a new one) while the document is held against deletion, and
// leaves out the documents whose epoch is no longer the one read.
func (f *flusher) write(ctx context.Context, works []*docWork, all []store.Entry) error {
	cw, ok := f.c.durable.(store.CheckedWriter)
	if !ok {
		return f.c.durable.Write(ctx, all)
	}
	byDoc := make(map[string]*docWork, len(works))
	for _, w := range works {
		byDoc[w.doc] = w
	}
	stale, err := cw.WriteChecked(ctx, all, func(ctx context.Context, docs []string) ([]string, error) {
		stale, err := f.staleDocs(ctx, docs, byDoc)
		if err != nil {
			return nil, &checkError{err}
		}
		return stale, nil
	})
	if err != nil {
		return err
	}
	for _, doc := range stale {
		if w := byDoc[doc]; w != nil {
			f.c.logger.Info("flush of a deleted document discarded", "doc", doc, "entries", len(w.entries))
			// Nothing to mark persisted: only its pointers are acknowledged.
			w.epoch, w.entries = "", nil
		}
	}
	return nil
}

// checkError is a failure to read the epochs a checked write compares:
// Redis's failure, which says nothing about the documents' data.
type checkError struct{ err error }

func (e *checkError) Error() string { return e.err.Error() }
func (e *checkError) Unwrap() error { return e.err }

// staleDocs returns those of docs whose epoch in Redis is not the one
// their entries were read under (missing: deleted or expired).
func (f *flusher) staleDocs(ctx context.Context, docs []string, byDoc map[string]*docWork) ([]string, error) {
	epochs := make([]*redis.SliceCmd, len(docs))
	_, err := call(f.c.cb, fmt.Sprintf("check epochs of %d docs", len(docs)), func() ([]redis.Cmder, error) {
		return f.c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, d := range docs {
				// HMGET answers nil for a missing key, not an error.
				epochs[i] = p.HMGet(ctx, metaKey(d), "epoch")
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	var stale []string
	for i, d := range docs {
		vals, err := epochs[i].Result()
		if err != nil {
			return nil, fmt.Errorf("epoch of doc %q: %w", d, err)
		}
		e, _ := vals[0].(string)
		if w := byDoc[d]; w == nil || e == "" || e != w.epoch {
			stale = append(stale, d)
		}
	}
	return stale, nil
}

// prepare sets each document's epoch, the revision it is to be written up
// to, and the entries above its persisted marker.
func (f *flusher) prepare(ctx context.Context, works []*docWork) error {
	metas := make([]*redis.SliceCmd, len(works))
	_, err := call(f.c.cb, fmt.Sprintf("read meta of %d docs", len(works)), func() ([]redis.Cmder, error) {
		return f.c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, w := range works {
				metas[i] = p.HMGet(ctx, metaKey(w.doc), "head", "epoch", "persisted")
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	type rangeRead struct {
		w        *docWork
		from, to int64
		cmd      *redis.Cmd
	}
	var reads []rangeRead
	for i, w := range works {
		w.entries = nil
		vals, err := metas[i].Result()
		if err != nil {
			return fmt.Errorf("read meta of doc %q: %w", w.doc, err)
		}
		if vals[0] == nil || vals[1] == nil {
			w.epoch = "" // the document's log is gone; nothing to write
			continue
		}
		m, err := parseMeta(vals[0], vals[1], vals[2])
		if err != nil {
			return fmt.Errorf("doc %q: %w", w.doc, err)
		}
		w.epoch = m.epoch
		upTo := min(w.upTo, m.head)
		if upTo <= m.persisted {
			w.upTo = m.persisted
			continue
		}
		w.upTo = upTo
		reads = append(reads, rangeRead{w: w, from: m.persisted, to: upTo})
	}
	if len(reads) == 0 {
		return nil
	}
	// EVAL rather than EVALSHA: a pipeline cannot fall back to EVAL when
	// Redis lost its script cache, and the script is short.
	_, err = call(f.c.cb, fmt.Sprintf("read unflushed entries of %d docs", len(reads)), func() ([]redis.Cmder, error) {
		return f.c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := range reads {
				r := &reads[i]
				r.cmd = f.c.sc.read.Eval(ctx, p, []string{metaKey(r.w.doc), logKey(r.w.doc)}, r.from, r.to)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, r := range reads {
		res, err := r.cmd.Slice()
		if err != nil {
			return fmt.Errorf("load unflushed entries of doc %q: %w", r.w.doc, err)
		}
		entries, _, err := parseRead(r.w.doc, r.w.epoch, r.from, r.to, res)
		if err != nil {
			return fmt.Errorf("load unflushed entries of doc %q: %w", r.w.doc, err)
		}
		r.w.entries = entries
	}
	return nil
}

// finish advances the documents' persisted markers (trimming their
// streams) and acknowledges and deletes their pointers. The data is safely
// in PostgreSQL already: a document whose marker or pointers could not be
// updated is logged, and its pointers are claimed and rewritten
// (idempotently) later.
func (f *flusher) finish(ctx context.Context, works []*docWork) {
	marks := make([]*redis.Cmd, len(works))
	_, err := call(f.c.cb, fmt.Sprintf("mark %d docs persisted", len(works)), func() ([]redis.Cmder, error) {
		return f.c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, w := range works {
				if w.epoch != "" && w.upTo > 0 {
					marks[i] = f.c.sc.persisted.Eval(ctx, p, []string{metaKey(w.doc), logKey(w.doc)},
						w.epoch, w.upTo, f.c.opts.Tail, f.c.opts.TailBytes, f.c.opts.IdleTTL.Milliseconds())
				}
			}
			return nil
		})
	})
	var done []pointerMsg
	for i, w := range works {
		if w.epoch != "" && w.upTo > 0 {
			if marks[i] == nil || marks[i].Err() != nil {
				merr := err
				if marks[i] != nil {
					merr = marks[i].Err()
				}
				f.c.logger.Warn("marking flushed entries persisted failed", "doc", w.doc, "err", merr)
				continue
			}
		}
		done = append(done, w.pointers...)
	}
	if err := f.ack(ctx, done); err != nil {
		f.c.logger.Warn("acknowledging flushed entries failed", "pointers", len(done), "err", err)
	}
}

func (f *flusher) ack(ctx context.Context, ps []pointerMsg) error {
	byStream := map[string][]string{}
	for _, p := range ps {
		byStream[p.stream] = append(byStream[p.stream], p.id)
	}
	for s, ids := range byStream {
		_, err := call(f.c.cb, "acknowledge persistence entries on "+s, func() ([]redis.Cmder, error) {
			return f.c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.XAck(ctx, s, flushGroup, ids...)
				p.XDel(ctx, s, ids...)
				return nil
			})
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// isolate writes each document on its own so one bad document does not
// hold back the rest; the ones still refused are marked failing.
func (f *flusher) isolate(ctx context.Context, works []*docWork) {
	for _, w := range works {
		f.writeAlone(ctx, w)
	}
}

// retryFailing writes a failing document on its own once its backoff has
// passed. Until then its pointers stay pending: they come back with the
// document's next commit or, at the latest, when they are claimed after
// ClaimIdle.
func (f *flusher) retryFailing(ctx context.Context, w *docWork) {
	if time.Now().Before(f.failing[w.doc].retryAt) {
		return
	}
	f.writeAlone(ctx, w)
}

func (f *flusher) writeAlone(ctx context.Context, w *docWork) {
	err := f.prepareAndWrite(ctx, []*docWork{w})
	if err == nil {
		return
	}
	if !refusedData(err) {
		f.c.m.flushErrors.Inc()
		if ctx.Err() == nil {
			f.c.logger.Warn("flush of document failed; left pending", "doc", w.doc, "err", err)
		}
		return
	}
	if ctx.Err() != nil {
		return
	}
	// A refused write of one document, first or retried, is counted by
	// markFailing (tandem_flush_document_failures_total and the failing
	// documents gauge), not as a flush error: its retries come at least
	// every ClaimIdle and would keep TandemPostgresUnreachable firing next
	// to TandemDocumentFlushFailing while PostgreSQL is up.
	f.markFailing(w.doc, err)
}

// markFailing records a refused write of doc. The first refusal and every
// change of reason are logged at once, a lasting one every minute.
func (f *flusher) markFailing(doc string, cause error) {
	now := time.Now()
	f.c.m.docFailures.Inc()
	fl := f.failing[doc]
	if fl == nil {
		fl = &failure{since: now, backoff: f.c.opts.FlushInterval}
		f.failing[doc] = fl
		f.c.m.failingDocs.Set(float64(len(f.failing)))
	} else {
		fl.backoff = min(2*fl.backoff, f.c.opts.ClaimIdle)
	}
	fl.attempts++
	fl.last = now
	fl.retryAt = now.Add(fl.backoff)
	if msg := cause.Error(); msg != fl.err || now.Sub(fl.logged) >= time.Minute {
		fl.err = msg
		fl.logged = now
		f.c.logger.Error("flush of document failing: its commits stay in Redis and are retried; fix the cause (see docs/operations.md)",
			"doc", doc, "err", cause, "failing_for", now.Sub(fl.since).Round(time.Second),
			"attempts", fl.attempts, "retry_in", fl.backoff)
	}
}

// recovered forgets the documents of works that were failing: their
// commits are in PostgreSQL now.
func (f *flusher) recovered(works []*docWork) {
	for _, w := range works {
		if fl := f.failing[w.doc]; fl != nil {
			delete(f.failing, w.doc)
			f.c.logger.Info("flush of document recovered", "doc", w.doc,
				"failed_for", time.Since(fl.since).Round(time.Second), "attempts", fl.attempts)
		}
	}
	f.c.m.failingDocs.Set(float64(len(f.failing)))
}

// expireFailing forgets documents this flusher has not tried for a while:
// another replica claimed their pointers (and counts them if they still
// fail), or their log is gone.
func (f *flusher) expireFailing() {
	for doc, fl := range f.failing {
		if time.Since(fl.last) > 3*f.c.opts.ClaimIdle+f.c.opts.FlushInterval {
			delete(f.failing, doc)
		}
	}
	f.c.m.failingDocs.Set(float64(len(f.failing)))
}

// updateLag publishes how many commits wait for PostgreSQL and how long the
// oldest has waited. Flushers delete a pointer only once its commits are
// in PostgreSQL, so the shard streams hold exactly the commits not yet
// flushed (pending, never delivered, or refused and retried), and the
// oldest pointer's ID (the Redis time it was written, just after its
// commit) dates the oldest of them. It runs on its own ticker, so the
// gauges keep growing while the flusher is stuck retrying an outage or a
// document PostgreSQL refuses.
func (f *flusher) updateLag(ctx context.Context) {
	lens := make([]*redis.IntCmd, len(f.streams))
	firsts := make([]*redis.XMessageSliceCmd, len(f.streams))
	var now *redis.TimeCmd
	_, err := call(f.c.cb, "measure flush lag", func() ([]redis.Cmder, error) {
		return f.c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, s := range f.streams {
				lens[i] = p.XLen(ctx, s)
				firsts[i] = p.XRangeN(ctx, s, "-", "+", 1)
			}
			now = p.Time(ctx)
			return nil
		})
	})
	if err != nil {
		return
	}
	var total int64
	var oldest time.Time
	for i := range f.streams {
		total += lens[i].Val()
		for _, m := range firsts[i].Val() {
			if t, ok := streamIDTime(m.ID); ok && (oldest.IsZero() || t.Before(oldest)) {
				oldest = t
			}
		}
	}
	f.c.m.flushLag.Set(float64(total))
	age := 0.0
	if !oldest.IsZero() {
		// Redis's clock on both sides, so a skewed replica clock cannot
		// hide a backlog.
		age = max(now.Val().Sub(oldest).Seconds(), 0)
	}
	f.c.m.oldestUnpersisted.Set(age)
}

// streamIDTime is the time in a stream entry ID "<ms>-<seq>".
func streamIDTime(id string) (time.Time, bool) {
	ms, _, ok := strings.Cut(id, "-")
	if !ok {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.UnixMilli(n), true
}

func (f *flusher) lagLoop(ctx context.Context) {
	t := time.NewTicker(min(f.c.opts.FlushInterval, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f.updateLag(ctx)
		}
	}
}

// drain flushes what is left on shutdown: this consumer's own pending
// pointers and any new ones, until none remain or ctx ends. A document
// PostgreSQL refuses does not stop the others; its pointers stay pending
// for the other replicas' flushers, and the error names it.
func (f *flusher) drain(ctx context.Context) error {
	if err := f.ensureGroups(ctx); err != nil {
		return fmt.Errorf("final flush: %w", err)
	}
	var refused []error
	write := func(batch []pointerMsg) error {
		works := f.group(batch)
		err := f.prepareAndWrite(ctx, works)
		if err == nil {
			return nil
		}
		if !refusedData(err) {
			return fmt.Errorf("final flush: %w", err)
		}
		for _, w := range works {
			if err := f.prepareAndWrite(ctx, []*docWork{w}); err != nil {
				if !refusedData(err) {
					return fmt.Errorf("final flush: %w", err)
				}
				refused = append(refused, fmt.Errorf("doc %q: %w", w.doc, err))
			}
		}
		return nil
	}
	// Pending pointers are read stream by stream from after the last one
	// read, so refused ones (which stay pending) are not read again.
	for _, s := range f.streams {
		after := "0"
		for ctx.Err() == nil {
			batch, err := f.readStream(ctx, s, f.c.opts.FlushBatch, after)
			if err != nil {
				return fmt.Errorf("final flush: %w", err)
			}
			if len(batch) == 0 {
				break
			}
			after = batch[len(batch)-1].id
			if err := write(batch); err != nil {
				return err
			}
		}
	}
	for ctx.Err() == nil {
		batch, err := f.readNew(ctx, f.c.opts.FlushBatch, ">")
		if err != nil {
			return fmt.Errorf("final flush: %w", err)
		}
		if len(batch) == 0 {
			break
		}
		if err := write(batch); err != nil {
			return err
		}
	}
	if len(refused) > 0 {
		return fmt.Errorf("final flush: PostgreSQL refused %d documents, left in Redis for the other replicas: %w",
			len(refused), errors.Join(refused...))
	}
	return ctx.Err()
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
