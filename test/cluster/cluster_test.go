package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/tandem-dev/tandem/internal/testsvc"
	"github.com/tandem-dev/tandem/runtime/client"
	"github.com/tandem-dev/tandem/runtime/ot"
)

// session runs n typing clients on docID while fault runs, keeps them
// typing for a little longer, then settles them and checks convergence and
// the ledger.
func (cl *cluster) session(t *testing.T, docID string, n int, ty typing, dial func(i int) *websocket.Dialer, fault func(ctx context.Context)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cs := make([]*client.Client, n)
	ids := make([]string, n)
	for i := range cs {
		ids[i] = fmt.Sprintf("%s-c%02d", docID, i)
		cs[i] = cl.client(docID, ids[i], dial(i))
		t.Cleanup(cs[i].Close)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ty.run(ctx, c, uint64(i), stop.Load); err != nil {
				errs <- fmt.Errorf("client %d: %w", i, err)
			}
		}()
	}
	fault(ctx)
	time.Sleep(time.Second)
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	text, head := settle(ctx, t, cs)
	t.Logf("%d clients converged at rev %d", n, head)
	cl.checkLedger(ctx, t, docID, cs, ids, text, head)
}

func anyReplica(cl *cluster) func(int) *websocket.Dialer {
	return func(int) *websocket.Dialer { return cl.dialer() }
}

// Three replicas, 30 clients on one document, random edits and reconnects
// to random replicas: everyone converges and PostgreSQL ends up with the
// same text and every acknowledged operation once.
func TestThreeReplicasConverge(t *testing.T) {
	cl := newCluster(t)
	for range 3 {
		cl.startInproc(nodeOptions{})
	}
	cl.session(t, "converge", 30, typing{reconnectEvery: 15, pause: 20 * time.Millisecond}, anyReplica(cl),
		func(context.Context) { time.Sleep(8 * time.Second) })
}

// kill -9 of a replica while its clients type: they reconnect to the
// others and resubmit. Replicas are separate processes here, since only a
// real SIGKILL skips every shutdown path (no final flush, no presence
// removal, no goodbye to clients).
func TestReplicaKilled(t *testing.T) {
	bin := buildRuntime(t)
	cl := newCluster(t)
	var procs []*process
	for range 3 {
		procs = append(procs, cl.startProcess(bin))
	}
	cl.session(t, "killed", 9, typing{pause: 20 * time.Millisecond}, anyReplica(cl), func(context.Context) {
		time.Sleep(3 * time.Second)
		procs[0].kill9()
		t.Logf("killed replica %s", procs[0].addr())
		time.Sleep(4 * time.Second)
	})
}

// Redis restarted (appendonly on) mid-stream: editing pauses while it is
// down (clients are told "unavailable" and retry) and resumes; nothing
// acknowledged is lost. The stop is graceful (SIGTERM), which writes the
// append-only file out; see docs/durability.md for SIGKILL with everysec.
func TestRedisRestartWithAOF(t *testing.T) {
	cl := newCluster(t, testsvc.WithAppendOnly())
	for range 2 {
		cl.startInproc(nodeOptions{})
	}
	cl.session(t, "aof", 6, typing{pause: 20 * time.Millisecond}, anyReplica(cl), func(context.Context) {
		time.Sleep(3 * time.Second)
		cl.redis.Stop()
		time.Sleep(2 * time.Second)
		cl.redis.Start()
		back := time.Now()
		before, _, _ := docRev(cl.nodes[0].addr(), "aof")
		eventuallyCluster(t, 30*time.Second, "commits resume", func() bool {
			now, _, err := docRev(cl.nodes[0].addr(), "aof")
			return err == nil && now > before+5
		})
		t.Logf("redis back: commits resumed within %v", time.Since(back))
		time.Sleep(3 * time.Second)
	})
}

