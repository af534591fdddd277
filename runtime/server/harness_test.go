package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tandem-dev/tandem/runtime/auth"
	"github.com/tandem-dev/tandem/runtime/client"
	"github.com/tandem-dev/tandem/runtime/doc"
	"github.com/tandem-dev/tandem/runtime/metrics"
	"github.com/tandem-dev/tandem/runtime/protocol"
	"github.com/tandem-dev/tandem/runtime/server"
	"github.com/tandem-dev/tandem/runtime/store/memory"
	"github.com/tandem-dev/tandem/runtime/store/sqlite"
)

var testKey = []byte("test-key-test-key-test-key-test-key")

// stack is a complete embedded runtime on a loopback httptest server.
type stack struct {
	t       testing.TB
	srv     *server.Server
	http    *httptest.Server
	manager *doc.Manager
	log     *memory.Log
	durable *sqlite.Store
	metrics *metrics.Metrics
	jwt     bool
}

type stackOptions struct {
	jwt     bool
	jwtNow  func() time.Time // the token verifier's clock (nil: time.Now)
	limits  server.Limits
	window  int
	maxDoc  int
	origins []string
	// checkHost turns on the anonymous mode's Host check.
	checkHost bool
	hosts     []string // AllowedHosts
	pending   int64    // MaxPendingBytes
	hello     time.Duration
	ping      time.Duration
	queue     int // WriteQueueBytes
	wtime     time.Duration
}

func newStack(t testing.TB, o stackOptions) *stack {
	t.Helper()
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(&testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	durable, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	l := memory.NewLog(memory.LogOptions{Durable: durable, SyncCommit: true, FlushInterval: 50 * time.Millisecond, Logger: logger})
	p := memory.NewPresence(memory.PresenceOptions{TTL: 5 * time.Second})
	mgr := doc.NewManager(doc.Options{Log: l, Durable: durable, Presence: p, Metrics: m, Logger: logger, Window: o.window, MaxDocBytes: o.maxDoc})
	var authn auth.Authenticator = auth.Anonymous{}
	if o.jwt {
		j, err := auth.NewJWT(testKey, o.jwtNow)
		if err != nil {
			t.Fatal(err)
		}
		authn = j
	}
	srv := server.New(server.Options{
		Manager: mgr, Auth: authn, Metrics: m, Logger: logger, Limits: o.limits,
		AllowedOrigins: o.origins, CheckHost: o.checkHost, AllowedHosts: o.hosts, MaxPendingBytes: o.pending, HelloTimeout: o.hello, PingInterval: o.ping, WriteQueueBytes: o.queue, WriteTimeout: o.wtime, Ready: []server.ReadyCheck{{Name: "sqlite", Check: durable.Ready}},
	})
	hs := httptest.NewServer(srv.Handler())
	s := &stack{t: t, srv: srv, http: hs, manager: mgr, log: l, durable: durable, metrics: m, jwt: o.jwt}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		hs.Close()
		_ = mgr.Close(ctx)
		_ = l.Close(ctx)
		p.Close()
		_ = durable.Close()
	})
	return s
}

type testWriter struct{ t testing.TB }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (s *stack) wsURL(docID string) string {
	return "ws" + strings.TrimPrefix(s.http.URL, "http") + "/v1/docs/" + docID + "/ws"
}

func (s *stack) token(sub string, perm auth.Perm, docs ...string) string {
	s.t.Helper()
	tok, err := auth.Mint(testKey, auth.MintOptions{Subject: sub, Name: strings.ToUpper(sub), Docs: docs, Perm: perm, TTL: time.Hour})
	if err != nil {
		s.t.Fatal(err)
	}
	return tok
}

// client returns a connected protocol client with write access.
func (s *stack) client(ctx context.Context, docID, clientID string) *client.Client {
	s.t.Helper()
	opts := client.Options{URL: s.wsURL(docID), ClientID: clientID}
	if s.jwt {
		opts.Token = s.token("user-"+clientID, auth.PermWrite, docID)
	}
	c := client.New(opts)
	if err := c.Connect(ctx); err != nil {
		s.t.Fatalf("connect %s: %v", clientID, err)
	}
	s.t.Cleanup(c.Close)
	return c
}

type docJSON struct {
	ID   string `json:"id"`
	Rev  int64  `json:"rev"`
	Text string `json:"text"`
}

