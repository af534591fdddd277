package bench

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandem-dev/tandem/runtime/client"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/protocol"
)

// Env is what the scenarios run against.
type Env struct {
	// Replicas are the runtimes' HTTP base URLs. Cross-replica scenarios
	// use the first two; with one, "cross-replica" degenerates to one
	// server (and says so in its parameters).
	Replicas []string
	// Token returns the bearer token for a document; nil means the runtime
	// runs with anonymous auth.
	Token func(doc string) (string, error)
	// Settle bounds the wait for acknowledgements and convergence after a
	// scenario's load stops (default 30s).
	Settle time.Duration
	// DialParallel bounds concurrent WebSocket handshakes (default 64).
	DialParallel int
	// Seed makes the random edit positions reproducible (0: random).
	Seed uint64
	// Reconnects is how many times each client re-dials a dropped
	// connection, resuming and resubmitting (default 0: a drop fails the
	// scenario, which is what a benchmark of a healthy server wants).
	Reconnects int
}

func (e *Env) settle() time.Duration {
	if e.Settle > 0 {
		return e.Settle
	}
	return 30 * time.Second
}

func (e *Env) dialParallel() int {
	if e.DialParallel > 0 {
		return e.DialParallel
	}
	return 64
}

func (e *Env) token(doc string) (string, error) {
	if e.Token == nil {
		return "", nil
	}
	t, err := e.Token(doc)
	if err != nil {
		return "", fmt.Errorf("token for %q: %w", doc, err)
	}
	return t, nil
}

// replica returns replica i, wrapping around when there are fewer.
func (e *Env) replica(i int) string { return e.Replicas[i%len(e.Replicas)] }

func (e *Env) rng(stream uint64) *rand.Rand {
	seed := e.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	return rand.New(rand.NewPCG(seed, stream))
}

// Metric is one measured figure.
type Metric struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// Result is the outcome of one scenario run.
type Result struct {
	ID      string         `json:"id"`
	Title   string         `json:"title"`
	Params  map[string]any `json:"params"`
	Metrics []Metric       `json:"metrics"`
	// Error is set when the run failed or did not verify (divergence,
	// unacknowledged operation, server error); the metrics are then not
	// to be trusted.
	Error   string  `json:"error,omitempty"`
	Seconds float64 `json:"seconds"`
}

func (r *Result) add(name string, v float64, unit string) {
	r.Metrics = append(r.Metrics, Metric{Name: name, Value: v, Unit: unit})
}

// Get returns the named metric.
func (r *Result) Get(name string) (float64, bool) {
	for _, m := range r.Metrics {
		if m.Name == name {
			return m.Value, true
		}
	}
	return 0, false
}

func newDocID(prefix string) string {
	b := make([]byte, 6)
	_, _ = crand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// sendLog remembers when each (client, seq) went out, for receipt latency.
type sendLog struct {
	mu sync.Mutex
	m  map[sendKey]time.Time
}

type sendKey struct {
	client string
	seq    int64
}

func newSendLog() *sendLog { return &sendLog{m: map[sendKey]time.Time{}} }

func (l *sendLog) put(client string, seq int64, at time.Time) {
	l.mu.Lock()
	l.m[sendKey{client, seq}] = at
	l.mu.Unlock()
}

func (l *sendLog) get(client string, seq int64) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.m[sendKey{client, seq}]
	return t, ok
}

