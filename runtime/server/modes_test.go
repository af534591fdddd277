package server_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tandem-dev/tandem/internal/testsvc"
	"github.com/tandem-dev/tandem/runtime/auth"
	"github.com/tandem-dev/tandem/runtime/doc"
	"github.com/tandem-dev/tandem/runtime/metrics"
	"github.com/tandem-dev/tandem/runtime/server"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/distributed"
)

// deployment is a runtime as clients see it: one or more replicas that
// serve the same documents, with JWT authentication.
type deployment struct {
	t    testing.TB
	urls []string // http base URL of each replica
	// archive is the durable store the replicas share (SQLite in the
	// embedded mode, PostgreSQL in the distributed one), for tests that
	// compact it as the background compaction would.
	archive store.Archive
}

// modes runs f against the embedded runtime (one process, memory log and
// SQLite) and the distributed one (two replicas on a real Redis and
// PostgreSQL, forwarding to the document's owner).
func modes(t *testing.T, f func(t *testing.T, d *deployment)) { modesWindow(t, 0, f) }

// modesWindow is modes with the documents' in-memory window set (0: the
// default).
func modesWindow(t *testing.T, window int, f func(t *testing.T, d *deployment)) {
	t.Run("embedded", func(t *testing.T) {
		s := newStack(t, stackOptions{jwt: true, limits: highLimits(), window: window})
		f(t, &deployment{t: t, urls: []string{s.http.URL}, archive: s.durable})
	})
	t.Run("distributed", func(t *testing.T) {
		redis := testsvc.StartRedis(t)
		pg := testsvc.StartPostgres(t)
		d := &deployment{t: t}
		for range 2 {
			url, a := startReplica(t, redis.URL(), pg.URL(), window)
			d.urls, d.archive = append(d.urls, url), a
		}
		f(t, d)
	})
}

// startReplica starts a distributed-mode replica with a Router (so that
// submissions reach the document's owner across replicas) and returns its
// base URL and its durable store's archive.
func startReplica(t *testing.T, redisURL, pgURL string, window int) (string, store.Archive) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(&testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	m := metrics.New()
	stores, err := distributed.Open(ctx, distributed.Config{
		RedisURL: redisURL, PostgresURL: pgURL, FlushInterval: 100 * time.Millisecond,
		LeaseTTL: 5 * time.Second, Logger: logger,
	}, m.Registry)
	if err != nil {
		t.Fatalf("open distributed stores: %v", err)
	}
	mgr := doc.NewManager(doc.Options{Log: stores.Log, Durable: stores.Durable, Presence: stores.Presence,
		Router: stores.Router, Metrics: m, Logger: logger, Window: window})
	j, err := auth.NewJWT(testKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Options{Manager: mgr, Auth: j, Metrics: m, Logger: logger, Limits: highLimits(),
		Ready: []server.ReadyCheck{{Name: "redis", Check: stores.Ready}, {Name: "postgres", Check: stores.PostgresReady, Informational: true}}})
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		hs.Close()
		_ = mgr.Close(ctx)
		_ = stores.Close(ctx)
	})
	return hs.URL, mgr.Archive()
}

// wsURL is the document's WebSocket URL on replica i (modulo the count).
func (d *deployment) wsURL(i int, docID string) string {
	return "ws" + strings.TrimPrefix(d.urls[i%len(d.urls)], "http") + "/v1/docs/" + docID + "/ws"
}

func (d *deployment) token(sub string, perm auth.Perm, ttl time.Duration, docs ...string) string {
	d.t.Helper()
	tok, err := auth.Mint(testKey, auth.MintOptions{Subject: sub, Docs: docs, Perm: perm, TTL: ttl})
	if err != nil {
		d.t.Fatal(err)
	}
	return tok
}

// rawAt dials replica i and says hello as clientID with token.
func (d *deployment) rawAt(i int, docID, token, clientID string) *raw {
	d.t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(d.wsURL(i, docID), nil)
	if err != nil {
		d.t.Fatalf("dial replica %d: %v", i, err)
	}
	d.t.Cleanup(func() { ws.Close() })
	r := &raw{t: d.t, ws: ws}
	r.hello(token, clientID)
	return r
}

// collect reads messages until one satisfies stop (returned) or the
// connection closes; every message read is appended to into.
func (r *raw) collect(into *[]map[string]any, within time.Duration, stop func(typ string, m map[string]any) bool) map[string]any {
	r.t.Helper()
	deadline := time.Now().Add(within)
	for {
		typ, m, code := r.next(time.Until(deadline))
		if typ == "" {
			r.t.Fatalf("connection closed with %d; read so far: %v", code, *into)
		}
		*into = append(*into, m)
		if stop(typ, m) {
			return m
		}
	}
}

func num(m map[string]any, key string) int64 {
	v, _ := m[key].(float64)
	return int64(v)
}

func asJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