func (s *stack) get(path, token string, into any) int {
	s.t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.http.URL+path, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if into != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, into); err != nil {
			s.t.Fatalf("GET %s: decode %q: %v", path, body, err)
		}
	}
	return resp.StatusCode
}

func (s *stack) doc(docID string) docJSON {
	s.t.Helper()
	var d docJSON
	tok := ""
	if s.jwt {
		tok = s.token("reader", auth.PermRead, docID)
	}
	if code := s.get("/v1/docs/"+docID, tok, &d); code != http.StatusOK {
		s.t.Fatalf("GET doc %s: HTTP %d", docID, code)
	}
	return d
}

func (s *stack) history(docID string) []protocol.Op {
	s.t.Helper()
	tok := ""
	if s.jwt {
		tok = s.token("reader", auth.PermRead, docID)
	}
	// Follow the pages (Link rel="next") to the end.
	var all []protocol.Op
	for path := "/v1/docs/" + docID + "/ops?from=0"; path != ""; {
		req, err := http.NewRequest(http.MethodGet, s.http.URL+path, nil)
		if err != nil {
			s.t.Fatal(err)
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			s.t.Fatalf("GET %s: %v", path, err)
		}
		var ops []protocol.Op
		err = json.NewDecoder(resp.Body).Decode(&ops)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			s.t.Fatalf("GET ops %s: HTTP %d, %v", path, resp.StatusCode, err)
		}
		all = append(all, ops...)
		path = ""
		if l, ok := strings.CutPrefix(resp.Header.Get("Link"), "<"); ok {
			path, _, _ = strings.Cut(l, ">")
		}
	}
	return all
}

// raw is a WebSocket spoken to by hand, for malformed input.
type raw struct {
	t  testing.TB
	ws *websocket.Conn
}

func (s *stack) raw(docID string, header http.Header) *raw {
	s.t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(s.wsURL(docID), header)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		s.t.Fatalf("dial: %v (HTTP %d)", err, status)
	}
	s.t.Cleanup(func() { ws.Close() })
	return &raw{t: s.t, ws: ws}
}

func (r *raw) sendText(s string) {
	r.t.Helper()
	if err := r.ws.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

func (r *raw) hello(token, clientID string) {
	r.t.Helper()
	b, _ := json.Marshal(protocol.Hello{Type: "hello", V: 1, Token: token, Client: clientID})
	r.sendText(string(b))
}

// next returns the next message's type and body, or the close code when
// the connection closes (type "").
func (r *raw) next(within time.Duration) (string, map[string]any, int) {
	r.t.Helper()
	_ = r.ws.SetReadDeadline(time.Now().Add(within))
	_, data, err := r.ws.ReadMessage()
	if err != nil {
		var ce *websocket.CloseError
		if asClose(err, &ce) {
			return "", nil, ce.Code
		}
		r.t.Fatalf("read: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		r.t.Fatalf("server sent non-JSON %q", data)
	}
	typ, _ := m["type"].(string)
	return typ, m, 0
}

func asClose(err error, ce **websocket.CloseError) bool {
	c, ok := err.(*websocket.CloseError)
	if ok {
		*ce = c
	}
	return ok
}

// expect reads until a message of type typ, failing on a close.
func (r *raw) expect(typ string) map[string]any {
	r.t.Helper()
	for {
		got, m, code := r.next(10 * time.Second)
		if got == "" {
			r.t.Fatalf("connection closed with %d while waiting for %q", code, typ)
		}
		if got == typ {
			return m
		}
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("marshal %T: %v", v, err))
	}
	return string(b)
}

func highLimits() server.Limits {
	return server.Limits{OpsPerSecond: 10000, OpsBurst: 10000}
}

type serverLimits = server.Limits

func wsDial(url string, h http.Header) (*websocket.Conn, *http.Response, error) {
	return websocket.DefaultDialer.Dial(url, h)
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type clientT = client.Client

func newStackB(b *testing.B) *stack {
	return newStack(b, stackOptions{limits: server.Limits{OpsPerSecond: 1e9, OpsBurst: 1 << 30}})
}

func (s *stack) connect(ctx context.Context, docID, clientID string) *client.Client {
	return s.client(ctx, docID, clientID)
}
