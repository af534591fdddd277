package doc

// Routing of a busy document's submissions to one appending replica (the
// distributed mode; Options.Router). Replicas that serve the same document
// would otherwise race on the log's compare-and-set and spend their time
// on conflicts and catch-up reads. So the replica holding the document's
// owner lease appends, and the others forward their submissions to it:
//
//   - Before a batch is appended, the actor looks up the lease holder
//     (claiming the lease when it is free, renewing it when it is its own;
//     at most every LeaseTTL/3, in between it trusts what it saw).
//   - A replica that is not the holder first runs the batch through
//     prepare: errors and resubmissions are answered here, the rest is
//     forwarded as the clients made it (operation and base revision) and
//     remembered by (client, seq).
//   - The holder's manager turns each forwarded submission into an
//     ordinary submitReq whose member is a proxy: the batch, transform,
//     dedupe and commit code is the same. Whatever the proxy is sent (an
//     error, the ack of a resubmission) goes back to the origin as a Reply.
//     A commit needs no reply: the origin sees the entry through its log
//     subscription, and commit() acks its member because the entry carries
//     the member's client id.
//   - A forwarded submission that neither commits nor gets a reply within
//     ForwardTimeout (the holder died, pub/sub lost the message) is taken
//     back: the origin claims the lease if it can and appends the
//     submission itself, and keeps appending itself for a lease period.
//     That is safe because prepare finds a submission that did commit in
//     the meantime by its (client, seq) among the entries after its base
//     revision, which every commit of it lies in (it was transformed from
//     that base), so it is acked, not applied twice. The same check, on
//     the holder's side, answers a forwarded copy that arrives after the
//     origin took it back.
//
// The lease never decides correctness: the holder still appends with
// compare-and-set, so two replicas that both believe they hold it only cost
// each other retries.

import (
	"context"
	"errors"
	"math"
	"sort"
	"time"

	"github.com/tandem-dev/tandem/runtime/metrics"
	"github.com/tandem-dev/tandem/runtime/protocol"
	"github.com/tandem-dev/tandem/runtime/store"
)

// clientSeq identifies a submission across replicas.
type clientSeq struct {
	author author
	seq    int64
}

// forwardedReq is a submission this replica forwarded and has not seen
// committed or answered yet.
type forwardedReq struct {
	req  submitReq
	sent time.Time
}

// replyReq carries the owner's answer to a forwarded submission.
type replyReq struct{ r store.Reply }

// leaseOwner returns the replica that appends this document's operations,
// claiming or renewing the lease when the last look is older than a third
// of its TTL.
func (a *actor) leaseOwner(now time.Time) string {
	r := a.opts.Router
	if now.Before(a.selfUntil) {
		return r.Self()
	}
	if a.owner != "" && now.Sub(a.ownerSeen) < r.LeaseTTL()/3 {
		return a.owner
	}
	a.claimLease(now)
	return a.owner
}

// claimLease claims or renews the lease and records the holder. When Redis
// cannot say, this replica appends itself: compare-and-set keeps that safe.
func (a *actor) claimLease(now time.Time) {
	r := a.opts.Router
	ctx, cancel := a.storeCtx()
	owner, acquired, err := r.Claim(ctx, a.id)
	cancel()
	if err != nil {
		a.log.Warn("claim owner lease; appending here", "err", err)
		owner = r.Self()
	}
	if acquired {
		a.opts.Metrics.LeaseClaims.Inc()
		a.log.Debug("owner lease acquired")
	}
	a.owner, a.ownerSeen = owner, now
}

// releaseLease gives the lease up when the actor stops, so that another
// replica can take over at once instead of after the TTL.
func (a *actor) releaseLease() {
	r := a.opts.Router
	if r == nil || a.owner != r.Self() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := r.Release(ctx, a.id); err != nil {
		a.log.Debug("release owner lease", "err", err)
	}
}

