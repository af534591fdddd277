package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tandem-dev/tandem/runtime/auth"
	"github.com/tandem-dev/tandem/runtime/client"
	"github.com/tandem-dev/tandem/runtime/doc"
	"github.com/tandem-dev/tandem/runtime/metrics"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/protocol"
	"github.com/tandem-dev/tandem/runtime/server"
	"github.com/tandem-dev/tandem/runtime/store/memory"
)

// stack is the real server (runtime/server over the document sequencer and
// the in-memory log) behind a WebSocket proxy that can misbehave in the
// ways a network or a contended store does: refuse an operation as
// "unavailable", cut connections, lose a frame.
type stack struct {
	t      *testing.T
	direct string // the server's HTTP base
	proxy  *proxy
}

func newStack(t *testing.T, p *proxy) *stack {
	t.Helper()
	logger := slog.New(slog.DiscardHandler)
	m := metrics.New()
	l := memory.NewLog(memory.LogOptions{})
	mgr := doc.NewManager(doc.Options{Log: l, Metrics: m, Logger: logger})
	srv := server.New(server.Options{Manager: mgr, Auth: auth.Anonymous{}, Metrics: m, Logger: logger,
		Limits: server.Limits{OpsPerSecond: 1e6, OpsBurst: 1 << 30, MaxOpBytes: 4 << 20, MaxMessageBytes: 8 << 20}})
	hs := httptest.NewServer(srv.Handler())
	if p == nil {
		p = &proxy{}
	}
	p.upstream = "ws" + strings.TrimPrefix(hs.URL, "http")
	p.conns = map[*websocket.Conn]struct{}{}
	ps := httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(func() {
		ps.CloseClientConnections()
		ps.Close()
		p.wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		hs.Close()
		_ = mgr.Close(ctx)
		_ = l.Close(ctx)
	})
	p.base = "ws" + strings.TrimPrefix(ps.URL, "http")
	return &stack{t: t, direct: "ws" + strings.TrimPrefix(hs.URL, "http"), proxy: p}
}

// client returns a connected client of docID through the proxy.
func (s *stack) client(ctx context.Context, docID string, opts client.Options) *client.Client {
	s.t.Helper()
	opts.URL = s.proxy.base + "/v1/docs/" + docID + "/ws"
	c := client.New(opts)
	if err := c.Connect(ctx); err != nil {
		s.t.Fatalf("connect %s: %v", opts.ClientID, err)
	}
	s.t.Cleanup(c.Close)
	return c
}

// server reads the document straight from the server (not through the
// proxy).
func (s *stack) server(ctx context.Context, docID string) (string, int64) {
	s.t.Helper()
	c := client.New(client.Options{URL: s.direct + "/v1/docs/" + docID + "/ws", ClientID: fmt.Sprintf("observer-%d", time.Now().UnixNano())})
	if err := c.Connect(ctx); err != nil {
		s.t.Fatalf("observer: %v", err)
	}
	defer c.Close()
	return c.Snapshot()
}

// proxy forwards WebSocket frames between clients and the server. Its
// hooks are set before the first connection and not changed after.
type proxy struct {
	// refuse is asked about the n-th op frame (from 1) a connection sends;
	// true answers it with "unavailable" instead of forwarding it.
	refuse func(n int) bool
	// dropAfter > 0 cuts a connection, both sides, right after it has
	// forwarded that many op frames to the server.
	dropAfter int
	// toClient sees every server frame for the client with the given id;
	// false loses it.
	toClient func(clientID string, data []byte) bool

	upstream, base string
	wg             sync.WaitGroup
	mu             sync.Mutex
	conns          map[*websocket.Conn]struct{}
	refused        atomic.Int64
}

// cutAll cuts every connection, as a network failure would.
func (p *proxy) cutAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

