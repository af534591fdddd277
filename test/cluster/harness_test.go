// Package cluster_test runs several tandem-runtime replicas against one
// Redis and one PostgreSQL and checks convergence and, with a ledger of
// acknowledgements, that no acknowledged operation is lost under faults.
package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/tandem-dev/tandem/internal/testsvc"
	"github.com/tandem-dev/tandem/runtime/auth"
	"github.com/tandem-dev/tandem/runtime/client"
	"github.com/tandem-dev/tandem/runtime/doc"
	"github.com/tandem-dev/tandem/runtime/metrics"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/server"
	"github.com/tandem-dev/tandem/runtime/store/distributed"
	"github.com/tandem-dev/tandem/test/testtools"
)

// cluster is one Redis (or one Redis Cluster), one PostgreSQL and the
// replicas serving them.
type cluster struct {
	t     *testing.T
	redis *testsvc.Redis
	rc    *testsvc.RedisCluster
	pg    *testsvc.Postgres

	mu    sync.Mutex
	nodes []node
}

// node is a replica as the clients see it: an address that may die.
type node interface {
	addr() string
	alive() bool
}

func newCluster(t *testing.T, redisOpts ...testsvc.RedisOption) *cluster {
	return &cluster{t: t, redis: testsvc.StartRedis(t, redisOpts...), pg: testsvc.StartPostgres(t)}
}

// newOnRedisCluster is newCluster on a Redis Cluster of three masters with
// one replica each.
func newOnRedisCluster(t *testing.T) *cluster {
	return &cluster{t: t, rc: testsvc.StartRedisCluster(t), pg: testsvc.StartPostgres(t)}
}

func (cl *cluster) redisURL() string {
	if cl.rc != nil {
		return cl.rc.URL()
	}
	return cl.redis.URL()
}

func (cl *cluster) add(n node) {
	cl.mu.Lock()
	cl.nodes = append(cl.nodes, n)
	cl.mu.Unlock()
}

// dialer connects each new WebSocket to a random live replica, the way a
// load balancer would: a client's reconnect usually lands elsewhere.
func (cl *cluster) dialer() *websocket.Dialer {
	return &websocket.Dialer{
		HandshakeTimeout: 5 * time.Second,
		NetDialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			cl.mu.Lock()
			var live []string
			for _, n := range cl.nodes {
				if n.alive() {
					live = append(live, n.addr())
				}
			}
			cl.mu.Unlock()
			rand.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
			var d net.Dialer
			var errs []error
			for _, a := range live {
				c, err := d.DialContext(ctx, network, a)
				if err == nil {
					return c, nil
				}
				errs = append(errs, err)
			}
			return nil, fmt.Errorf("no live replica: %w", errors.Join(errs...))
		},
	}
}

// dialerTo pins connections to one replica.
func dialerTo(n node) *websocket.Dialer {
	return &websocket.Dialer{
		HandshakeTimeout: 5 * time.Second,
		NetDialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, n.addr())
		},
	}
}

func (cl *cluster) client(docID, id string, d *websocket.Dialer) *client.Client {
	// The host in the URL is irrelevant: the dialer picks the replica.
	return client.New(client.Options{URL: "ws://tandem.test/v1/docs/" + docID + "/ws", ClientID: id, Dialer: d})
}

// inproc is a replica inside the test process with its own Redis and
// PostgreSQL connections.
type inproc struct {
	stores *distributed.Stores
	mgr    *doc.Manager
	srv    *server.Server
	hs     *httptest.Server
	m      *metrics.Metrics
	dead   bool
	mu     sync.Mutex
}

func (r *inproc) addr() string { return r.hs.Listener.Addr().String() }
func (r *inproc) alive() bool  { r.mu.Lock(); defer r.mu.Unlock(); return !r.dead }

type nodeOptions struct {
	tail        int64
	presenceTTL time.Duration
}

func (cl *cluster) startInproc(o nodeOptions) *inproc {
	t := cl.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("TANDEM_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	m := metrics.New()
	ttl := o.presenceTTL
	if ttl == 0 {
		ttl = 5 * time.Second
	}
	stores, err := distributed.Open(ctx, distributed.Config{
		RedisURL: cl.redisURL(), PostgresURL: cl.pg.URL(),
		FlushInterval: 100 * time.Millisecond, ClaimIdle: 2 * time.Second,
		Tail: o.tail, PresenceTTL: ttl, CatchUp: 500 * time.Millisecond, Logger: logger,
	}, m.Registry)
	if err != nil {
		t.Fatalf("open distributed stores: %v", err)
	}
	mgr := doc.NewManager(doc.Options{Log: stores.Log, Durable: stores.Durable, Presence: stores.Presence,
		Metrics: m, Logger: logger, PresenceRefresh: ttl / 3})
	srv := server.New(server.Options{
		Manager: mgr, Auth: auth.Anonymous{}, Metrics: m, Logger: logger,
		Limits: server.Limits{OpsPerSecond: 1000, MaxConnsPerDoc: 1000},
		Ready:  []server.ReadyCheck{{Name: "redis", Check: stores.Ready}},
	})
	r := &inproc{stores: stores, mgr: mgr, srv: srv, hs: httptest.NewServer(srv.Handler()), m: m}
	t.Cleanup(func() { r.stop() })
	cl.add(r)
	return r
}

// stop shuts the replica down gracefully (final flush included).
func (r *inproc) stop() {
	r.mu.Lock()
	if r.dead {
		r.mu.Unlock()
		return
	}
	r.dead = true
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_ = r.srv.Shutdown(ctx)
	r.hs.Close()
	_ = r.mgr.Close(ctx)
	_ = r.stores.Close(ctx)
}

// metric reads a counter or gauge from the replica's registry.
func (r *inproc) metric(name string) float64 {
	mfs, err := r.m.Registry.Gather()
	if err != nil {
		return -1
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			m := mf.GetMetric()[0]
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			if m.Gauge != nil {
				return m.Gauge.GetValue()
			}
		}
	}
	return -1
}

