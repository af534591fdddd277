package doc

// The submit path, in one place. A client made operation op on the text at
// revision rev and numbered it seq. To commit it:
//
//  0. Validate the operation's shape and content (bad_op).
//  1. Refuse a base revision in the future, or older than the in-memory
//     window (bad_revision: the client resyncs and resubmits), so that no
//     submission costs more than Window transforms.
//  2. Collect the entries committed after the base: from the in-memory
//     window, else the log, else the durable store.
//  3. If one of them carries the same author (user and client id) and
//     seq, this is a resubmission after a reconnect: ack it again with that
//     revision and never apply it twice. A seq at or below the author's
//     highest committed or queued one is refused.
//  4. Transform op against each of them in order, with the incoming
//     operation's inserts first on ties (ot.Left); the browser client
//     mirrors the rule.
//  5. Check it against the current length and the document size limit.
//  6. Append it to the log at the expected head (compare-and-set). Queued
//     submissions go in one batch, each transformed against the ones before
//     it. On a conflict another writer (a replica) got there first: apply
//     its entries, redo 2-6; after MaxRetries the submitters get a
//     retryable "unavailable".
//  7. Apply the committed entries in revision order and send each to every
//     member: an ack to the author's connection, the operation to the rest.
//
// With a Router (distributed mode), a replica that does not hold the
// document's owner lease runs 0-5 only to answer errors and resubmissions,
// and forwards the rest to the holder, which runs the whole path on them
// in its own batches; see route.go.

import (
	"errors"
	"time"
	"unicode/utf8"

	"github.com/tandem-dev/tandem/runtime/metrics"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/protocol"
	"github.com/tandem-dev/tandem/runtime/store"
)

// outcome is what one submission in a batch came to.
type outcome struct {
	req     submitReq
	entry   *store.Entry // to append
	dupRev  int64        // > 0: already committed as this revision
	problem *Problem
}

func (a *actor) submit(batch []submitReq) {
	if a.opts.Router != nil {
		if batch = a.route(batch); len(batch) == 0 {
			return
		}
		for _, req := range batch {
			if req.origin != "" && req.rev > a.head {
				// Forwarded by a replica that has seen more of the log.
				a.catchUp()
				break
			}
		}
		if len(a.members) == 0 {
			// Kept busy by other replicas: not idle.
			a.idle = time.Now()
		}
		if a.broken() {
			a.failBatch(a.outcomesOf(batch), "document reloading, retry")
			return
		}
	}
	for attempt := 0; attempt < a.opts.MaxRetries; attempt++ {
		outs, entries := a.prepare(batch)
		if a.resetErr != nil {
			a.failBatch(outs, "document reloading, retry")
			a.unload("log reset", a.resetErr)
			return
		}
		if len(entries) == 0 {
			a.finish(outs)
			return
		}
		ctx, cancel := a.storeCtx()
		start := time.Now()
		err := a.opts.Log.Append(ctx, a.id, a.head, entries)
		cancel()
		a.opts.Metrics.CommitTime.Observe(time.Since(start).Seconds())
		switch {
		case err == nil:
			for _, e := range entries {
				a.commit(e)
				a.opts.Metrics.OpsCommitted.Inc()
				if a.broken() {
					return
				}
			}
			a.observeLocalAcks(outs)
			a.finish(outs)
			return
		case errors.Is(err, store.ErrConflict):
			a.opts.Metrics.CommitRetries.Inc()
			before := a.head
			a.catchUp()
			if a.broken() {
				return
			}
			if a.head == before {
				// The log moved but we could not read it; try again after a
				// short pause rather than spinning on the same conflict.
				time.Sleep(time.Duration(attempt+1) * 10 * time.Millisecond)
			}
		default:
			a.log.Warn("append to log", "err", err, "entries", len(entries))
			a.failBatch(outs, "storage unavailable, retry")
			if errors.Is(err, store.ErrReset) {
				a.unload("log reset", err)
			}
			return
		}
	}
	outs, _ := a.prepare(batch)
	a.failBatch(outs, "document too busy, retry")
}