func (p *proxy) serve(w http.ResponseWriter, r *http.Request) {
	p.wg.Add(1)
	defer p.wg.Done()
	up := websocket.Upgrader{}
	down, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer down.Close()
	upc, _, err := websocket.DefaultDialer.Dial(p.upstream+r.URL.Path, nil)
	if err != nil {
		return
	}
	defer upc.Close()
	p.mu.Lock()
	p.conns[down] = struct{}{}
	p.conns[upc] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, down)
		delete(p.conns, upc)
		p.mu.Unlock()
	}()

	var downMu sync.Mutex // the two pumps both write to the client
	var clientID atomic.Value
	clientID.Store("")
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer down.Close()
		for {
			_, data, err := upc.ReadMessage()
			if err != nil {
				return
			}
			if p.toClient != nil && !p.toClient(clientID.Load().(string), data) {
				continue
			}
			downMu.Lock()
			err = down.WriteMessage(websocket.TextMessage, data)
			downMu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	ops := 0
	for {
		_, data, err := down.ReadMessage()
		if err != nil {
			break
		}
		var m struct {
			Type   string `json:"type"`
			Client string `json:"client"`
			Seq    int64  `json:"seq"`
		}
		_ = json.Unmarshal(data, &m)
		if m.Type == protocol.TypeHello {
			clientID.Store(m.Client)
		}
		if m.Type == protocol.TypeOp {
			ops++
			if p.refuse != nil && p.refuse(ops) {
				p.refused.Add(1)
				seq := m.Seq
				e, _ := json.Marshal(protocol.Error{Type: protocol.TypeError, Code: protocol.CodeUnavailable, Message: "injected contention", Seq: &seq})
				downMu.Lock()
				err := down.WriteMessage(websocket.TextMessage, e)
				downMu.Unlock()
				if err != nil {
					break
				}
				continue
			}
		}
		if err := upc.WriteMessage(websocket.TextMessage, data); err != nil {
			break
		}
		if m.Type == protocol.TypeOp && p.dropAfter > 0 && ops%p.dropAfter == 0 {
			// Let the server take it, so that some cuts come after the
			// commit and before the ack reaches the client.
			time.Sleep(time.Millisecond)
			break
		}
	}
	upc.Close()
	down.Close()
	<-done
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// appendChar types at the end.
func appendChar(ch string) func(int) ot.Op {
	return func(n int) ot.Op {
		if n == 0 {
			return ot.Op{{Insert: ch}}
		}
		return ot.Op{{Retain: n}, {Insert: ch}}
	}
}

// closedLoop makes n edits, each waiting for the previous one's ack.
func closedLoop(ctx context.Context, t *testing.T, c *client.Client, n int) {
	t.Helper()
	for i := range n {
		if err := c.EditLen(appendChar(string(rune('a' + i%26)))); err != nil {
			t.Fatalf("edit %d: %v", i, err)
		}
		if err := c.WaitSynced(ctx, -1); err != nil {
			t.Fatalf("edit %d: %v", i, err)
		}
	}
}

// The callbacks report every first send, ack and remote operation with
// consistent seqs, revisions and times, and run without the client's lock:
// they call the client's own methods.
func TestCallbacks(t *testing.T) {
	s := newStack(t, nil)
	ctx := testContext(t)
	type sendAt struct {
		seq int64
		at  time.Time
	}
	type ack struct {
		seq, rev int64
		latency  time.Duration
		at       time.Time
	}
	var mu sync.Mutex
	var sends []sendAt
	var acks []ack
	var remotes []protocol.Op
	var writer, reader *client.Client
	writer = s.client(ctx, "hooks", client.Options{ClientID: "writer",
		OnSend: func(seq int64, at time.Time) {
			_ = writer.Rev() // would deadlock if the lock were held
			mu.Lock()
			sends = append(sends, sendAt{seq, at})
			mu.Unlock()
		},
		OnAck: func(seq, rev int64, latency time.Duration, at time.Time) {
			if got := writer.Rev(); got < rev {
				t.Errorf("in OnAck(seq %d, rev %d) the client is at revision %d", seq, rev, got)
			}
			mu.Lock()
			acks = append(acks, ack{seq, rev, latency, at})
			mu.Unlock()
		}})
	reader = s.client(ctx, "hooks", client.Options{ClientID: "reader",
		OnRemote: func(op protocol.Op, at time.Time) {
			_ = reader.Stats()
			mu.Lock()
			remotes = append(remotes, op)
			mu.Unlock()
		}})
	const n = 40
	closedLoop(ctx, t, writer, n)
	// Edits composed while one is in flight go out as one operation.
	for i := range 5 {
		if err := writer.EditLen(appendChar(string(rune('A' + i)))); err != nil {
			t.Fatal(err)
		}
	}
	if err := writer.WaitSynced(ctx, -1); err != nil {
		t.Fatal(err)
	}
	if err := reader.WaitSynced(ctx, writer.Rev()); err != nil {
		t.Fatal(err)
	}

	st := writer.Stats()
	mu.Lock()
	defer mu.Unlock()
	if int64(len(sends)) != st.Submitted || int64(len(acks)) != st.Acked || st.Acked != st.Submitted {
		t.Fatalf("%d OnSend, %d OnAck, stats %+v", len(sends), len(acks), st)
	}
	if st.Submitted < n+1 || st.Submitted > n+5 {
		t.Fatalf("submitted %d operations for %d closed-loop edits and 5 quick ones", st.Submitted, n)
	}
	for i, a := range acks {
		s := sends[i]
		if s.seq != int64(i+1) || a.seq != s.seq || a.rev != int64(i+1) {
			t.Fatalf("operation %d: sent seq %d, acked seq %d as rev %d", i, s.seq, a.seq, a.rev)
		}
		if a.latency <= 0 || a.latency != a.at.Sub(s.at) {
			t.Fatalf("seq %d: latency %v, sent %v, acked %v", a.seq, a.latency, s.at, a.at)
		}
	}
	if len(remotes) != len(acks) {
		t.Fatalf("reader saw %d remote operations, writer had %d acked", len(remotes), len(acks))
	}
	for i, o := range remotes {
		if o.Client != "writer" || o.Seq != acks[i].seq || o.Rev != acks[i].rev {
			t.Fatalf("remote %d = seq %d rev %d from %q, want seq %d rev %d from writer", i, o.Seq, o.Rev, o.Client, acks[i].seq, acks[i].rev)
		}
	}
	if writer.Text() != reader.Text() || !strings.HasSuffix(writer.Text(), "ABCDE") {
		t.Fatalf("writer %q, reader %q", writer.Text(), reader.Text())
	}
	if got := writer.Acks(); len(got) != len(acks) {
		t.Fatalf("Acks() has %d, want %d", len(got), len(acks))
	}
}

// "unavailable" is retryable: the operation goes out again on the same
// connection, the retries are counted, and nothing is submitted twice.
func TestRetriesUnavailable(t *testing.T) {
	s := newStack(t, &proxy{refuse: func(n int) bool { return n%2 == 0 }})
	ctx := testContext(t)
	c := s.client(ctx, "retry", client.Options{ClientID: "c"})
	const n = 30
	closedLoop(ctx, t, c, n)
	st := c.Stats()
	if st.Submitted != n || st.Acked != n {
		t.Fatalf("stats %+v, want %d submitted and acked", st, n)
	}
	if refused := s.proxy.refused.Load(); st.Retries != refused || refused < n-1 {
		t.Fatalf("%d retries counted, %d refusals made; every second frame was refused", st.Retries, refused)
	}
	if !c.Connected() || c.Err() != nil {
		t.Fatalf("connection lost over retryable refusals: %v", c.Err())
	}
	text, rev := s.server(ctx, "retry")
	if got, gotRev := c.Snapshot(); got != text || gotRev != rev || rev != n {
		t.Fatalf("client at rev %d %q, server at rev %d %q", gotRev, got, rev, text)
	}
}

// Retries are bounded: past MaxRetries the connection ends with the
// refusal, and WaitSynced says so at once instead of waiting out its
// context.
func TestRetriesExhausted(t *testing.T) {
	s := newStack(t, &proxy{refuse: func(int) bool { return true }})
	ctx := testContext(t)
	c := s.client(ctx, "exhausted", client.Options{ClientID: "c", MaxRetries: 3})
	if err := c.EditLen(appendChar("x")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := c.WaitSynced(ctx, -1)
	if err == nil || !strings.Contains(err.Error(), "refused after 3 retries: unavailable") {
		t.Fatalf("WaitSynced = %v, want the fourth refusal", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("WaitSynced took %v", d)
	}
	if !errors.Is(c.Err(), c.CloseError()) || c.Err() == nil {
		t.Fatalf("Err = %v, CloseError = %v", c.Err(), c.CloseError())
	}
	if st := c.Stats(); st.Retries != 3 || st.Submitted != 1 || st.Acked != 0 {
		t.Fatalf("stats %+v", st)
	}
	if errs := c.Errors(); len(errs) != 4 || errs[3].Code != protocol.CodeUnavailable || errs[3].Seq == nil || *errs[3].Seq != 1 {
		t.Fatalf("errors %+v", errs)
	}
}

// With Reconnects the client re-dials lost connections by itself, resumes,
// treats its own operation in the resume list as its ack, resubmits what
// is still in flight, and every operation is acknowledged exactly once.
// Without, a lost connection stops it and WaitSynced returns at once.
func TestReconnects(t *testing.T) {
	t.Run("automatic", func(t *testing.T) {
		s := newStack(t, &proxy{dropAfter: 5})
		ctx := testContext(t)
		c := s.client(ctx, "reconnect", client.Options{ClientID: "c", Reconnects: 1000})
		other := s.client(ctx, "reconnect", client.Options{ClientID: "other", Reconnects: 1000})
		const n = 40
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			closedLoop(ctx, t, other, n)
		}()
		closedLoop(ctx, t, c, n)
		wg.Wait()
		st := c.Stats()
		if st.Submitted != n || st.Acked != n {
			t.Fatalf("stats %+v, want %d submitted and acked", st, n)
		}
		if st.Reconnects < n/5-1 {
			t.Fatalf("%d reconnects; the proxy cut the connection every 5 operations", st.Reconnects)
		}
		text, rev := s.server(ctx, "reconnect")
		for _, cl := range []*client.Client{c, other} {
			if err := cl.WaitSynced(ctx, rev); err != nil {
				t.Fatal(err)
			}
			if got, gotRev := cl.Snapshot(); got != text || gotRev != rev || rev != 2*n {
				t.Fatalf("%s at rev %d %q, server at rev %d %q", cl.ClientID(), gotRev, got, rev, text)
			}
		}
		prev := int64(0)
		for i, a := range c.Acks() {
			if a.Seq != int64(i+1) || a.Rev <= prev {
				t.Fatalf("ack %d = %+v after rev %d", i, a, prev)
			}
			prev = a.Rev
		}
	})
	t.Run("none", func(t *testing.T) {
		s := newStack(t, nil)
		ctx := testContext(t)
		c := s.client(ctx, "stop", client.Options{ClientID: "c"})
		closedLoop(ctx, t, c, 3)
		s.proxy.cutAll()
		if err := c.WaitFor(ctx, func() bool { return !c.Connected() }); err != nil {
			t.Fatal(err)
		}
		if err := c.EditLen(appendChar("x")); err != nil {
			t.Fatal(err) // offline edits are kept for the next Connect
		}
		if err := c.WaitSynced(ctx, -1); err == nil || c.Err() == nil || !errors.Is(err, c.Err()) {
			t.Fatalf("WaitSynced = %v, Err = %v", err, c.Err())
		}
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		if c.Err() != nil {
			t.Fatalf("Err after Connect = %v", c.Err())
		}
		if err := c.WaitSynced(ctx, -1); err != nil {
			t.Fatal(err)
		}
		if text, rev := s.server(ctx, "stop"); text != "abcx" || rev != 4 {
			t.Fatalf("server at rev %d %q", rev, text)
		}
	})
	t.Run("close stops reconnecting", func(t *testing.T) {
		s := newStack(t, nil)
		ctx := testContext(t)
		c := s.client(ctx, "close", client.Options{ClientID: "c", Reconnects: 5})
		s.proxy.cutAll()
		if err := c.WaitFor(ctx, func() bool { return !c.Connected() }); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		c.Close()
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Close took %v", d)
		}
		if !errors.Is(c.Err(), client.ErrClosed) {
			t.Fatalf("Err after Close = %v", c.Err())
		}
		time.Sleep(300 * time.Millisecond) // past the first re-dial delay
		if c.Connected() {
			t.Fatal("reconnected after Close")
		}
	})
}

// A remote operation lost on the way is a gap: it ends the connection with
// an error saying so; with Reconnects the resume fills the gap.
func TestGap(t *testing.T) {
	for _, reconnects := range []int{0, 1} {
		t.Run(fmt.Sprintf("reconnects=%d", reconnects), func(t *testing.T) {
			var lost atomic.Bool
			s := newStack(t, &proxy{toClient: func(id string, data []byte) bool {
				return id != "reader" || !strings.Contains(string(data), `"rev":3,`) || !lost.CompareAndSwap(false, true)
			}})
			ctx := testContext(t)
			writer := s.client(ctx, "gap", client.Options{ClientID: "writer"})
			reader := s.client(ctx, "gap", client.Options{ClientID: "reader", Reconnects: reconnects})
			closedLoop(ctx, t, writer, 6)
			err := reader.WaitSynced(ctx, 6)
			if !lost.Load() {
				t.Fatal("the proxy lost nothing")
			}
			if reconnects == 0 {
				if err == nil || !strings.Contains(err.Error(), "operation for revision 4 arrived at revision 2 (gap or reorder)") {
					t.Fatalf("WaitSynced = %v, want the gap", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if reader.Text() != writer.Text() || reader.Stats().Reconnects != 1 {
				t.Fatalf("reader %q after %d reconnects, writer %q", reader.Text(), reader.Stats().Reconnects, writer.Text())
			}
		})
	}
}

// An edit or a remote operation on a large document costs no copy of the
// text: the bytes allocated per operation, by the writer, a reader and the
// server together, stay far below the document's size.
func TestEditCostIndependentOfLength(t *testing.T) {
	s := newStack(t, nil)
	ctx := testContext(t)
	writer := s.client(ctx, "large", client.Options{ClientID: "writer", DiscardAcks: true})
	reader := s.client(ctx, "large", client.Options{ClientID: "reader", DiscardAcks: true})
	const size = 1 << 20
	if err := writer.Edit(ot.Op{{Insert: strings.Repeat("0123456789abcdef", size/16)}}); err != nil {
		t.Fatal(err)
	}
	if err := reader.WaitSynced(ctx, 1); err != nil {
		t.Fatal(err)
	}
	const n = 200
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	closedLoop(ctx, t, writer, n)
	if err := reader.WaitSynced(ctx, writer.Rev()); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	perOp := (after.TotalAlloc - before.TotalAlloc) / n
	t.Logf("%d bytes allocated per operation on a %d-byte document", perOp, size)
	if perOp > size/8 {
		t.Fatalf("%d bytes allocated per operation on a %d-byte document: something copies the text", perOp, size)
	}
	if reader.Len() != size+n {
		t.Fatalf("reader has %d code points, want %d", reader.Len(), size+n)
	}
}

// BenchmarkClosedLoop is one edit and its ack through the real server on
// loopback, with one other client receiving it.
func BenchmarkClosedLoop(b *testing.B) {
	logger := slog.New(slog.DiscardHandler)
	m := metrics.New()
	l := memory.NewLog(memory.LogOptions{})
	mgr := doc.NewManager(doc.Options{Log: l, Metrics: m, Logger: logger})
	srv := server.New(server.Options{Manager: mgr, Auth: auth.Anonymous{}, Metrics: m, Logger: logger,
		Limits: server.Limits{OpsPerSecond: 1e9, OpsBurst: 1 << 30}})
	hs := httptest.NewServer(srv.Handler())
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		hs.Close()
		_ = mgr.Close(ctx)
		_ = l.Close(ctx)
	}()
	ctx := context.Background()
	url := "ws" + strings.TrimPrefix(hs.URL, "http") + "/v1/docs/bench/ws"
	var cs []*client.Client
	for _, id := range []string{"writer", "reader"} {
		c := client.New(client.Options{URL: url, ClientID: id, DiscardAcks: true})
		if err := c.Connect(ctx); err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		cs = append(cs, c)
	}
	w := cs[0]
	build := appendChar("x")
	b.ReportAllocs()
	for b.Loop() {
		if err := w.EditLen(build); err != nil {
			b.Fatal(err)
		}
		if err := w.WaitSynced(ctx, -1); err != nil {
			b.Fatal(err)
		}
	}
}