// process is a replica running as a separate tandem-runtime process, so
// that it can be killed with SIGKILL.
type process struct {
	cmd    *exec.Cmd
	listen string
	mu     sync.Mutex
	dead   bool
	exited chan struct{}
}

func (p *process) addr() string { return p.listen }
func (p *process) alive() bool  { p.mu.Lock(); defer p.mu.Unlock(); return !p.dead }

func (p *process) kill9() {
	p.mu.Lock()
	p.dead = true
	p.mu.Unlock()
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// buildRuntime compiles tandem-runtime once for the test.
func buildRuntime(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tandem-runtime")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/tandem-dev/tandem/cmd/tandem-runtime")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build tandem-runtime: %v\n%s", err, out)
	}
	return bin
}

func (cl *cluster) startProcess(bin string) *process {
	t := cl.t
	t.Helper()
	p := &process{listen: testtools.FreeAddr(t), exited: make(chan struct{})}
	p.cmd = exec.Command(bin,
		// Clients address every replica as tandem.test (the dialer picks
		// the replica); an anonymous runtime serves only host names it is
		// told.
		"--addr", p.listen, "--auth", "anonymous", "--allowed-hosts", "tandem.test",
		"--redis-url", cl.redisURL(), "--postgres-url", cl.pg.URL(),
		"--flush-interval", "100ms", "--ops-per-second", "1000")
	logFile, err := os.Create(filepath.Join(t.TempDir(), "replica.log"))
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start replica: %v", err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		if p.alive() {
			_ = p.cmd.Process.Signal(os.Interrupt)
			select {
			case <-p.exited:
			case <-time.After(15 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.exited
			}
		}
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("replica %s log:\n%s", p.listen, tail(string(b), 40))
		}
		logFile.Close()
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + p.listen + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logFile.Name())
			t.Fatalf("replica %s not ready: %v\n%s", p.listen, err, tail(string(b), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
	cl.add(p)
	return p
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// randomEdit inserts or deletes a little at a random place.
func randomEdit(rng *rand.Rand, text string) ot.Op {
	n := utf8.RuneCountInString(text)
	pieces := []string{"a", "bc", "xyz", " ", "é", "😀", "\n", "日本"}
	if n == 0 || rng.IntN(3) > 0 {
		pos := rng.IntN(n + 1)
		op := ot.Op{}
		if pos > 0 {
			op = append(op, ot.Component{Retain: pos})
		}
		return append(op, ot.Component{Insert: pieces[rng.IntN(len(pieces))]})
	}
	pos := rng.IntN(n)
	op := ot.Op{}
	if pos > 0 {
		op = append(op, ot.Component{Retain: pos})
	}
	return append(op, ot.Component{Delete: 1 + rng.IntN(min(3, n-pos))})
}

// typing drives one client: random edits with short pauses, reconnecting
// (to a random replica) whenever the connection drops or an operation
// stays unacknowledged too long, and sometimes just for the sake of it.
type typing struct {
	reconnectEvery int // 1 in N edits ends with a deliberate reconnect (0: never)
	pause          time.Duration
}

func (ty typing) run(ctx context.Context, c *client.Client, seed uint64, stop func() bool) error {
	rng := rand.New(rand.NewPCG(seed, 7))
	for !stop() && ctx.Err() == nil {
		if err := ensureConnected(ctx, c); err != nil {
			return err
		}
		if err := c.EditFunc(func(text string) ot.Op { return randomEdit(rng, text) }); err != nil {
			if errors.Is(err, client.ErrResync) {
				continue
			}
			// Disconnected between the check and the edit: the edit is
			// buffered and resubmitted after the reconnect.
			if c.Connected() {
				return fmt.Errorf("edit: %w", err)
			}
		}
		time.Sleep(time.Duration(rng.Int64N(int64(ty.pause) + 1)))
		wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := c.WaitFor(wctx, func() bool { return c.Synced() || !c.Connected() })
		cancel()
		if err != nil && ctx.Err() == nil {
			c.Disconnect() // stuck: reconnect and resubmit
		}
		if ty.reconnectEvery > 0 && rng.IntN(ty.reconnectEvery) == 0 {
			c.Disconnect()
		}
	}
	return nil
}

func ensureConnected(ctx context.Context, c *client.Client) error {
	backoff := 50 * time.Millisecond
	for !c.Connected() {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := c.Connect(cctx)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("connect: %w (last error %v)", ctx.Err(), err)
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, time.Second)
	}
	return nil
}

// settle reconnects every client until all are synced on the same head,
// and returns that text and revision.
func settle(ctx context.Context, t *testing.T, cs []*client.Client) (string, int64) {
	t.Helper()
	for {
		for i, c := range cs {
			for {
				if err := ensureConnected(ctx, c); err != nil {
					t.Fatalf("client %d: %v", i, err)
				}
				wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := c.WaitSynced(wctx, -1)
				cancel()
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("client %d never synced: %v", i, err)
				}
				c.Disconnect()
			}
		}
		var head int64
		for _, c := range cs {
			head = max(head, c.Rev())
		}
		ok := true
		for i, c := range cs {
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := c.WaitSynced(wctx, head)
			cancel()
			if err != nil {
				t.Logf("client %d not at rev %d yet: %v", i, head, err)
				c.Disconnect()
				ok = false
			}
		}
		if !ok {
			continue
		}
		text := cs[0].Text()
		for i, c := range cs {
			if c.Rev() != head {
				ok = false
				break
			}
			if c.Text() != text {
				t.Fatalf("client %d diverged at rev %d:\n%q\nclient 0:\n%q", i, head, c.Text(), text)
			}
		}
		if ok {
			return text, head
		}
	}
}

