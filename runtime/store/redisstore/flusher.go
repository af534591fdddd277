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
// retry (bad data rather than an outage); such batches are dead-lettered
// after MaxDeliveries instead of being retried forever.
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
}

func newFlusher(c *core) *flusher {
	f := &flusher{c: c}
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
		res, err := call(f.c.cb, "read persistence stream "+s, func() ([]redis.XStream, error) {
			return f.c.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
				Group: flushGroup, Consumer: f.c.opts.Consumer,
				Streams: []string{s, id}, Count: int64(n - len(out)), Block: -1,
			}).Result()
		})
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			if strings.Contains(err.Error(), "NOGROUP") {
				f.groupsOK = false // the stream was lost (Redis restart without data)
			}
			return out, err
		}
		for _, st := range res {
			out = append(out, parsePointers(st.Stream, st.Messages)...)
		}
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
		msgs, _, err := call2(f, "claim idle persistence entries on "+s, func() ([]redis.XMessage, string, error) {
			return f.c.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
				Stream: s, Group: flushGroup, Consumer: f.c.opts.Consumer,
				MinIdle: f.c.opts.ClaimIdle, Start: "0-0", Count: int64(n - len(out)),
			}).Result()
		})
		if err != nil {
			if strings.Contains(err.Error(), "NOGROUP") {
				f.groupsOK = false
			}
			return out, err
		}
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
// here with backoff, holding the batch, so an outage never burns delivery
// attempts; a permanent failure is narrowed down to the offending
// documents, whose pointers stay pending and are dead-lettered once they
// have been delivered MaxDeliveries times.
func (f *flusher) process(ctx context.Context, batch []pointerMsg) {
	works := f.group(batch)
	backoff := 100 * time.Millisecond
	for {
		err := f.prepareAndWrite(ctx, works)
		if err == nil {
			return
		}
		f.c.m.flushErrors.Inc()
		if ctx.Err() != nil {
			return
		}
		if f.isPerm(err) {
			f.c.logger.Error("flush batch rejected; isolating documents", "err", err)
			f.isolate(ctx, works)
			return
		}
		f.c.logger.Warn("flush failed; retrying", "err", err, "in", backoff)
		sleep(ctx, backoff)
		backoff = min(backoff*2, 2*time.Second)
	}
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
		if err := f.c.durable.Write(ctx, all); err != nil {
			return fmt.Errorf("write %d entries: %w", len(all), err)
		}
	}
	f.finish(ctx, works)
	f.c.m.flushBatch.Observe(float64(len(all)))
	f.c.m.flushLatency.Observe(time.Since(start).Seconds())
	return nil
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
						w.epoch, w.upTo, f.c.opts.Tail)
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
// hold back the rest, and handles the ones that still fail.
func (f *flusher) isolate(ctx context.Context, works []*docWork) {
	for _, w := range works {
		err := f.prepareAndWrite(ctx, []*docWork{w})
		if err == nil {
			continue
		}
		if !f.isPerm(err) {
			f.c.logger.Warn("flush of document failed; left pending", "doc", w.doc, "err", err)
			continue
		}
		f.deadLetterIfExhausted(ctx, w, err)
	}
}

func (f *flusher) deadLetterIfExhausted(ctx context.Context, w *docWork, cause error) {
	for _, p := range w.pointers {
		pend, err := call(f.c.cb, "inspect pending entry", func() ([]redis.XPendingExt, error) {
			return f.c.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
				Stream: p.stream, Group: flushGroup, Start: p.id, End: p.id, Count: 1,
			}).Result()
		})
		if err != nil || len(pend) == 0 {
			continue
		}
		if pend[0].RetryCount < f.c.opts.MaxDeliveries {
			f.c.logger.Warn("flush of document failed; will retry after claim", "doc", w.doc,
				"rev", p.rev, "deliveries", pend[0].RetryCount, "err", cause)
			continue
		}
		_, err = call(f.c.cb, "dead-letter persistence entry", func() (string, error) {
			return f.c.rdb.XAdd(ctx, &redis.XAddArgs{
				Stream: deadLetterKey(),
				Values: []any{"doc", p.doc, "rev", p.rev, "stream", p.stream, "id", p.id,
					"deliveries", pend[0].RetryCount, "error", cause.Error(), "consumer", f.c.opts.Consumer},
			}).Result()
		})
		if err != nil {
			f.c.logger.Warn("dead-lettering failed", "doc", p.doc, "err", err)
			continue
		}
		if err := f.ack(ctx, []pointerMsg{p}); err != nil {
			f.c.logger.Warn("acknowledging dead letter failed", "doc", p.doc, "err", err)
			continue
		}
		f.c.m.deadLetters.Inc()
		f.c.logger.Error("persistence entry dead-lettered", "doc", p.doc, "rev", p.rev,
			"deliveries", pend[0].RetryCount, "err", cause)
	}
}

// updateLag publishes how many commits wait for PostgreSQL. Flushers
// delete pointers once acknowledged, so the shard streams' lengths are
// exactly the commits not yet flushed (pending or never delivered). It
// runs on its own ticker, so the gauge keeps growing while the flusher is
// stuck retrying an outage.
func (f *flusher) updateLag(ctx context.Context) {
	var total int64
	for _, s := range f.streams {
		n, err := call(f.c.cb, "measure flush lag", func() (int64, error) {
			return f.c.rdb.XLen(ctx, s).Result()
		})
		if err != nil {
			return
		}
		total += n
	}
	f.c.m.flushLag.Set(float64(total))
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
// pointers and any new ones, until none remain or ctx ends.
func (f *flusher) drain(ctx context.Context) error {
	if err := f.ensureGroups(ctx); err != nil {
		return fmt.Errorf("final flush: %w", err)
	}
	for _, id := range []string{"0", ">"} {
		for ctx.Err() == nil {
			batch, err := f.readNew(ctx, f.c.opts.FlushBatch, id)
			if err != nil {
				return fmt.Errorf("final flush: %w", err)
			}
			if len(batch) == 0 {
				break
			}
			if err := f.prepareAndWrite(ctx, f.group(batch)); err != nil {
				return fmt.Errorf("final flush: %w", err)
			}
		}
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
