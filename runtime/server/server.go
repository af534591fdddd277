// Package server is the runtime's HTTP surface: the document WebSocket, the
// document and history endpoints, probes, metrics and the editor pages.
package server

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-dev/tandem/runtime/auth"
	"github.com/tandem-dev/tandem/runtime/doc"
	"github.com/tandem-dev/tandem/runtime/metrics"
	"github.com/tandem-dev/tandem/runtime/protocol"
	"github.com/tandem-dev/tandem/runtime/store"
)

// Limits protect the process and the other users of a document.
type Limits struct {
	MaxMessageBytes int64   // largest WebSocket message read (default 256 KiB)
	MaxOpBytes      int     // most bytes one operation may insert (default 64 KiB)
	OpsPerSecond    float64 // sustained operations per connection (default 50)
	OpsBurst        int     // burst above the rate (default 2×rate)
	MaxConnsPerDoc  int     // connections to one document on this process (default 200)
}

// Options configures a Server.
type Options struct {
	Manager *doc.Manager
	Auth    auth.Authenticator
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	Limits  Limits
	// AllowedOrigins lists the browser origins ("https://host:port") that
	// may open the WebSocket; "*" allows any. Empty allows only requests
	// whose Origin matches the Host they were sent to. Requests without an
	// Origin header (non-browser clients) are always allowed.
	AllowedOrigins []string
	// CheckHost refuses requests whose Host header is a DNS name other
	// than localhost (or *.localhost) or the host of an allowed origin;
	// IP literals are always accepted. Set in anonymous mode: a page on
	// any domain the attacker points at a local server (DNS rebinding) is
	// same-origin to the browser, so neither CORS nor the Origin check
	// stops it from reading and editing every document.
	CheckHost bool
	// AllowedHosts are more host names CheckHost accepts (a Kubernetes
	// Service's names, an Ingress host).
	AllowedHosts []string
	// Ready are the readiness checks of /readyz, one per dependency.
	Ready []ReadyCheck
	// Web serves "/" and "/d/..." (the editor); nil serves nothing there.
	Web http.Handler

	HelloTimeout time.Duration // default 10s
	PingInterval time.Duration // default 20s; a connection that misses two pongs is closed
	// WriteQueueBytes is how much may wait to be written to one
	// connection before it counts as slow and is closed (default 1 MiB).
	// A single frame larger than that is still sent when nothing else
	// waits.
	WriteQueueBytes int
	// WriteTimeout is the longest a single write to a client may take
	// (default 10s): on a WebSocket, one burst of frames; on an HTTP
	// response, each chunk of at most 64 KiB, so a slow but steady reader
	// is served and one that stops reading is cut.
	WriteTimeout time.Duration
	// MaxPendingBytes bounds what the process holds, as a whole, for
	// clients that have not read it yet (default 64 MiB); see pending.
	MaxPendingBytes int64
}

// Server serves documents over HTTP and WebSocket.
type Server struct {
	opts     Options
	log      *slog.Logger
	upgrader websocket.Upgrader
	mux      *http.ServeMux
	// corkPool holds the buffers connections gather a burst of frames in.
	corkPool sync.Pool
	// readBufs holds the read buffers of parked connections
	// (*bufio.Reader, each with an empty buffer of readBufferSize).
	readBufs sync.Pool
	pending  *pending
	// wheel pings the connections and closes silent ones; poller wakes
	// parked connections (nil where there is none: each reads with a
	// goroutine of its own).
	wheel  *wheel
	poller *poller
	// workers run the connections' readers and writers.
	workers *workers
	// handshaking and idle count connections by state for
	// tandem_connections_by_state: in the handshake, and parked on the
	// poller. The rest of tandem_connections are active.
	handshaking atomic.Int64
	idle        atomic.Int64

	mu       sync.Mutex
	conns    map[*conn]struct{}
	perDoc   map[string]int
	draining bool
	wg       sync.WaitGroup
}