// PostgreSQL stopped for 20 s while clients type: editing goes on, the
// flush lag grows, and it drains after PostgreSQL returns.
func TestPostgresOutage(t *testing.T) {
	cl := newCluster(t)
	rs := []*inproc{cl.startInproc(nodeOptions{}), cl.startInproc(nodeOptions{})}
	// Clients stay on their replica: during the outage a replica that has
	// not loaded the document cannot load it (snapshots live in PostgreSQL).
	pinned := func(i int) *websocket.Dialer { return dialerTo(rs[i%2]) }
	cl.session(t, "pgdown", 6, typing{pause: 30 * time.Millisecond}, pinned, func(ctx context.Context) {
		time.Sleep(2 * time.Second)
		before, _, _ := docRev(rs[0].addr(), "pgdown")
		cl.pg.Stop()
		t.Log("postgres stopped")
		time.Sleep(20 * time.Second)
		during, _, _ := docRev(rs[0].addr(), "pgdown")
		if during <= before+20 {
			t.Errorf("editing stalled while PostgreSQL was down: rev %d -> %d", before, during)
		}
		// Both replicas measure the same shared streams.
		lag := rs[0].metric("tandem_flush_lag_commits")
		if lag < float64(during-before)/2 {
			t.Errorf("flush lag %v after %d commits with PostgreSQL down, want it to grow with them", lag, during-before)
		}
		t.Logf("during the outage: rev %d -> %d, flush lag %v", before, during, lag)
		cl.pg.Start()
		back := time.Now()
		// The backlog is drained once PostgreSQL holds the revision the
		// document had when PostgreSQL came back (clients keep typing).
		target, _, _ := docRev(rs[0].addr(), "pgdown")
		eventuallyCluster(t, 60*time.Second, "backlog flushed", func() bool {
			d, err := cl.readPG(ctx, "pgdown")
			return err == nil && d.rev >= target
		})
		t.Logf("postgres back: backlog of %d revisions (flush lag %v) in PostgreSQL after %v", target-before, lag, time.Since(back))
	})
	eventuallyCluster(t, 30*time.Second, "flush lag drained", func() bool {
		return rs[0].metric("tandem_flush_lag_commits") == 0 && rs[1].metric("tandem_flush_lag_commits") == 0
	})
}

// A replica's pub/sub subscription is dropped (CLIENT KILL TYPE pubsub)
// while clients on other replicas type; the gap is repaired from the
// stream and everyone converges.
func TestPubSubDropped(t *testing.T) {
	cl := newCluster(t)
	rs := []*inproc{cl.startInproc(nodeOptions{}), cl.startInproc(nodeOptions{}), cl.startInproc(nodeOptions{})}
	pinned := func(i int) *websocket.Dialer { return dialerTo(rs[i%3]) }
	admin := redis.NewClient(&redis.Options{Addr: cl.redis.Addr()})
	defer admin.Close()
	cl.session(t, "pubsub", 9, typing{pause: 20 * time.Millisecond}, pinned, func(ctx context.Context) {
		for range 3 {
			time.Sleep(2 * time.Second)
			n, err := admin.ClientKillByFilter(ctx, "TYPE", "pubsub").Result()
			if err != nil || n == 0 {
				t.Errorf("CLIENT KILL TYPE pubsub = %d, %v", n, err)
			}
		}
		time.Sleep(2 * time.Second)
	})
	var repaired float64
	for _, r := range rs {
		repaired += r.metric("tandem_redis_fanout_gaps_repaired_total")
	}
	if repaired < 1 {
		t.Fatalf("gaps repaired = %v after dropping pub/sub three times", repaired)
	}
	t.Logf("gaps repaired: %v", repaired)
}