// Verify is the end-of-scenario check for one document: every client's
// submitted operations were acknowledged, no server error other than a
// retried "unavailable" reached a client, and every client ends with the
// server's text at the server's revision. The server's view is read by a
// fresh connection to base.
func Verify(ctx context.Context, env *Env, base, doc string, clients []*client.Client) error {
	ctx, cancel := context.WithTimeout(ctx, env.settle())
	defer cancel()
	var errs []error
	for _, c := range clients {
		if err := c.WaitSynced(ctx, -1); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for _, c := range clients {
		if s := c.Stats(); s.Acked != s.Submitted {
			errs = append(errs, fmt.Errorf("client %s: %d operations submitted, %d acknowledged", c.ClientID(), s.Submitted, s.Acked))
		}
		for _, e := range c.Errors() {
			if e.Code != protocol.CodeUnavailable {
				errs = append(errs, fmt.Errorf("client %s: server error %s: %s", c.ClientID(), e.Code, e.Message))
			}
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	tok, err := env.token(doc)
	if err != nil {
		return err
	}
	obs, err := dial(ctx, connSpec{Base: base, Doc: doc, Options: client.Options{ClientID: newDocID("verify"), Token: tok}}, newDialer())
	if err != nil {
		return fmt.Errorf("read server text of %q: %w", doc, err)
	}
	want, wantRev := obs.Snapshot()
	obs.Close()
	for _, c := range clients {
		// Idle clients may still be receiving the last remote operations.
		if err := c.WaitSynced(ctx, wantRev); err != nil {
			if c.Err() == nil {
				err = fmt.Errorf("client %s of %q is at revision %d, the server at %d: %w", c.ClientID(), doc, c.Rev(), wantRev, err)
			}
			errs = append(errs, err)
			continue
		}
		text, rev := c.Snapshot()
		switch {
		case rev != wantRev:
			errs = append(errs, fmt.Errorf("client %s of %q is at revision %d, the server at %d", c.ClientID(), doc, rev, wantRev))
		case text != want:
			errs = append(errs, fmt.Errorf("client %s of %q diverged at revision %d: %d code points %q, server has %d %q",
				c.ClientID(), doc, rev, len([]rune(text)), clip(text), len([]rune(want)), clip(want)))
		}
	}
	return errors.Join(errs...)
}

func clip(s string) string {
	r := []rune(s)
	if len(r) <= 40 {
		return s
	}
	return string(r[:20]) + "…" + string(r[len(r)-20:])
}

// appendChar is the edit of someone typing at the end.
func appendChar(ch string) func(int) ot.Op {
	return func(n int) ot.Op {
		if n == 0 {
			return ot.Op{{Insert: ch}}
		}
		return ot.Op{{Retain: n}, {Insert: ch}}
	}
}

// randomEdit inserts one character at a random position, or (one time in
// four, when there is text) deletes one.
func randomEdit(r *rand.Rand) func(int) ot.Op {
	return func(n int) ot.Op {
		pos := r.IntN(n + 1)
		var op ot.Op
		if pos > 0 {
			op = append(op, ot.Component{Retain: pos})
		}
		if n > 0 && pos < n && r.IntN(4) == 0 {
			op = append(op, ot.Component{Delete: 1})
		} else {
			op = append(op, ot.Component{Insert: string(rune('a' + r.IntN(26)))})
		}
		if rest := n - op.BaseLen(); rest > 0 {
			op = append(op, ot.Component{Retain: rest})
		}
		return op
	}
}

// Placement says which replicas a scenario's clients connect to when it
// runs across replicas. It is what an ingress's stickiness decides in a
// deployment: without it a document's clients land on any replica.
type Placement string

// Placements of the cross-replica scenarios.
const (
	// PlaceDefault is the scenario's classic placement: S1 puts the
	// writer on replica A and every reader on replica B, S2 spreads the
	// writers over the replicas in turn.
	PlaceDefault Placement = ""
	// PlaceSpread puts clients on the replicas in turn, the writer first:
	// what a round-robin load balancer gives one document's clients.
	PlaceSpread Placement = "spread"
	// PlaceColocated puts every client of the document on replica A while
	// the other replicas still run (their flushers, their subscriptions):
	// what stickiness by document gives.
	PlaceColocated Placement = "colocated"
)

// S1Options configures the latency scenario.
type S1Options struct {
	Duration time.Duration // default 10s
	Interval time.Duration // default 10ms
	Readers  int           // default 10
	// Single puts the writer and the readers on the first replica.
	Single bool
	// Placement of the writer and readers across replicas (not with Single).
	Placement Placement
}

// S1 measures the time from the writer's submit to each reader's receipt:
// one writer on replica A appends a character every Interval, Readers
// readers on replica B.
func S1(ctx context.Context, env *Env, o S1Options) Result {
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if o.Interval <= 0 {
		o.Interval = 10 * time.Millisecond
	}
	if o.Readers <= 0 {
		o.Readers = 10
	}
	res := Result{ID: "S1", Title: "cross-replica latency"}
	a, b := env.replica(0), env.replica(1)
	readerOn := func(int) string { return b }
	readersOn := "replica B"
	switch {
	case o.Single || len(env.Replicas) < 2:
		res.ID, res.Title, b = "S1-single", "single-server latency", a
		readerOn, readersOn = func(int) string { return a }, "the writer's server"
	case o.Placement == PlaceSpread:
		// The writer is client 0 on replica A; reader i is client i+1.
		res.ID, res.Title = "S1-spread", "latency, clients spread over the replicas"
		readerOn, readersOn = func(i int) string { return env.replica(i + 1) }, "every replica in turn"
	case o.Placement == PlaceColocated:
		res.ID, res.Title = "S1-colocated", "latency, every client on one of the replicas"
		readerOn, readersOn = func(int) string { return a }, "the writer's replica (A)"
	}
	res.Params = map[string]any{"duration": o.Duration.String(), "interval": o.Interval.String(), "readers": o.Readers, "readers_on": readersOn}
	start := time.Now()
	err := runS1(ctx, env, o, a, b, readerOn, &res)
	res.Seconds = time.Since(start).Seconds()
	if err != nil {
		res.Error = err.Error()
	}
	return res
}

// runS1 puts the writer on a and reader i on readerOn(i); b is the replica
// the result is verified against.
func runS1(ctx context.Context, env *Env, o S1Options, a, b string, readerOn func(int) string, res *Result) error {
	doc := newDocID("s1")
	tok, err := env.token(doc)
	if err != nil {
		return err
	}
	sent := newSendLog()
	writerID := newDocID("writer")
	var recv Samples
	var missing atomic.Int64
	var acks Samples
	specs := []connSpec{{Base: a, Doc: doc, Options: client.Options{ClientID: writerID, Token: tok,
		OnSend: func(seq int64, at time.Time) { sent.put(writerID, seq, at) },
		OnAck:  func(_, _ int64, d time.Duration, _ time.Time) { acks.Add(d) }}}}
	for i := range o.Readers {
		specs = append(specs, connSpec{Base: readerOn(i), Doc: doc, Options: client.Options{ClientID: fmt.Sprintf("%s-r%d", doc, i), Token: tok,
			OnRemote: func(op protocol.Op, at time.Time) {
				if t, ok := sent.get(op.Client, op.Seq); ok {
					recv.Add(at.Sub(t))
				} else {
					missing.Add(1)
				}
			}}})
	}
	clients, err := dialAll(ctx, env, specs)
	if err != nil {
		return err
	}
	defer closeAll(clients)
	writer := clients[0]
	tick := time.NewTicker(o.Interval)
	defer tick.Stop()
	deadline := time.After(o.Duration)
	n := 0
loop:
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			break loop
		case <-tick.C:
			if err := writer.Err(); err != nil {
				return fmt.Errorf("writer: %w", err)
			}
			if err := writer.EditLen(appendChar(string(rune('a' + n%26)))); err != nil {
				return fmt.Errorf("writer: %w", err)
			}
			n++
		}
	}
	if err := Verify(ctx, env, b, doc, clients); err != nil {
		return err
	}
	if m := missing.Load(); m > 0 {
		return fmt.Errorf("readers received %d operations the writer never sent", m)
	}
	q := recv.Quantiles(0.5, 0.99, 1)
	res.add("latency_p50", q[0], "ms")
	res.add("latency_p99", q[1], "ms")
	res.add("latency_max", q[2], "ms")
	aq := acks.Quantiles(0.5, 0.99)
	res.add("ack_p50", aq[0], "ms")
	res.add("ack_p99", aq[1], "ms")
	res.add("edits", float64(n), "")
	res.add("ops_sent", float64(writer.Stats().Submitted), "")
	res.add("receipts", float64(recv.Len()), "")
	return nil
}

// S2Options configures the hot-document throughput scenario.
type S2Options struct {
	Duration time.Duration // default 15s
	Writers  int           // default 20, spread over the replicas
	Single   bool          // every writer on the first replica
	// Placement across replicas (not with Single): PlaceDefault and
	// PlaceSpread spread the writers in turn, PlaceColocated puts them all
	// on the first replica; CPU is measured on every replica either way.
	Placement Placement
	// Persistence, when set, measures PostgreSQL costs during the run (S5).
	Persistence *PGProbe
}

// S2 runs Writers closed-loop writers (submit, wait for the ack, submit
// again) at random positions of one document.
func S2(ctx context.Context, env *Env, o S2Options) (Result, *Result) {
	if o.Duration <= 0 {
		o.Duration = 15 * time.Second
	}
	if o.Writers <= 0 {
		o.Writers = 20
	}
	res := Result{ID: "S2", Title: "hot-document throughput"}
	replicas := env.Replicas
	if o.Single || len(replicas) < 2 {
		res.ID, res.Title, replicas = "S2-single", "hot-document throughput, single server", replicas[:1]
	} else if o.Placement == PlaceColocated {
		res.ID, res.Title = "S2-colocated", "hot-document throughput, every writer on one of the replicas"
	}
	res.Params = map[string]any{"duration": o.Duration.String(), "writers": o.Writers, "replicas": len(replicas)}
	if res.ID == "S2-colocated" {
		res.Params["writers_on"] = "replica A"
	}
	var s5 *Result
	if o.Persistence != nil {
		s5 = &Result{ID: "S5", Title: "persistence cost during " + res.ID, Params: map[string]any{"during": res.ID}}
	}
	start := time.Now()
	err := runS2(ctx, env, o, replicas, &res, s5)
	res.Seconds = time.Since(start).Seconds()
	if err != nil {
		res.Error = err.Error()
		if s5 != nil && s5.Error == "" {
			s5.Error = "S2 failed: " + err.Error()
		}
	}
	if s5 != nil {
		s5.Seconds = res.Seconds
	}
	return res, s5
}

func runS2(ctx context.Context, env *Env, o S2Options, replicas []string, res, s5 *Result) error {
	doc := newDocID("s2")
	tok, err := env.token(doc)
	if err != nil {
		return err
	}
	var acks Samples
	var ackLog ackRecorder
	specs := make([]connSpec, o.Writers)
	writerOn := func(i int) string { return replicas[i%len(replicas)] }
	if o.Placement == PlaceColocated && !o.Single {
		writerOn = func(int) string { return replicas[0] }
	}
	for i := range specs {
		specs[i] = connSpec{Base: writerOn(i), Doc: doc, Options: client.Options{ClientID: fmt.Sprintf("%s-w%d", doc, i), Token: tok,
			OnAck: func(_, rev int64, d time.Duration, at time.Time) {
				acks.Add(d)
				if s5 != nil {
					ackLog.add(rev, at)
				}
			}}}
	}
	clients, err := dialAll(ctx, env, specs)
	if err != nil {
		return err
	}
	defer closeAll(clients)

	cpu0, err := cpuSeconds(ctx, replicas)
	if err != nil {
		return err
	}
	var probe *pgRun
	if s5 != nil {
		if probe, err = o.Persistence.begin(ctx, doc); err != nil {
			return fmt.Errorf("S5: %w", err)
		}
		defer probe.stop()
	}
	runCtx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	// An ack that never comes fails the wait after the settle time.
	ackCtx, ackCancel := context.WithTimeout(ctx, o.Duration+env.settle())
	defer ackCancel()
	began := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(clients))
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := env.rng(uint64(i))
			for runCtx.Err() == nil {
				if err := c.EditLen(randomEdit(r)); err != nil {
					errs[i] = fmt.Errorf("writer %d: %w", i, err)
					return
				}
				// Closed loop: the next edit waits for this one's ack.
				if err := c.WaitSynced(ackCtx, -1); err != nil {
					errs[i] = fmt.Errorf("writer %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(began)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	cpu1, err := cpuSeconds(ctx, replicas)
	if err != nil {
		return err
	}
	if err := Verify(ctx, env, replicas[len(replicas)-1], doc, clients); err != nil {
		return err
	}
	acked, retries := int64(0), int64(0)
	for _, c := range clients {
		st := c.Stats()
		acked += st.Acked
		retries += st.Retries
	}
	q := acks.Quantiles(0.5, 0.99)
	res.add("acked_ops_per_s", float64(acked)/elapsed.Seconds(), "ops/s")
	res.add("unavailable_retries", float64(retries), "")
	res.add("ack_p50", q[0], "ms")
	res.add("ack_p99", q[1], "ms")
	res.add("acked_ops", float64(acked), "")
	res.add("cpu_s_per_1000_ops", (cpu1-cpu0)/float64(acked)*1000, "s")
	res.add("runtime_cpu_cores", (cpu1-cpu0)/elapsed.Seconds(), "cores")
	if s5 != nil {
		if err := probe.finish(ctx, clients[0].Rev(), acked, ackLog.snapshot(), s5); err != nil {
			s5.Error = err.Error()
		}
	}
	return nil
}

// ackRecorder keeps (revision, time) of every acknowledgement.
type ackRecorder struct {
	mu   sync.Mutex
	acks []revAt
}

type revAt struct {
	rev int64
	at  time.Time
}

func (a *ackRecorder) add(rev int64, at time.Time) {
	a.mu.Lock()
	a.acks = append(a.acks, revAt{rev, at})
	a.mu.Unlock()
}

func (a *ackRecorder) snapshot() []revAt {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]revAt(nil), a.acks...)
}

// S3Options configures the idle-connections scenario.
type S3Options struct {
	Conns int           // default 2000
	Docs  int           // default 100
	Idle  time.Duration // how long CPU is measured while idle (default 10s)
	// OnIdle, when set, is called once all connections are open and the
	// idle readings have been taken, while the connections are still open
	// and idle (e.g. to take a heap profile). It runs after the readings
	// so that its own work, such as a heap profile's forced collection,
	// does not count as idle CPU.
	OnIdle func(ctx context.Context)
}

// S3 opens Conns idle connections over Docs documents on the first replica
// and reports the runtime's resident memory per connection and idle CPU.
// Run it against a runtime that has not served other scenarios, so the
// baseline is a fresh process.
func S3(ctx context.Context, env *Env, o S3Options) Result {
	if o.Conns <= 0 {
		o.Conns = 2000
	}
	if o.Docs <= 0 {
		o.Docs = 100
	}
	if o.Idle <= 0 {
		o.Idle = 10 * time.Second
	}
	res := Result{ID: "S3", Title: "idle connections", Params: map[string]any{"conns": o.Conns, "docs": o.Docs, "idle": o.Idle.String()}}
	start := time.Now()
	if err := runS3(ctx, env, o, &res); err != nil {
		res.Error = err.Error()
	}
	res.Seconds = time.Since(start).Seconds()
	return res
}

func runS3(ctx context.Context, env *Env, o S3Options, res *Result) error {
	base := env.replica(0)
	prefix := newDocID("s3")
	before, err := ScrapeProcess(ctx, base)
	if err != nil {
		return err
	}
	specs := make([]connSpec, o.Conns)
	for i := range specs {
		doc := fmt.Sprintf("%s-%d", prefix, i%o.Docs)
		tok, err := env.token(doc)
		if err != nil {
			return err
		}
		specs[i] = connSpec{Base: base, Doc: doc, Options: client.Options{ClientID: fmt.Sprintf("%s-c%d", prefix, i), Token: tok}}
	}
	clients, err := dialAll(ctx, env, specs)
	if err != nil {
		return err
	}
	defer closeAll(clients)
	// Let the handshakes' garbage be collected and the process settle.
	select {
	case <-time.After(3 * time.Second):
	case <-ctx.Done():
		return ctx.Err()
	}
	loaded, err := ScrapeProcess(ctx, base)
	if err != nil {
		return err
	}
	select {
	case <-time.After(o.Idle):
	case <-ctx.Done():
		return ctx.Err()
	}
	after, err := ScrapeProcess(ctx, base)
	if err != nil {
		return err
	}
	if o.OnIdle != nil {
		o.OnIdle(ctx)
	}
	// Every connection must still be open and usable.
	for d := range min(o.Docs, o.Conns) {
		var group []*client.Client
		for i := d; i < len(clients); i += o.Docs {
			group = append(group, clients[i])
		}
		if err := Verify(ctx, env, base, specs[d].Doc, group); err != nil {
			return err
		}
	}
	n := float64(o.Conns)
	res.add("rss_per_conn", (loaded.RSSBytes-before.RSSBytes)/n/1000, "KB")
	res.add("heap_per_conn", (loaded.HeapInuse-before.HeapInuse)/n/1000, "KB")
	res.add("goroutines_per_conn", (loaded.Goroutines-before.Goroutines)/n, "")
	res.add("idle_cpu", (after.CPUSeconds-loaded.CPUSeconds)/o.Idle.Seconds()*100, "% of a core")
	res.add("rss_total", loaded.RSSBytes/1e6, "MB")
	return nil
}

// S4Options configures the many-documents scenario.
type S4Options struct {
	Docs     int           // default 1000
	Editors  int           // per document, default 5
	Rate     float64       // characters per second per editor, default 2
	Duration time.Duration // default 30s
}

// S4 has Editors people typing Rate characters per second in each of Docs
// documents, spread over the replicas, and reports receipt latency and CPU.
func S4(ctx context.Context, env *Env, o S4Options) Result {
	if o.Docs <= 0 {
		o.Docs = 1000
	}
	if o.Editors <= 0 {
		o.Editors = 5
	}
	if o.Rate <= 0 {
		o.Rate = 2
	}
	if o.Duration <= 0 {
		o.Duration = 30 * time.Second
	}
	res := Result{ID: "S4", Title: "many documents", Params: map[string]any{
		"docs": o.Docs, "editors": o.Editors, "rate": o.Rate, "duration": o.Duration.String(), "replicas": len(env.Replicas)}}
	start := time.Now()
	if err := runS4(ctx, env, o, &res); err != nil {
		res.Error = err.Error()
	}
	res.Seconds = time.Since(start).Seconds()
	return res
}

func runS4(ctx context.Context, env *Env, o S4Options, res *Result) error {
	prefix := newDocID("s4")
	sent := newSendLog()
	var recv, acks Samples
	specs := make([]connSpec, 0, o.Docs*o.Editors)
	for d := range o.Docs {
		doc := fmt.Sprintf("%s-%d", prefix, d)
		tok, err := env.token(doc)
		if err != nil {
			return err
		}
		for e := range o.Editors {
			id := fmt.Sprintf("%s-e%d", doc, e)
			specs = append(specs, connSpec{Base: env.replica(d + e), Doc: doc, Options: client.Options{ClientID: id, Token: tok,
				OnSend: func(seq int64, at time.Time) { sent.put(id, seq, at) },
				OnAck:  func(_, _ int64, d time.Duration, _ time.Time) { acks.Add(d) },
				OnRemote: func(op protocol.Op, at time.Time) {
					if t, ok := sent.get(op.Client, op.Seq); ok {
						recv.Add(at.Sub(t))
					}
				}}})
		}
	}
	clients, err := dialAll(ctx, env, specs)
	if err != nil {
		return err
	}
	defer closeAll(clients)
	cpu0, err := cpuSeconds(ctx, env.Replicas)
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	interval := time.Duration(float64(time.Second) / o.Rate)
	began := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(clients))
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := env.rng(uint64(i))
			// Spread the editors' keystrokes over the interval.
			select {
			case <-time.After(time.Duration(r.Int64N(int64(interval)))):
			case <-runCtx.Done():
				return
			}
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				if err := c.Err(); err != nil {
					errs[i] = err
					return
				}
				if err := c.EditLen(randomEdit(r)); err != nil {
					errs[i] = err
					return
				}
				select {
				case <-t.C:
				case <-runCtx.Done():
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(began)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	cpu1, err := cpuSeconds(ctx, env.Replicas)
	if err != nil {
		return err
	}
	for d := range o.Docs {
		group := clients[d*o.Editors : (d+1)*o.Editors]
		if err := Verify(ctx, env, env.replica(d), specs[d*o.Editors].Doc, group); err != nil {
			return err
		}
	}
	acked, retries := int64(0), int64(0)
	for _, c := range clients {
		st := c.Stats()
		acked += st.Acked
		retries += st.Retries
	}
	q := recv.Quantiles(0.5, 0.99, 1)
	aq := acks.Quantiles(0.5, 0.99)
	res.add("unavailable_retries", float64(retries), "")
	res.add("latency_p50", q[0], "ms")
	res.add("latency_p99", q[1], "ms")
	res.add("latency_max", q[2], "ms")
	res.add("ack_p99", aq[1], "ms")
	res.add("acked_ops_per_s", float64(acked)/elapsed.Seconds(), "ops/s")
	res.add("runtime_cpu_cores", (cpu1-cpu0)/elapsed.Seconds(), "cores")
	res.add("cpu_s_per_1000_ops", (cpu1-cpu0)/float64(max(acked, 1))*1000, "s")
	return nil
}