// New returns a Server; mount Handler on an http.Server.
func New(opts Options) *Server {
	l := &opts.Limits
	if l.MaxMessageBytes <= 0 {
		l.MaxMessageBytes = 256 << 10
	}
	if l.MaxOpBytes <= 0 {
		l.MaxOpBytes = 64 << 10
	}
	if l.OpsPerSecond <= 0 {
		l.OpsPerSecond = 50
	}
	if l.OpsBurst <= 0 {
		l.OpsBurst = int(2*l.OpsPerSecond) + 1
	}
	if l.MaxConnsPerDoc <= 0 {
		l.MaxConnsPerDoc = 200
	}
	if opts.HelloTimeout <= 0 {
		opts.HelloTimeout = 10 * time.Second
	}
	if opts.PingInterval <= 0 {
		opts.PingInterval = 20 * time.Second
	}
	if opts.WriteQueueBytes <= 0 {
		opts.WriteQueueBytes = 1 << 20
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	if opts.MaxPendingBytes <= 0 {
		opts.MaxPendingBytes = 64 << 20
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{
		opts:    opts,
		log:     opts.Logger,
		conns:   map[*conn]struct{}{},
		perDoc:  map[string]int{},
		pending: newPending(opts.MaxPendingBytes, opts.Metrics.Registry),
	}
	s.registerStateGauges(opts.Metrics.Registry)
	s.corkPool.New = func() any { b := make([]byte, 0, 4096); return &b }
	s.wheel = newWheel(opts.PingInterval, (*conn).pingTick)
	s.poller = newPoller()
	s.workers = newWorkers(workerIdle)
	s.upgrader = websocket.Upgrader{
		// No ReadBufferSize: the library reads through the connection's
		// own small buffer (hijackWriter), which the connection can look
		// into before it parks.
		WriteBufferSize: 4096,
		// Idle connections hold no write buffer: it is taken from the pool
		// for each write and returned after, which matters with many
		// mostly-idle editors per replica.
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     s.checkOrigin,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/docs/{docId}/ws", s.serveWS)
	mux.HandleFunc("GET /v1/docs/{docId}", s.serveDoc)
	mux.HandleFunc("GET /v1/docs/{docId}/ops", s.serveOps)
	mux.HandleFunc("GET /v1/docs", s.serveList)
	mux.HandleFunc("DELETE /v1/docs/{docId}", s.serveDelete)
	mux.HandleFunc("GET /v1/docs/{docId}/export", s.serveExport)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", s.serveReady)
	mux.Handle("GET /metrics", opts.Metrics.Handler())
	if opts.Web != nil {
		mux.Handle("/", opts.Web)
	}
	s.mux = mux
	return s
}

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.guard) }

// guard applies what every request needs before the routes: the Host check
// and write deadlines on every response except the WebSocket's, which
// sets its own per burst.
func (s *Server) guard(w http.ResponseWriter, r *http.Request) {
	if s.opts.CheckHost && !s.allowedHost(r.Host) {
		s.writeError(w, http.StatusMisdirectedRequest, protocol.CodeForbidden,
			"host "+strconv.Quote(r.Host)+" is not served in anonymous mode; use localhost or an IP address, or list it in --allowed-hosts or --allowed-origins")
		return
	}
	if websocket.IsWebSocketUpgrade(r) {
		s.mux.ServeHTTP(w, r)
		return
	}
	dw := &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: s.opts.WriteTimeout}
	// Also covers a response without a body: its headers are written
	// after the handler returns.
	_ = dw.rc.SetWriteDeadline(time.Now().Add(dw.timeout))
	s.mux.ServeHTTP(dw, r)
}

// allowedHost implements CheckHost.
func (s *Server) allowedHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if net.ParseIP(host) != nil || host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	for _, h := range s.opts.AllowedHosts {
		if strings.EqualFold(strings.TrimSuffix(h, "."), host) {
			return true
		}
	}
	for _, o := range s.opts.AllowedOrigins {
		if o == "*" {
			return true
		}
		if u, err := url.Parse(o); err == nil && strings.EqualFold(u.Hostname(), host) {
			return true
		}
	}
	return false
}

// deadlineWriter gives every write of an HTTP response a deadline,
// renewed for each chunk: a client that stops reading is cut after
// timeout instead of holding the handler, its buffers and a file
// descriptor forever.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