// pgDoc is what PostgreSQL holds for a document.
type pgDoc struct {
	text string
	rev  int64
	ops  map[string][]int64 // "client/seq" -> revisions
}

func (cl *cluster) readPG(ctx context.Context, docID string) (pgDoc, error) {
	conn, err := pgx.Connect(ctx, cl.pg.URL())
	if err != nil {
		return pgDoc{}, err
	}
	defer conn.Close(ctx)
	d := pgDoc{ops: map[string][]int64{}}
	err = conn.QueryRow(ctx, `SELECT text, rev FROM documents WHERE id = $1`, docID).Scan(&d.text, &d.rev)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return d, err
	}
	rows, err := conn.Query(ctx, `SELECT client_id, seq, rev FROM operations WHERE doc_id = $1`, docID)
	if err != nil {
		return d, err
	}
	defer rows.Close()
	for rows.Next() {
		var cid string
		var seq, rev int64
		if err := rows.Scan(&cid, &seq, &rev); err != nil {
			return d, err
		}
		k := fmt.Sprintf("%s/%d", cid, seq)
		d.ops[k] = append(d.ops[k], rev)
	}
	return d, rows.Err()
}

// checkLedger waits until PostgreSQL holds the document at head, then
// checks that its snapshot is text and that every acknowledgement any
// client received is in the operations table exactly once, at the
// acknowledged revision.
func (cl *cluster) checkLedger(ctx context.Context, t *testing.T, docID string, cs []*client.Client, ids []string, text string, head int64) {
	t.Helper()
	var d pgDoc
	deadline := time.Now().Add(60 * time.Second)
	for {
		var err error
		d, err = cl.readPG(ctx, docID)
		if err == nil && d.rev >= head {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("PostgreSQL still at rev %d (err %v), want %d", d.rev, err, head)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if d.rev != head || d.text != text {
		t.Fatalf("PostgreSQL snapshot at rev %d (%d chars) differs from the clients' text at rev %d (%d chars)",
			d.rev, len(d.text), head, len(text))
	}
	if int64(len(d.ops)) != head {
		t.Fatalf("PostgreSQL has %d distinct (client, seq) for %d revisions: something was committed twice", len(d.ops), head)
	}
	acked := 0
	for i, c := range cs {
		for _, a := range c.Acks() {
			acked++
			revs := d.ops[fmt.Sprintf("%s/%d", ids[i], a.Seq)]
			if len(revs) != 1 || revs[0] != a.Rev {
				t.Fatalf("client %s op %d acknowledged as rev %d; PostgreSQL has it at %v", ids[i], a.Seq, a.Rev, revs)
			}
		}
	}
	t.Logf("ledger: %d acknowledgements, %d revisions, all in PostgreSQL exactly once", acked, head)
	if acked == 0 {
		t.Fatal("no acknowledgements at all: the test did not exercise anything")
	}
}

// docRev asks a replica's HTTP API for the document.
func docRev(addr, docID string) (int64, string, error) {
	resp, err := http.Get("http://" + addr + "/v1/docs/" + docID)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var v struct {
		Rev  int64  `json:"rev"`
		Text string `json:"text"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return 0, "", err
	}
	return v.Rev, v.Text, nil
}