// route forwards the batch's own submissions to the lease holder when that
// is another replica, and returns what is to be appended here: everything
// when this replica holds the lease, else the submissions forwarded to it
// and the ones taken back.
func (a *actor) route(batch []submitReq) []submitReq {
	r := a.opts.Router
	now := time.Now()
	// Looked up even for a batch of forwarded submissions only, so that the
	// holder renews its lease while others keep it busy.
	owner := a.leaseOwner(now)
	if owner == r.Self() {
		return batch
	}
	var here, local []submitReq
	for _, req := range batch {
		if req.origin != "" || req.here {
			here = append(here, req)
		} else {
			local = append(local, req)
		}
	}
	if len(local) == 0 {
		return here
	}
	// Errors and resubmissions are answered here: forwarding them would
	// only add a round trip.
	outs, _ := a.prepare(local)
	if a.resetErr != nil {
		return batch // submit answers and unloads
	}
	var answered []outcome
	var fwd []submitReq
	var subs []store.Forwarded
	for _, o := range outs {
		if o.entry == nil {
			answered = append(answered, o)
			continue
		}
		m := o.req.member
		fwd = append(fwd, o.req)
		subs = append(subs, store.Forwarded{
			Doc: a.id, Origin: r.Self(), Conn: m.Conn, Client: m.Client, User: m.User, Perm: m.Perm,
			Seq: o.req.seq, Rev: o.req.rev, Op: o.req.op,
		})
	}
	a.finish(answered)
	if len(subs) == 0 {
		return here
	}
	ctx, cancel := a.storeCtx()
	err := r.Forward(ctx, owner, subs)
	cancel()
	if err != nil {
		// The holder is gone (nobody listens as it) or Redis cannot take
		// the message: append here, and keep doing so for a lease period
		// rather than forward into the void again.
		if errors.Is(err, store.ErrNoReceiver) {
			a.log.Info("owner of document is gone; appending here", "owner", owner)
		} else {
			a.log.Warn("forward submissions; appending here", "owner", owner, "err", err)
		}
		a.selfUntil = now.Add(r.LeaseTTL())
		a.opts.Metrics.TakeBacks.Add(float64(len(fwd)))
		for i := range fwd {
			fwd[i].here = true
		}
		return append(here, fwd...)
	}
	a.opts.Metrics.Forwarded.Add(float64(len(fwd)))
	a.opts.Metrics.Submissions.WithLabelValues(metrics.RouteForwarded).Add(float64(len(fwd)))
	for _, req := range fwd {
		a.forwarded[clientSeq{req.member.author(), req.seq}] = &forwardedReq{req: req, sent: now}
	}
	return here
}

// takeBack appends, here, the forwarded submissions that have waited
// ForwardTimeout for their entry or a reply.
func (a *actor) takeBack(now time.Time) {
	var batch []submitReq
	for k, f := range a.forwarded {
		if now.Sub(f.sent) < a.opts.ForwardTimeout {
			continue
		}
		delete(a.forwarded, k)
		if a.members[f.req.member.Conn] != f.req.member {
			continue // the member left; its client resubmits on reconnect
		}
		f.req.here = true
		batch = append(batch, f.req)
	}
	if len(batch) == 0 {
		return
	}
	sort.Slice(batch, func(i, j int) bool { return batch[i].received.Before(batch[j].received) })
	a.log.Info("forwarded submissions unanswered; appending here", "owner", a.owner, "submissions", len(batch))
	a.opts.Metrics.TakeBacks.Add(float64(len(batch)))
	a.claimLease(now)
	if a.owner != a.opts.Router.Self() {
		// The holder looks unresponsive: stop forwarding to it until its
		// lease would have expired had it died.
		a.selfUntil = now.Add(a.opts.Router.LeaseTTL())
	}
	a.submit(batch)
}