// deadlineChunk bounds what one deadline covers.
const deadlineChunk = 64 << 10

func (d *deadlineWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := p[:min(len(p), deadlineChunk)]
		_ = d.rc.SetWriteDeadline(time.Now().Add(d.timeout))
		k, err := d.ResponseWriter.Write(c)
		n += k
		if err != nil {
			return n, err
		}
		p = p[len(c):]
	}
	return n, nil
}

func (d *deadlineWriter) Flush() {
	_ = d.rc.SetWriteDeadline(time.Now().Add(d.timeout))
	_ = d.rc.Flush()
}

func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }

// checkOrigin implements the allowed-origins rule for browsers.
func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	for _, o := range s.opts.AllowedOrigins {
		if o == "*" || strings.EqualFold(strings.TrimRight(o, "/"), origin) {
			return true
		}
	}
	if len(s.opts.AllowedOrigins) == 0 {
		u, err := url.Parse(origin)
		return err == nil && strings.EqualFold(u.Host, r.Host)
	}
	return false
}

// ValidDocID accepts one path segment of letters, digits and "-_." of at
// most 128 bytes (the same rule as the editor's URLs).
func ValidDocID(id string) bool {
	if id == "" || len(id) > 128 || id == "." || id == ".." {
		return false
	}
	for _, c := range id {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if t, ok := strings.CutPrefix(h, "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return ""
}

type httpError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) writeError(w http.ResponseWriter, status int, code, msg string) {
	s.opts.Metrics.Errors.WithLabelValues(code).Inc()
	writeJSON(w, status, httpError{Code: code, Message: msg})
}

// authorize authenticates an HTTP request for doc; it writes the error
// response and returns false when refused.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, docID string) bool {
	if !ValidDocID(docID) {
		s.writeError(w, http.StatusBadRequest, protocol.CodeBadMessage, "invalid document id")
		return false
	}
	if _, err := s.opts.Auth.Authenticate(bearer(r), docID); err != nil {
		var ae *auth.Error
		if errors.As(err, &ae) && ae.Code == auth.CodeForbidden {
			s.writeError(w, http.StatusForbidden, protocol.CodeForbidden, ae.Error())
		} else {
			s.writeError(w, http.StatusUnauthorized, protocol.CodeUnauthorized, err.Error())
		}
		return false
	}
	return true
}

// docResponse is the answer of GET /v1/docs/{id} without its text, which
// is appended as the last field.
type docResponse struct {
	ID  string `json:"id"`
	Rev int64  `json:"rev"`
}

func (s *Server) serveDoc(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("docId")
	if !s.authorize(w, r, id) {
		return
	}
	if v := r.URL.Query().Get("rev"); v != "" {
		rev, err := strconv.ParseInt(v, 10, 64)
		if err != nil || rev < 0 {
			s.writeError(w, http.StatusBadRequest, protocol.CodeBadMessage, "rev must be a revision >= 0")
			return
		}
		if !s.roomForSlowReaders(w) {
			return
		}
		snap, ok := s.textAt(w, r, id, rev)
		if !ok {
			return
		}
		writeJSON(w, http.StatusOK, struct {
			ID   string `json:"id"`
			Rev  int64  `json:"rev"`
			Text string `json:"text"`
		}{id, snap.Rev, snap.Text})
		return
	}
	text, err := s.opts.Manager.EncodedText(r.Context(), id)
	if err != nil {
		s.log.Warn("snapshot", "doc", id, "err", err)
		s.writeError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "document unavailable, retry")
		return
	}
	// A text others are being sent already costs nothing more.
	if !text.Holds.Held() && !s.roomForSlowReaders(w) {
		return
	}
	s.pending.holdText(text)
	defer s.pending.releaseText(text)
	// The text is the document's shared encoding at this revision: every
	// reader of a large document holds a reference, not a copy.
	head, err := json.Marshal(docResponse{ID: id, Rev: text.Rev})
	if err != nil {
		s.writeError(w, http.StatusInternalServerError, protocol.CodeUnavailable, "encode document")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(head)-1+len(`,"text":`)+len(text.JSON)+len("}\n")))
	w.WriteHeader(http.StatusOK)
	for _, part := range [][]byte{head[:len(head)-1], []byte(`,"text":`), text.JSON, []byte("}\n")} {
		if _, err := w.Write(part); err != nil {
			return // the client went away or stopped reading
		}
	}
}