// failBatch answers every submission that was to be appended with a
// retryable error, and the others with what they came to.
func (a *actor) failBatch(outs []outcome, msg string) {
	for i := range outs {
		if outs[i].entry != nil {
			seq := outs[i].req.seq
			outs[i].entry = nil
			outs[i].problem = problemf(protocol.CodeUnavailable, &seq, "%s", msg)
		}
	}
	a.finish(outs)
}

// finish sends resubmission acks and errors; committed entries were acked
// by commit already, in revision order.
func (a *actor) finish(outs []outcome) {
	for _, o := range outs {
		switch {
		case o.problem != nil:
			a.sendProblem(o.req.member, o.problem)
		case o.dupRev > 0:
			m := o.req.member
			if o.req.origin == "" && a.members[m.Conn] != m {
				continue // left
			}
			a.dupAck(m, o.req.seq, o.dupRev)
		}
	}
}

// dupAck acks a resubmission already committed as rev, unless the member
// was in the document when rev committed: commit acked it then, and a
// second ack would confuse the client.
func (a *actor) dupAck(m *Member, seq, rev int64) {
	if rev > m.joined {
		return
	}
	if !a.deliver(m, protocol.NewFrame(protocol.Ack{Type: protocol.TypeAck, Seq: seq, Rev: rev})) {
		a.drop(m.Conn)
		return
	}
	if a.members[m.Conn] == m {
		// Counted where the client is: a proxy's ack goes back to the
		// origin replica, which calls dupAck again for its member.
		a.opts.Metrics.Acks.WithLabelValues(metrics.AckDuplicate).Inc()
	}
}

// observeLocalAcks records, for the submissions of this replica's own
// clients just committed and acked here, the time from receipt to ack.
// Submissions forwarded here by another replica are timed by that
// replica, when their entry reaches it (commit).
func (a *actor) observeLocalAcks(outs []outcome) {
	now := time.Now()
	for _, o := range outs {
		if o.entry == nil || o.req.origin != "" {
			continue
		}
		a.opts.Metrics.Submissions.WithLabelValues(metrics.RouteLocal).Inc()
		a.opts.Metrics.AckTime.WithLabelValues(metrics.RouteLocal).Observe(now.Sub(o.req.received).Seconds())
	}
}

// outcomesOf wraps submissions that were not prepared, so that failBatch
// answers each of them.
func (a *actor) outcomesOf(batch []submitReq) []outcome {
	outs := make([]outcome, len(batch))
	for i, req := range batch {
		outs[i] = outcome{req: req, entry: &store.Entry{}}
	}
	return outs
}

// prepare runs steps 1-5 for every submission of the batch against the
// current head; entries are numbered from head+1.
func (a *actor) prepare(batch []submitReq) ([]outcome, []store.Entry) {
	outs := make([]outcome, len(batch))
	var entries []store.Entry
	length := a.text.Len()
	size := a.text.Bytes()
	for i, req := range batch {
		outs[i] = a.prepareOne(req, entries, &length, &size)
		if outs[i].entry != nil {
			entries = append(entries, *outs[i].entry)
		}
	}
	return outs, entries
}