// reply handles the owner's answer to a forwarded submission.
func (a *actor) reply(r store.Reply) {
	k := clientSeq{author{user: r.User, client: r.Client}, r.Seq}
	f, ok := a.forwarded[k]
	if !ok {
		return // committed and acked already, or taken back
	}
	if r.DupRev > 0 {
		if r.DupRev > a.head {
			// The owner has seen more of the log than this replica: an ack
			// must not run ahead of the entries its member has been sent.
			a.catchUp()
			if a.broken() {
				return
			}
		}
		if f, ok = a.forwarded[k]; !ok || r.DupRev > a.head {
			return // acked by commit, or still unreadable: the take-back settles it
		}
		delete(a.forwarded, k)
		if a.members[f.req.member.Conn] == f.req.member {
			a.dupAck(f.req.member, r.Seq, r.DupRev)
		}
		return
	}
	if r.Code == protocol.CodeBadRevision {
		// The owner judged the base against a head this replica may not
		// have reached: send those entries first, so that the client, which
		// rebases on what it receives and resubmits, is past that head.
		a.catchUp()
		if a.broken() {
			return
		}
	}
	delete(a.forwarded, k)
	if a.members[f.req.member.Conn] == f.req.member {
		seq := r.Seq
		a.sendProblem(f.req.member, &Problem{Code: r.Code, Message: r.Message, Seq: &seq})
	}
}

// routeLoop hands what other replicas send to this one to the documents'
// actors, until the manager closes.
func (m *Manager) routeLoop(inbox <-chan store.Routed) {
	for {
		select {
		case <-m.quit:
			return
		case msg := <-inbox:
			for _, f := range msg.Forwarded {
				m.deliverForwarded(f)
			}
			for _, r := range msg.Replies {
				m.deliverReply(r)
			}
		}
	}
}

// deliveryTimeout bounds how long the route loop waits for one document's
// full inbox; a submission dropped here is taken back by its origin.
const deliveryTimeout = time.Second

func (m *Manager) deliverForwarded(f store.Forwarded) {
	req := submitReq{member: m.proxy(f), seq: f.Seq, rev: f.Rev, op: f.Op, received: time.Now(), origin: f.Origin}
	ctx, cancel := context.WithTimeout(context.Background(), deliveryTimeout)
	defer cancel()
	for range 3 {
		a, err := m.actorFor(f.Doc)
		if err != nil {
			return // closing
		}
		if err := a.send(ctx, req); errors.Is(err, errGone) {
			continue
		} else if err != nil {
			m.log.Warn("drop forwarded submission", "doc", f.Doc, "origin", f.Origin, "err", err)
		}
		return
	}
}

func (m *Manager) deliverReply(r store.Reply) {
	m.mu.Lock()
	a := m.docs[r.Doc]
	m.mu.Unlock()
	if a == nil {
		return // unloaded: its members were disconnected and resubmit
	}
	ctx, cancel := context.WithTimeout(context.Background(), deliveryTimeout)
	defer cancel()
	_ = a.send(ctx, replyReq{r: r})
}

// proxy stands for the origin's member in the owner's batch. It is never
// in the actor's members, so committed entries are not sent to it (the
// origin receives them through its log subscription); what is sent to it
// directly — an error, or the ack of a resubmission — goes back to the
// origin as a Reply.
func (m *Manager) proxy(f store.Forwarded) *Member {
	router := m.opts.Router
	return &Member{
		Conn: f.Origin + "/" + f.Conn, Client: f.Client, User: f.User, Perm: f.Perm,
		// Never a member when anything was committed: every resubmission
		// ack is sent.
		joined: math.MaxInt64,
		Send: func(fr *protocol.Frame) bool {
			rep := store.Reply{Doc: f.Doc, Client: f.Client, User: f.User.ID, Seq: f.Seq}
			switch msg := fr.Msg.(type) {
			case protocol.Ack:
				rep.DupRev = msg.Rev
			case protocol.Error:
				rep.Code, rep.Message = msg.Code, msg.Message
			default:
				return true
			}
			// Off the actor's goroutine: the actor never waits for the
			// network. Replies are rare (errors, resubmissions).
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
				defer cancel()
				if err := router.Reply(ctx, f.Origin, []store.Reply{rep}); err != nil {
					m.log.Warn("reply to forwarded submission", "doc", f.Doc, "origin", f.Origin, "err", err)
				}
			}()
			return true
		},
	}
}