// History paging: /ops returns at most limit operations per request
// (default DefaultHistoryLimit, at most MaxHistory), and fewer when they
// are large, so that one request never holds more than about
// historyPageBytes of operations; a Link header names the next page.
const (
	DefaultHistoryLimit = 1000
	MaxHistory          = 10000
	historyPageBytes    = 1 << 20
	// historyChunk is how many revisions one read from storage asks for
	// while a page is gathered.
	historyChunk = 64
)

func (s *Server) serveOps(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("docId")
	if !s.authorize(w, r, id) {
		return
	}
	q := r.URL.Query()
	from, to, limit := int64(0), int64(-1), int64(DefaultHistoryLimit)
	var err error
	if v := q.Get("from"); v != "" {
		if from, err = strconv.ParseInt(v, 10, 64); err != nil || from < 0 {
			s.writeError(w, http.StatusBadRequest, protocol.CodeBadMessage, "from must be a revision >= 0")
			return
		}
	}
	if v := q.Get("to"); v != "" {
		if to, err = strconv.ParseInt(v, 10, 64); err != nil || to < from {
			s.writeError(w, http.StatusBadRequest, protocol.CodeBadMessage, "to must be a revision >= from")
			return
		}
	}
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.ParseInt(v, 10, 64); err != nil || limit < 1 {
			s.writeError(w, http.StatusBadRequest, protocol.CodeBadMessage, fmt.Sprintf("limit must be between 1 and %d", MaxHistory))
			return
		}
		limit = min(limit, MaxHistory)
	}
	if !s.roomForSlowReaders(w) {
		return
	}
	end := from + limit // last revision this page may hold
	if end < from {
		end = math.MaxInt64 // from near the largest revision: no overflow
	}
	if to >= 0 {
		end = min(end, to)
	}
	// Gather the page a chunk at a time: a request holds at most about
	// historyPageBytes of operations, whatever limit asks for.
	var page []store.Entry
	size := 0
	last := from
	done := false // the head (or to) is reached: no next page
	for last < end && size < historyPageBytes {
		upto := min(end, last+historyChunk)
		want := upto - last
		chunk, err := s.opts.Manager.History(r.Context(), id, last, upto)
		if errors.Is(err, store.ErrCompacted) {
			s.writeError(w, http.StatusGone, protocol.CodeGone, fmt.Sprintf("revisions after %d are older than the retained history", last))
			return
		}
		if err != nil {
			s.log.Warn("history", "doc", id, "err", err)
			s.writeError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "history unavailable, retry")
			return
		}
		took := 0
		for _, e := range chunk {
			if size >= historyPageBytes {
				break
			}
			page = append(page, e)
			size += entrySize(e)
			last = e.Rev
			took++
		}
		if took < len(chunk) {
			break // the page is full; the rest is on the next one
		}
		if int64(len(chunk)) < want {
			done = true // fewer than asked: the document ends here
			break
		}
	}
	if to >= 0 && last >= to {
		done = true
	}
	if !done {
		next := url.Values{"from": {strconv.FormatInt(last, 10)}, "limit": {strconv.FormatInt(limit, 10)}}
		if to >= 0 {
			next.Set("to", strconv.FormatInt(to, 10))
		}
		w.Header().Set("Link", fmt.Sprintf("<%s?%s>; rel=\"next\"", r.URL.Path, next.Encode()))
	}
	s.pending.add(int64(size))
	defer s.pending.add(-int64(size))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	// Encode one operation at a time straight to the client rather than
	// the whole answer into one buffer.
	bw := bufio.NewWriterSize(w, 32<<10)
	enc := json.NewEncoder(bw)
	_ = bw.WriteByte('[')
	for i := range page {
		if i > 0 {
			_ = bw.WriteByte(',')
		}
		if err := enc.Encode(protocol.OpFromEntry(page[i])); err != nil {
			return // the client went away or stopped reading
		}
		page[i] = store.Entry{} // let what is written go
	}
	_, _ = bw.WriteString("]\n")
	_ = bw.Flush()
}