// A late joiner on a long history whose stream was trimmed: the document
// is loaded from the PostgreSQL snapshot plus the stream's tail.
func TestLateJoinerTrimmedStream(t *testing.T) {
	cl := newCluster(t)
	writer := cl.startInproc(nodeOptions{tail: 20})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := cl.client("history", "writer", dialerTo(writer))
	defer c.Close()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 600 {
		if err := c.Edit(ot.Op{{Insert: string(rune('a' + i%26))}}); err != nil {
			t.Fatal(err)
		}
		// One revision per edit: wait for each ack.
		if err := c.WaitSynced(ctx, -1); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitSynced(ctx, -1); err != nil {
		t.Fatal(err)
	}
	admin := redis.NewClient(&redis.Options{Addr: cl.redis.Addr()})
	defer admin.Close()
	eventuallyCluster(t, 20*time.Second, "stream trimmed", func() bool {
		n, err := admin.XLen(ctx, "tandem:{doc:history}:log").Result()
		return err == nil && n <= 20
	})
	late := cl.startInproc(nodeOptions{tail: 20})
	j := cl.client("history", "late", dialerTo(late))
	defer j.Close()
	if err := j.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Rev() != 600 {
		t.Fatalf("writer at rev %d after 600 acknowledged edits", c.Rev())
	}
	if err := j.WaitSynced(ctx, c.Rev()); err != nil {
		t.Fatal(err)
	}
	if w := j.Welcome(); w.Text == nil {
		t.Fatal("late joiner without a revision got ops instead of the full text")
	}
	if j.Text() != c.Text() || j.Rev() != 600 {
		t.Fatalf("late joiner at rev %d has %d chars; writer at rev %d has %d", j.Rev(), len(j.Text()), c.Rev(), len(c.Text()))
	}
	// And it can edit on top.
	if err := j.Edit(ot.Op{{Insert: "!"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitSynced(ctx, 601); err != nil {
		t.Fatal(err)
	}
	if c.Text() != j.Text() {
		t.Fatal("writer and late joiner diverged after the late joiner's edit")
	}
}

// Presence of a replica that dies disappears within the TTL. The replica
// is in-process; its death is simulated by cutting its Redis connections
// (so it can neither refresh nor remove its entries) and then its clients.
func TestPresenceOfKilledReplica(t *testing.T) {
	cl := newCluster(t)
	const ttl = 2 * time.Second
	doomed := cl.startInproc(nodeOptions{presenceTTL: ttl})
	survivor := cl.startInproc(nodeOptions{presenceTTL: ttl})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	watcher := cl.client("room", "watcher", dialerTo(survivor))
	defer watcher.Close()
	if err := watcher.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	var ghosts []string
	for i := range 3 {
		g := cl.client("room", fmt.Sprintf("ghost-%d", i), dialerTo(doomed))
		defer g.Close()
		if err := g.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		ghosts = append(ghosts, g.Welcome().Conn)
	}
	if err := watcher.WaitFor(ctx, func() bool {
		o := watcher.Others()
		for _, g := range ghosts {
			if _, ok := o[g]; !ok {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatalf("watcher never saw the three users on the other replica: %v", err)
	}
	// The replica "dies": closing its stores closes its Redis client, so
	// from now on it can neither refresh nor remove its entries.
	died := time.Now()
	doomed.stores.Close(ctx)
	doomed.hs.CloseClientConnections()
	wctx, wcancel := context.WithTimeout(ctx, ttl+3*time.Second)
	defer wcancel()
	err := watcher.WaitFor(wctx, func() bool {
		o := watcher.Others()
		for _, g := range ghosts {
			if _, ok := o[g]; ok {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("ghosts still present %v after the replica died (TTL %v): %v", time.Since(died), ttl, watcher.Others())
	}
	t.Logf("ghosts gone %v after the replica died (TTL %v)", time.Since(died), ttl)
}

func eventuallyCluster(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The fault ledger's refused-row fault: PostgreSQL refuses one row of a
// document (a trigger installed by the test; the next poison row will be
// something else) while its clients type, then Redis loses everything.
// The refused document's acknowledged commits stay in Redis however long
// the refusal lasts, counted in the lag gauges and the failing-documents
// gauge; the other documents keep flushing; once PostgreSQL accepts the row
// they are written without any new commit, and the Redis data loss that
// follows costs nothing acknowledged. Before that, the one refusal that
// used to cause this, an insert of U+0000, is refused up front.
func TestRefusedRowThenRedisLoss(t *testing.T) {
	cl := newCluster(t)
	rs := []*inproc{cl.startInproc(nodeOptions{}), cl.startInproc(nodeOptions{})}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// The frames of the report: U+0000 gets bad_op and is never acked.
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+rs[0].addr()+"/v1/docs/nul/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for _, f := range []string{`{"type":"hello","v":1,"client":"raw"}`,
		`{"type":"op","seq":1,"rev":0,"op":["before "]}`, `{"type":"op","seq":2,"rev":1,"op":[7,"A\u0000B"]}`} {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(f)); err != nil {
			t.Fatal(err)
		}
	}
	var answers []string
	for len(answers) < 3 {
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		var m struct{ Type, Code string }
		if err := ws.ReadJSON(&m); err != nil {
			t.Fatalf("after %v: %v", answers, err)
		}
		answers = append(answers, m.Type+m.Code)
	}
	// The refusal is answered on decoding, possibly before the ack.
	sort.Strings(answers[1:])
	if fmt.Sprint(answers) != "[welcome ack errorbad_op]" {
		t.Fatalf("answers to hello, a valid op and one inserting U+0000 = %v", answers)
	}

	pg, err := pgx.Connect(ctx, cl.pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(ctx)
	const refusedRev = 40
	if _, err := pg.Exec(ctx, fmt.Sprintf(`
		CREATE FUNCTION refuse_row() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.doc_id = 'refused' AND NEW.rev = %d THEN
				-- A data exception, like PostgreSQL's refusal of U+0000.
				RAISE EXCEPTION 'row refused by the test' USING ERRCODE = 'data_exception';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse_row BEFORE INSERT ON operations FOR EACH ROW EXECUTE FUNCTION refuse_row();`, refusedRev)); err != nil {
		t.Fatalf("install trigger: %v", err)
	}

	const n = 6
	cs := make([]*client.Client, n)
	ids := make([]string, n)
	for i := range cs {
		ids[i] = fmt.Sprintf("refused-c%02d", i)
		cs[i] = cl.client("refused", ids[i], dialerTo(rs[i%2]))
		t.Cleanup(cs[i].Close)
	}
	other := cl.client("healthy", "healthy-c", dialerTo(rs[1]))
	t.Cleanup(other.Close)
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, n+1)
	for i, c := range append([]*client.Client{other}, cs...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := (typing{pause: 30 * time.Millisecond}).run(ctx, c, uint64(i), stop.Load); err != nil {
				errs <- fmt.Errorf("client %d: %w", i, err)
			}
		}()
	}
	// Longer than the three deliveries after which the flusher used to
	// dead-letter a refused document's pointers (ClaimIdle is 2 s here).
	time.Sleep(12 * time.Second)
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	text, head := settle(ctx, t, cs)
	if head <= refusedRev {
		t.Fatalf("only %d revisions: the refused row was never reached", head)
	}
	healthy := other.Rev()
	eventuallyCluster(t, 30*time.Second, "the other document keeps flushing", func() bool {
		d, err := cl.readPG(ctx, "healthy")
		return err == nil && d.rev >= healthy
	})
	// The document goes quiet while PostgreSQL still refuses it, for longer
	// than three more deliveries of its last pointers.
	time.Sleep(10 * time.Second)
	// A document's flush is one transaction, so it stops below the row.
	if d, err := cl.readPG(ctx, "refused"); err != nil || d.rev >= refusedRev {
		t.Fatalf("refused document in PostgreSQL at rev %d (%v), want below %d", d.rev, err, refusedRev)
	}
	var failing, lag, oldest float64
	for _, r := range rs {
		failing += r.metric("tandem_flush_failing_documents")
		lag = max(lag, r.metric("tandem_flush_lag_commits")) // both measure the shared streams
		oldest = max(oldest, r.metric("tandem_flush_oldest_unpersisted_seconds"))
	}
	t.Logf("refused row at rev %d, head %d: failing documents %v, flush lag %v, oldest unpersisted %.1fs", refusedRev, head, failing, lag, oldest)
	// The lag counts appends (one per batch of queued operations), so it
	// is at most the number of waiting revisions; it must not be zero.
	if failing < 1 || lag < 1 || oldest < 10 {
		t.Errorf("gauges hide the refused document: failing documents %v, flush lag %v, oldest unpersisted %vs",
			failing, lag, oldest)
	}

	// PostgreSQL accepts the row again; nobody types.
	if _, err := pg.Exec(ctx, `DROP TRIGGER refuse_row ON operations`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		d, err := cl.readPG(ctx, "refused")
		if err == nil && d.rev == head {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("refused document still at rev %d in PostgreSQL 30 s after the row was accepted, head %d", d.rev, head)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Redis loses everything. The replicas find out (their documents reload
	// from PostgreSQL), the clients reconnect, and one more edit goes
	// through on top of what they had.
	admin := redis.NewClient(&redis.Options{Addr: cl.redis.Addr()})
	defer admin.Close()
	if err := admin.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := ensureConnected(ctx, cs[0]); err != nil {
		t.Fatal(err)
	}
	if err := cs[0].Edit(ot.Op{{Insert: "after the loss "}}); err != nil && !errors.Is(err, client.ErrResync) && cs[0].Connected() {
		t.Fatal(err)
	}
	text, head = settle(ctx, t, cs)
	if !strings.HasPrefix(text, "after the loss ") {
		t.Fatalf("the edit after the Redis data loss is missing: %q", text)
	}
	cl.checkLedger(ctx, t, "refused", cs, ids, text, head)
	if d, err := cl.readPG(ctx, "nul"); err != nil || d.rev != 1 || d.text != "before " {
		t.Fatalf("document nul in PostgreSQL = rev %d %q (%v), want only the valid op", d.rev, d.text, err)
	}
}

// Redis Cluster: replicas (one of them a separate process, configured by
// its --redis-url flag) edit a document while the master serving the
// document's slot is killed and its replica promoted. Editing pauses for
// the failover and resumes; every acknowledged operation is in PostgreSQL
// exactly once (commits are confirmed by the replica before they are
// acknowledged). A second document on another master shows the cluster
// spreading documents over shards.
func TestRedisClusterMasterKilled(t *testing.T) {
	bin := buildRuntime(t)
	cl := newOnRedisCluster(t)
	cl.startInproc(nodeOptions{})
	cl.startInproc(nodeOptions{})
	cl.startProcess(bin)
	const docID = "failover"
	slotKey := "tandem:{doc:" + docID + "}:meta"
	cl.session(t, docID, 6, typing{pause: 20 * time.Millisecond}, anyReplica(cl), func(context.Context) {
		time.Sleep(3 * time.Second)
		old := cl.rc.MasterOf(slotKey)
		before, _, _ := docRev(cl.nodes[0].addr(), docID)
		killed := cl.rc.KillMasterOf(slotKey)
		t.Logf("killed master %s of %s at rev %d; replica %s promoted", old.Addr(), slotKey, before, cl.rc.MasterOf(slotKey).Addr())
		back := time.Now()
		eventuallyCluster(t, 60*time.Second, "commits resume after the failover", func() bool {
			now, _, err := docRev(cl.nodes[0].addr(), docID)
			return err == nil && now > before+5
		})
		t.Logf("commits resumed %v after the promotion", time.Since(back))
		killed.Start() // rejoins as a replica
		time.Sleep(3 * time.Second)
	})
	// A document on another shard still works after the failover.
	other := ""
	for i := 0; other == ""; i++ {
		d := fmt.Sprintf("other%d", i)
		if cl.rc.MasterOf("tandem:{doc:"+d+"}:meta") != cl.rc.MasterOf(slotKey) {
			other = d
		}
	}
	cl.session(t, other, 4, typing{pause: 20 * time.Millisecond}, anyReplica(cl), func(context.Context) {
		time.Sleep(3 * time.Second)
	})
}