func (a *actor) prepareOne(req submitReq, pending []store.Entry, length, size *int) outcome {
	seq := req.seq
	fail := func(code, format string, args ...any) outcome {
		return outcome{req: req, problem: problemf(code, &seq, format, args...)}
	}
	if req.member.Perm == "read" {
		return fail(protocol.CodeForbidden, "read-only access")
	}
	// The server validated the shape already; the document checks again
	// because nothing invalid may ever reach the log.
	if err := req.op.Validate(); err != nil {
		return fail(protocol.CodeBadOp, "%v", err)
	}
	// What a document may contain (docs/protocol.md): checked here too, so
	// that forwarded submissions and other callers of the document layer
	// cannot put into the log what PostgreSQL would refuse to store.
	if err := protocol.CheckOpText(req.op); err != nil {
		return fail(protocol.CodeBadOp, "%v", err)
	}
	// 1. Base revision.
	if req.rev > a.head {
		return fail(protocol.CodeBadRevision, "base revision %d is ahead of the document (revision %d)", req.rev, a.head)
	}
	k := req.member.author()
	last := a.lastSeq[k]
	// An author's seqs only grow, also inside one batch: the highest one
	// queued before this submission counts like a committed one.
	for _, e := range pending {
		if entryAuthor(e) != k {
			continue
		}
		if e.Seq == req.seq {
			// Duplicate inside this batch: the first copy's commit acks it;
			// nothing more to send.
			return outcome{req: req}
		}
		if e.Seq > last.seq {
			last = committedSeq{seq: e.Seq, rev: e.Rev}
		}
	}
	if a.head-req.rev > int64(a.opts.Window) {
		// Older than what the document keeps at hand: transforming it would
		// mean reading and walking an unbounded stretch of history on the
		// document's only goroutine, which one client could repeat at will
		// and stall every other writer. A resubmission of the author's
		// latest operation is still recognised without that walk.
		switch {
		case req.seq == last.seq && last.rev <= a.head:
			return outcome{req: req, dupRev: last.rev}
		case req.seq <= last.seq:
			return fail(protocol.CodeBadMessage, "operation %d of client %q was already committed", req.seq, req.member.Client)
		}
		return fail(protocol.CodeBadRevision, "base revision %d is %d revisions behind the document (revision %d), more than the %d this server transforms over; resync: apply the operations after it (or load the text), rebase the operation and resubmit it on a newer revision",
			req.rev, a.head-req.rev, a.head, a.opts.Window)
	}
	// 2. Committed since the base.
	committed, err := a.entriesAfter(req.rev)
	if errors.Is(err, store.ErrReset) {
		a.resetErr = err // unloaded by submit once the batch is answered
	}
	if err != nil {
		a.log.Warn("read entries to transform against", "from", req.rev, "err", err)
		return fail(protocol.CodeUnavailable, "history unavailable, retry")
	}
	// 3. Resubmission?
	for _, e := range committed {
		if e.Seq == req.seq && entryAuthor(e) == k {
			return outcome{req: req, dupRev: e.Rev}
		}
	}
	if req.seq <= last.seq {
		// Committed before the client's own base revision (the client
		// already saw it and must not send it again), or lower than a seq
		// the author committed or queued already: seqs never go back.
		return fail(protocol.CodeBadMessage, "operation %d of client %q is not above its operation %d, already committed or queued", req.seq, req.member.Client, last.seq)
	}
	// 4. Transform.
	start := time.Now()
	op := req.op
	for _, group := range [][]store.Entry{committed, pending} {
		for _, e := range group {
			if op, err = ot.Transform(op, e.Op, ot.Left); err != nil {
				return fail(protocol.CodeBadOp, "operation does not fit revision %d: %v", req.rev, err)
			}
		}
	}
	a.opts.Metrics.TransformTime.Observe(time.Since(start).Seconds())
	if err := op.Validate(); err != nil {
		return fail(protocol.CodeBadOp, "transformed operation is invalid: %v", err)
	}
	// 5. Length and size.
	if base := op.BaseLen(); base > *length {
		return fail(protocol.CodeBadOp, "operation spans %d code points but the document has %d", base, *length)
	}
	inserted, insertedBytes, deleted := 0, 0, 0
	for _, c := range op {
		inserted += utf8.RuneCountInString(c.Insert)
		insertedBytes += len(c.Insert)
		deleted += c.Delete
	}
	// Deleted text is at least one byte per code point, so this estimate of
	// the new size never undercounts.
	newSize := *size + insertedBytes - deleted
	if a.opts.MaxDocBytes > 0 && insertedBytes > deleted && newSize > a.opts.MaxDocBytes {
		return fail(protocol.CodeTooLarge, "document would exceed %d bytes (welcome limits.maxDocBytes): it has %d, the operation adds %d and removes %d code points", a.opts.MaxDocBytes, *size, insertedBytes, deleted)
	}
	*length += inserted - deleted
	*size = newSize
	e := store.Entry{
		Doc:    a.id,
		Rev:    a.head + int64(len(pending)) + 1,
		Op:     op,
		Client: req.member.Client,
		Seq:    req.seq,
		User:   req.member.User.ID,
		Time:   time.Now().UTC(),
	}
	return outcome{req: req, entry: &e}
}