// roomForSlowReaders answers 503 (and returns false) while the process
// already holds MaxPendingBytes for clients that have not read them.
func (s *Server) roomForSlowReaders(w http.ResponseWriter) bool {
	if !s.pending.full() {
		return true
	}
	s.pending.refused.WithLabelValues("http").Inc()
	w.Header().Set("Retry-After", "1")
	s.writeError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "server busy, retry")
	return false
}

// entrySize estimates the encoded size of an entry.
func entrySize(e store.Entry) int {
	n := 64 + len(e.Client) + len(e.User)
	for _, c := range e.Op {
		n += 8 + len(c.Insert)
	}
	return n
}

// ReadyCheck is one dependency /readyz reports on.
type ReadyCheck struct {
	// Name is the dependency as people call it: "redis", "postgres",
	// "sqlite".
	Name string
	// Check fails while the dependency cannot serve.
	Check func(context.Context) error
	// Informational checks are reported but do not make the process
	// unready: PostgreSQL in distributed mode, where acknowledged edits
	// wait in Redis until it is back.
	Informational bool
}

// serveReady answers 200 when every required check passes and 503
// otherwise. The body names each dependency, one per line, in the style of
// the Kubernetes API server's /readyz?verbose, so a person reading a
// failed probe (kubectl describe pod) sees which one is failing and why:
//
//	[+]redis ok
//	[-]postgres failed (informational): dial tcp 10.0.0.7:5432: connection refused
//	not ready: redis
func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if draining {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("[-]shutdown draining\nnot ready: shutting down\n"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	// In parallel: a hanging dependency must not hide the others' state
	// behind the probe's timeout.
	errs := make([]error, len(s.opts.Ready))
	var wg sync.WaitGroup
	for i, c := range s.opts.Ready {
		wg.Go(func() { errs[i] = c.Check(ctx) })
	}
	wg.Wait()
	var body strings.Builder
	var failing []string
	for i, c := range s.opts.Ready {
		err := errs[i]
		switch {
		case err == nil:
			fmt.Fprintf(&body, "[+]%s ok\n", c.Name)
		case c.Informational:
			fmt.Fprintf(&body, "[-]%s failed (informational): %v\n", c.Name, err)
		default:
			fmt.Fprintf(&body, "[-]%s failed: %v\n", c.Name, err)
			failing = append(failing, c.Name)
		}
	}
	if len(failing) > 0 {
		fmt.Fprintf(&body, "not ready: %s\n", strings.Join(failing, ", "))
		w.WriteHeader(http.StatusServiceUnavailable)
	} else {
		body.WriteString("ok\n")
	}
	_, _ = w.Write([]byte(body.String()))
}

// refused counts a WebSocket connection refused before it joined.
func (s *Server) refused(reason string) {
	s.opts.Metrics.HandshakesRefused.WithLabelValues(reason).Inc()
}

// registerStateGauges adds tandem_connections_by_state, computed when
// scraped from counters the connections keep anyway.
func (s *Server) registerStateGauges(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	state := func(name string, f func() float64) {
		register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "tandem_connections_by_state",
			Help:        "Open document WebSocket connections by state: handshake (not yet joined), active (a reader goroutine runs) and idle (parked on the poller, no goroutine).",
			ConstLabels: prometheus.Labels{"state": name},
		}, f))
	}
	state("handshake", func() float64 { return float64(s.handshaking.Load()) })
	state("idle", func() float64 { return float64(s.idle.Load()) })
	state("active", func() float64 {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		return float64(max(0, int64(n)-s.handshaking.Load()-s.idle.Load()))
	})
}

// Shutdown refuses new connections, tells every connected client to
// reconnect (close code 1012) and waits for the connections to finish.
// The caller then closes the document manager and the stores, which
// flushes what is pending.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.close(protocol.CloseRestart, "server restarting")
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for connections to close: %w", ctx.Err())
	}
}

func randomID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
