package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-dev/tandem/internal/testsvc"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/redisstore"
)

// Several replicas commit to one document at once through the Lua CAS:
// every commit lands exactly once, revisions are dense, and the flushed
// PostgreSQL history matches the Redis one.
func TestConcurrentCASAcrossReplicas(t *testing.T) {
	e := newEnv(t)
	const replicas, writers, perWriter = 3, 4, 40
	rs := make([]*replica, replicas)
	for i := range rs {
		rs[i] = e.replica(redisstore.Options{FlushInterval: 100 * time.Millisecond})
	}
	ctx := testCtx(t)
	doc := "cas-doc"
	var wg sync.WaitGroup
	errs := make(chan error, replicas*writers)
	for r := range rs {
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := fmt.Sprintf("r%dw%d", r, w)
				for seq := int64(1); seq <= perWriter; seq++ {
					if _, err := commit(ctx, rs[r].store.Log, doc, client, seq, "x"); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := int64(replicas * writers * perWriter)
	entries, err := rs[0].store.Log.Read(ctx, doc, 0, -1)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if int64(len(entries)) != total {
		t.Fatalf("log holds %d entries, want %d", len(entries), total)
	}
	seen := map[string]bool{}
	for i, en := range entries {
		if en.Rev != int64(i+1) {
			t.Fatalf("entry %d has rev %d", i, en.Rev)
		}
		k := fmt.Sprintf("%s/%d", en.Client, en.Seq)
		if seen[k] {
			t.Fatalf("%s committed twice", k)
		}
		seen[k] = true
	}
	var retries float64
	for _, r := range rs {
		retries += r.metric(t, "tandem_redis_commit_retries_total")
	}
	if retries == 0 {
		t.Fatal("no commit retries counted although 12 writers raced")
	}
	eventually(t, 20*time.Second, "flushed to PostgreSQL", func() (bool, string) {
		snap, err := rs[0].durable.Load(ctx, doc)
		return err == nil && snap.Rev == total, fmt.Sprintf("rev %d, err %v", snap.Rev, err)
	})
	stored, err := rs[0].durable.Ops(ctx, doc, 0, -1)
	if err != nil || int64(len(stored)) != total {
		t.Fatalf("PostgreSQL ops = %d, %v; want %d", len(stored), err, total)
	}
	for i := range stored {
		if stored[i].Client != entries[i].Client || stored[i].Seq != entries[i].Seq {
			t.Fatalf("rev %d differs between Redis and PostgreSQL", i+1)
		}
	}
}

// 1,000 commits waiting in the persistence stream are written in one
// PostgreSQL transaction; a trickle below the batch size is written once per
// interval.
func TestFlusherBatching(t *testing.T) {
	tests := []struct {
		name        string
		ops         int
		docs        int
		batch       int
		interval    time.Duration
		maxTx       int64
		minDuration time.Duration
	}{
		{"1000 ops on one doc, one transaction", 1000, 1, 1000, time.Hour, 1, 0},
		{"1000 ops over 10 docs, one transaction", 1000, 10, 1000, time.Hour, 1, 0},
		{"2500 ops, batch of 1000: two full batches, the rest after the interval", 2500, 5, 1000, 2 * time.Second, 3, 2 * time.Second},
		{"50 ops below the batch size wait for the interval", 50, 2, 1000, 700 * time.Millisecond, 1, 600 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			writer := e.replica(redisstore.Options{NoFlusher: true})
			ctx := testCtx(t)
			for i := range tc.ops {
				doc := fmt.Sprintf("doc-%d", i%tc.docs)
				if _, err := commit(ctx, writer.store.Log, doc, "c", int64(i), "y"); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			flusher := e.replica(redisstore.Options{FlushBatch: tc.batch, FlushInterval: tc.interval})
			eventually(t, 30*time.Second, "all ops flushed", func() (bool, string) {
				n := flusher.durable.ops.Load()
				return n == int64(tc.ops), fmt.Sprintf("%d of %d", n, tc.ops)
			})
			if took := time.Since(start); took < tc.minDuration {
				t.Fatalf("flushed after %v, want the interval %v to pass first", took, tc.minDuration)
			}
			if n := flusher.durable.writes.Load(); n > tc.maxTx {
				t.Fatalf("%d ops took %d PostgreSQL transactions, want at most %d", tc.ops, n, tc.maxTx)
			}
			for d := range tc.docs {
				doc := fmt.Sprintf("doc-%d", d)
				snap, err := flusher.durable.Load(ctx, doc)
				want := tc.ops / tc.docs
				if d < tc.ops%tc.docs {
					want++
				}
				if err != nil || snap.Rev != int64(want) || snap.Text != strings.Repeat("y", want) {
					t.Fatalf("%s snapshot = rev %d len %d, %v; want rev %d", doc, snap.Rev, len(snap.Text), err, want)
				}
			}
			// The histogram is observed after the acknowledgements.
			eventually(t, 5*time.Second, "flush batch size observed", func() (bool, string) {
				got := flusher.metric(t, "tandem_flush_batch_operations")
				return got >= 1, fmt.Sprintf("%v samples", got)
			})
		})
	}
}

// A replica that read persistence entries and died before acknowledging
// them leaves them pending; another replica claims them after ClaimIdle and
// writes them.
func TestClaimsDeadConsumersEntries(t *testing.T) {
	e := newEnv(t)
	writer := e.replica(redisstore.Options{NoFlusher: true, Shards: 1})
	ctx := testCtx(t)
	for i := range 20 {
		if _, err := commit(ctx, writer.store.Log, "orphan", "c", int64(i), "z"); err != nil {
			t.Fatal(err)
		}
	}
	// The "dead" consumer takes every entry and never acknowledges. Append
	// returns before its pointer is written, so wait for all 20.
	raw := writer.rdb
	eventually(t, 5*time.Second, "20 pointers written", func() (bool, string) {
		n, err := raw.XLen(ctx, "tandem:{persist:0}").Result()
		return err == nil && n == 20, fmt.Sprintf("%d, %v", n, err)
	})
	if err := raw.XGroupCreateMkStream(ctx, "tandem:{persist:0}", "flushers", "0").Err(); err != nil {
		t.Fatalf("create group: %v", err)
	}
	got, err := raw.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: "flushers", Consumer: "dead-replica", Streams: []string{"tandem:{persist:0}", ">"}, Count: 100, Block: -1,
	}).Result()
	if err != nil || len(got[0].Messages) != 20 {
		t.Fatalf("dead consumer read = %v, %v", got, err)
	}
	survivor := e.replica(redisstore.Options{Shards: 1, ClaimIdle: 500 * time.Millisecond, FlushInterval: 50 * time.Millisecond})
	eventually(t, 20*time.Second, "orphaned entries flushed", func() (bool, string) {
		snap, err := survivor.durable.Load(ctx, "orphan")
		return err == nil && snap.Rev == 20, fmt.Sprintf("rev %d, err %v", snap.Rev, err)
	})
	eventually(t, 10*time.Second, "nothing pending", func() (bool, string) {
		p, err := raw.XPending(ctx, "tandem:{persist:0}", "flushers").Result()
		return err == nil && p.Count == 0, fmt.Sprintf("%+v %v", p, err)
	})
}

// An entry that can never be written (its operation does not apply) holds
// back only its own document: a healthy document in the same batches is
// written, and the poison one is retried on its own, counted and never
// dropped. Its pointer stays pending however often it is delivered (there
// used to be a dead-letter stream after three), its entries stay in the
// stream, and the lag gauges keep showing it.
func TestRefusedDocumentIsRetriedNeverDropped(t *testing.T) {
	e := newEnv(t)
	writer := e.replica(redisstore.Options{NoFlusher: true, Shards: 1})
	ctx := testCtx(t)
	// The log does not check operations against the text (the runtime does),
	// so a malformed one can reach the flusher only through a bug; this is
	// that bug.
	if err := writer.store.Log.Append(ctx, "poison", 0, []store.Entry{{
		Rev: 1, Op: ot.Op{{Retain: 50}, {Insert: "x"}}, Client: "c", Seq: 1, User: "u",
	}}); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if _, err := commit(ctx, writer.store.Log, "healthy", "c", 1, "ok"); err != nil {
		t.Fatal(err)
	}
	flusher := e.replica(redisstore.Options{Shards: 1, ClaimIdle: 300 * time.Millisecond, FlushInterval: 50 * time.Millisecond})
	eventually(t, 30*time.Second, "healthy document flushed", func() (bool, string) {
		snap, err := flusher.durable.Load(ctx, "healthy")
		return err == nil && snap.Text == "ok", fmt.Sprintf("%+v, %v", snap, err)
	})
	eventually(t, 30*time.Second, "poison document retried more than the old dead-letter limit", func() (bool, string) {
		n := flusher.metric(t, "tandem_flush_document_failures_total")
		return n >= 6, fmt.Sprintf("failures %v", n)
	})
	if n := flusher.metric(t, "tandem_flush_failing_documents"); n != 1 {
		t.Errorf("failing documents = %v, want 1", n)
	}
	p, err := writer.rdb.XPending(ctx, "tandem:{persist:0}", "flushers").Result()
	if err != nil || p.Count != 1 {
		t.Fatalf("pending pointers = %+v, %v; want the poison one still pending", p, err)
	}
	if n, err := writer.rdb.XLen(ctx, "tandem:{doc:poison}:log").Result(); err != nil || n != 1 {
		t.Fatalf("poison stream length = %d, %v; want its entry kept", n, err)
	}
	eventually(t, 10*time.Second, "lag gauges show the waiting commit", func() (bool, string) {
		lag := flusher.metric(t, "tandem_flush_lag_commits")
		age := flusher.metric(t, "tandem_flush_oldest_unpersisted_seconds")
		return lag == 1 && age >= 1, fmt.Sprintf("lag %v, oldest %vs", lag, age)
	})
	if snap, err := flusher.durable.Load(ctx, "poison"); err != nil || snap.Rev != 0 {
		t.Fatalf("poison doc = %+v, %v; want nothing written", snap, err)
	}
}

// A row PostgreSQL refuses (here a trigger, raising an error the store does
// not classify as permanent) while it answers: the other documents keep
// flushing, the refused one is counted and kept in Redis however long it
// fails, and once PostgreSQL accepts the row again it is written without
// any new commit. A Redis data loss after that costs nothing.
func TestRowRefusedByPostgresIsKeptUntilWritten(t *testing.T) {
	e := newEnv(t)
	writer := e.replica(redisstore.Options{NoFlusher: true, Shards: 1})
	ctx := testCtx(t)
	pool := writer.durable.Pool()
	if _, err := pool.Exec(ctx, `
		CREATE FUNCTION refuse_row() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.doc_id = 'refused' AND NEW.rev = 3 THEN
				RAISE EXCEPTION 'row refused by the test';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse_row BEFORE INSERT ON operations FOR EACH ROW EXECUTE FUNCTION refuse_row();`); err != nil {
		t.Fatalf("install trigger: %v", err)
	}
	const n = 5
	for i := range n {
		for _, doc := range []string{"refused", "healthy"} {
			if _, err := commit(ctx, writer.store.Log, doc, "c", int64(i+1), "x"); err != nil {
				t.Fatal(err)
			}
		}
	}
	const claimIdle = 500 * time.Millisecond
	flusher := e.replica(redisstore.Options{Shards: 1, ClaimIdle: claimIdle, FlushInterval: 50 * time.Millisecond})
	eventually(t, 30*time.Second, "healthy document flushed despite the refused row", func() (bool, string) {
		snap, err := flusher.durable.Load(ctx, "healthy")
		return err == nil && snap.Rev == n, fmt.Sprintf("%+v, %v", snap, err)
	})
	eventually(t, 10*time.Second, "refused document counted", func() (bool, string) {
		f := flusher.metric(t, "tandem_flush_failing_documents")
		return f == 1, fmt.Sprintf("failing documents %v", f)
	})
	// Far longer than three deliveries: nothing is given up. The retries
	// are document failures, not flush errors: PostgreSQL answers, so
	// TandemPostgresUnreachable (a rate of tandem_flush_errors_total) must
	// stay quiet while TandemDocumentFlushFailing fires.
	flushErrors := flusher.metric(t, "tandem_flush_errors_total")
	docFailures := flusher.metric(t, "tandem_flush_document_failures_total")
	time.Sleep(8 * claimIdle)
	if n := flusher.metric(t, "tandem_flush_document_failures_total"); n < docFailures+2 {
		t.Errorf("document failures went from %v to %v while the row was refused; want it retried", docFailures, n)
	}
	if n := flusher.metric(t, "tandem_flush_errors_total"); n != flushErrors || n != 0 {
		t.Errorf("flush errors went from %v to %v while PostgreSQL answered and refused one document; want 0 throughout", flushErrors, n)
	}
	if lag := flusher.metric(t, "tandem_flush_lag_commits"); lag != n {
		t.Errorf("flush lag = %v with %d commits of the refused document waiting", lag, n)
	}
	if age := flusher.metric(t, "tandem_flush_oldest_unpersisted_seconds"); age < 2 {
		t.Errorf("oldest unpersisted = %vs, want the refused commits' age", age)
	}
	if l, err := writer.rdb.XLen(ctx, "tandem:{doc:refused}:log").Result(); err != nil || l != n {
		t.Fatalf("refused document's stream length = %d, %v; want all %d entries kept", l, err, n)
	}
	if snap, err := flusher.durable.Load(ctx, "refused"); err != nil || snap.Rev != 0 {
		t.Fatalf("refused doc in PostgreSQL = %+v, %v; want nothing (its flush is one transaction)", snap, err)
	}

	if _, err := pool.Exec(ctx, `DROP TRIGGER refuse_row ON operations`); err != nil {
		t.Fatalf("drop trigger: %v", err)
	}
	eventually(t, 30*time.Second, "refused document written once accepted, with no new commit", func() (bool, string) {
		snap, err := flusher.durable.Load(ctx, "refused")
		return err == nil && snap.Rev == n, fmt.Sprintf("%+v, %v", snap, err)
	})
	eventually(t, 10*time.Second, "gauges back to zero", func() (bool, string) {
		f := flusher.metric(t, "tandem_flush_failing_documents")
		lag := flusher.metric(t, "tandem_flush_lag_commits")
		age := flusher.metric(t, "tandem_flush_oldest_unpersisted_seconds")
		return f == 0 && lag == 0 && age == 0, fmt.Sprintf("failing %v, lag %v, oldest %v", f, lag, age)
	})
	// Redis loses everything: the documents come back from PostgreSQL whole.
	if err := writer.rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	fresh := e.replica(redisstore.Options{NoFlusher: true, Shards: 1})
	for _, doc := range []string{"refused", "healthy"} {
		if head, err := fresh.store.Log.Head(ctx, doc); err != nil || head != n {
			t.Fatalf("%s after Redis data loss: head %d, %v; want %d", doc, head, err, n)
		}
		ops, err := fresh.durable.Ops(ctx, doc, 0, -1)
		if err != nil || len(ops) != n {
			t.Fatalf("%s: %d operations in PostgreSQL, %v; want %d", doc, len(ops), err, n)
		}
	}
}

// After flushing, a document's stream keeps only Tail entries below what
// PostgreSQL holds; reading older revisions reports ErrTrimmed, and a late
// joiner rebuilds the text from the PostgreSQL snapshot plus the stream.
func TestTrimAndLateJoiner(t *testing.T) {
	e := newEnv(t)
	r := e.replica(redisstore.Options{Tail: 50, FlushInterval: 50 * time.Millisecond})
	ctx := testCtx(t)
	const n = 600
	var want string
	for i := range n {
		s := string(rune('a' + i%26))
		if _, err := commit(ctx, r.store.Log, "long", "c", int64(i), s); err != nil {
			t.Fatal(err)
		}
		want = s + want
	}
	eventually(t, 20*time.Second, "flushed and trimmed", func() (bool, string) {
		l, err := r.rdb.XLen(ctx, "tandem:{doc:long}:log").Result()
		return err == nil && l <= 50, fmt.Sprintf("stream length %d, %v", l, err)
	})
	if _, err := r.store.Log.Read(ctx, "long", 0, -1); !errors.Is(err, store.ErrTrimmed) {
		t.Fatalf("Read from 0 on a trimmed stream: err = %v, want ErrTrimmed", err)
	}
	if got, err := r.store.Log.Read(ctx, "long", n-10, -1); err != nil || len(got) != 10 {
		t.Fatalf("Read of the tail = %d entries, %v; want 10", len(got), err)
	}
	// A few more commits that PostgreSQL may not have yet.
	for i := range 5 {
		if _, err := commit(ctx, r.store.Log, "long", "late", int64(i), "!"); err != nil {
			t.Fatal(err)
		}
		want = "!" + want
	}
	// The late joiner: a fresh replica loads the snapshot and the newer
	// stream entries.
	late := e.replica(redisstore.Options{NoFlusher: true})
	snap, err := late.durable.Load(ctx, "long")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	rest, err := late.store.Log.Read(ctx, "long", snap.Rev, -1)
	if err != nil {
		t.Fatalf("Read after snapshot rev %d: %v", snap.Rev, err)
	}
	text := snap.Text
	for _, en := range rest {
		if text, err = ot.Apply(text, en.Op); err != nil {
			t.Fatalf("apply rev %d: %v", en.Rev, err)
		}
	}
	if text != want {
		t.Fatalf("late joiner text (%d chars) differs from the committed text (%d chars)", len(text), len(want))
	}
}

// Dropping the replica's pub/sub connection loses notifications; the
// subscription repairs the gap from the stream and delivers every revision.
func TestSubscriptionRepairsDroppedPubSub(t *testing.T) {
	e := newEnv(t)
	reader := e.replica(redisstore.Options{CatchUp: 300 * time.Millisecond})
	writer := e.replica(redisstore.Options{})
	ctx := testCtx(t)
	sub, err := reader.store.Log.Subscribe(ctx, "gappy", 0)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	const n = 200
	done := make(chan error, 1)
	go func() {
		for i := range n {
			if i == 50 || i == 120 {
				if err := writer.rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
					done <- fmt.Errorf("client kill: %w", err)
					return
				}
			}
			if _, err := commit(ctx, writer.store.Log, "gappy", "w", int64(i), "g"); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for want := int64(1); want <= n; want++ {
		select {
		case en, ok := <-sub.C():
			if !ok {
				t.Fatalf("subscription closed at rev %d: %v", want, sub.Err())
			}
			if en.Rev != want {
				t.Fatalf("got rev %d, want %d", en.Rev, want)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("rev %d never delivered", want)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if g := reader.metric(t, "tandem_redis_fanout_gaps_repaired_total"); g < 1 {
		t.Fatalf("gaps repaired = %v, want at least 1 after killing pub/sub twice", g)
	}
}

// With Redis down, calls fail fast with ErrUnavailable once the breaker
// opens, Ready fails, and both recover when Redis is back.
func TestBreaker(t *testing.T) {
	e := newEnv(t, testsvc.WithAppendOnly())
	// OpenFor is long enough that the failing calls below (each retries its
	// dial before giving up) cannot outlast it and leave the breaker half-open
	// before the state is checked, and short enough for the recovery wait.
	r := e.replica(redisstore.Options{Breaker: redisstore.BreakerOptions{Failures: 3, OpenFor: 3 * time.Second}})
	ctx := testCtx(t)
	if _, err := commit(ctx, r.store.Log, "b", "c", 1, "a"); err != nil {
		t.Fatal(err)
	}
	if err := r.store.Ready(ctx); err != nil {
		t.Fatalf("Ready with Redis up: %v", err)
	}
	// A graceful stop writes the append-only file out; a SIGKILL right
	// after the commit could lose it (everysec fsync), which is the
	// rollback case, not what this test is about.
	e.redis.Stop()
	for range 5 {
		_, err := r.store.Log.Head(ctx, "b")
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Head with Redis down: err = %v, want ErrUnavailable", err)
		}
	}
	if st := r.metric(t, "tandem_redis_breaker_state"); st != 2 {
		t.Fatalf("breaker state = %v, want 2 (open)", st)
	}
	start := time.Now()
	_, err := r.store.Log.Head(ctx, "b")
	if !errors.Is(err, store.ErrUnavailable) || time.Since(start) > 50*time.Millisecond {
		t.Fatalf("Head with breaker open: %v after %v; want ErrUnavailable immediately", err, time.Since(start))
	}
	if err := r.store.Ready(ctx); err == nil {
		t.Fatal("Ready with Redis down succeeded")
	}
	e.redis.Start()
	eventually(t, 10*time.Second, "ready again", func() (bool, string) {
		err := r.store.Ready(ctx)
		return err == nil, fmt.Sprint(err)
	})
	if head, err := r.store.Log.Head(ctx, "b"); err != nil || head != 1 {
		t.Fatalf("Head after recovery = %d, %v; want 1 (AOF kept it)", head, err)
	}
}

// Redis losing a document (no AOF, FLUSHALL, a failover to an empty
// replica) is detected by the epoch: the document is reseeded from
// PostgreSQL, a replica holding the old state gets ErrReset instead of
// extending a history that no longer exists, and its subscription ends.
func TestEpochDetectsLostLog(t *testing.T) {
	e := newEnv(t)
	a := e.replica(redisstore.Options{FlushInterval: 50 * time.Millisecond})
	b := e.replica(redisstore.Options{NoFlusher: true})
	ctx := testCtx(t)
	for i := range 10 {
		if _, err := commit(ctx, a.store.Log, "lost", "c", int64(i), "q"); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "flushed", func() (bool, string) {
		snap, _ := a.durable.Load(ctx, "lost")
		return snap.Rev == 10, fmt.Sprint(snap.Rev)
	})
	sub, err := a.store.Log.Subscribe(ctx, "lost", 10)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	if err := a.rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatalf("FLUSHALL: %v", err)
	}
	// b has never seen the document: it reseeds from PostgreSQL.
	if head, err := b.store.Log.Head(ctx, "lost"); err != nil || head != 10 {
		t.Fatalf("Head on a fresh replica after data loss = %d, %v; want 10 from PostgreSQL", head, err)
	}
	// a remembers the old epoch: its next append is refused as a reset.
	err = a.store.Log.Append(ctx, "lost", 10, []store.Entry{{Rev: 11, Op: ot.Op{{Insert: "x"}}, Client: "c", Seq: 99}})
	if !errors.Is(err, redisstore.ErrReset) || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Append under the old epoch: err = %v, want ErrReset (and ErrUnavailable)", err)
	}
	select {
	case _, ok := <-sub.C():
		if ok {
			t.Fatal("subscription delivered an entry after the reset")
		}
		if !errors.Is(sub.Err(), redisstore.ErrReset) {
			t.Fatalf("subscription Err = %v, want ErrReset", sub.Err())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("subscription did not end after the reset")
	}
	// After the reset, a works under the new epoch.
	if rev, err := commit(ctx, a.store.Log, "lost", "c", 100, "n"); err != nil || rev != 11 {
		t.Fatalf("commit after reset = rev %d, %v; want 11", rev, err)
	}
}

// A replica's presence entries vanish within the TTL after it dies (no
// Remove, no more heartbeats), and the departure is announced to the
// others.
func TestPresenceOfDeadReplicaExpires(t *testing.T) {
	e := newEnv(t)
	const ttl = 1500 * time.Millisecond
	dying := e.replica(redisstore.Options{PresenceTTL: ttl})
	alive := e.replica(redisstore.Options{PresenceTTL: ttl})
	ctx := testCtx(t)
	events, err := alive.store.Presence.Subscribe(ctx, "room")
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	for i := range 3 {
		if err := dying.store.Presence.Update(ctx, store.PresenceEntry{
			Doc: "room", Conn: fmt.Sprintf("ghost-%d", i), User: store.User{ID: fmt.Sprintf("u%d", i)},
		}); err != nil {
			t.Fatalf("Update: %v", err)
		}
	}
	if err := alive.store.Presence.Update(ctx, store.PresenceEntry{Doc: "room", Conn: "live", User: store.User{ID: "me"}}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	died := time.Now()
	dying.store.Close(ctx) // stops without removing anything, like a crash
	left := map[string]bool{}
	heartbeat := time.NewTicker(ttl / 3)
	defer heartbeat.Stop()
	timeout := time.After(ttl + 3*time.Second)
	for len(left) < 3 {
		select {
		case ev := <-events:
			if ev.Left {
				if ev.Entry.Conn == "live" {
					t.Fatal("the live, refreshed entry was announced as gone")
				}
				if ev.Entry.User.ID == "" {
					t.Fatalf("departure of %s carries no user", ev.Entry.Conn)
				}
				left[ev.Entry.Conn] = true
			}
		case <-heartbeat.C:
			if err := alive.store.Presence.Update(ctx, store.PresenceEntry{Doc: "room", Conn: "live", User: store.User{ID: "me"}}); err != nil {
				t.Fatalf("heartbeat: %v", err)
			}
		case <-timeout:
			t.Fatalf("only %v departed within the TTL", left)
		}
	}
	if took := time.Since(died); took > ttl+ttl/2 {
		t.Fatalf("ghosts lasted %v, want within TTL %v (+ sweep period)", took, ttl)
	}
	list, err := alive.store.Presence.List(ctx, "room")
	if err != nil || len(list) != 1 || list[0].Conn != "live" {
		t.Fatalf("List = %+v, %v; want only the live entry", list, err)
	}
}

var _ = context.Background

// Redis coming back with an older state under the same epoch (a crash
// inside the append-only fsync window) ends subscriptions that are ahead
// of it with ErrReset, and subscribing beyond the head is refused the same
// way.
func TestRollbackEndsSubscription(t *testing.T) {
	e := newEnv(t)
	r := e.replica(redisstore.Options{NoFlusher: true, CatchUp: 100 * time.Millisecond})
	ctx := testCtx(t)
	for i := range 5 {
		if _, err := commit(ctx, r.store.Log, "rb", "c", int64(i), "r"); err != nil {
			t.Fatal(err)
		}
	}
	sub, err := r.store.Log.Subscribe(ctx, "rb", 5)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	// Simulate the older state: head back to 3, entries 4 and 5 gone.
	if err := r.rdb.HSet(ctx, "tandem:{doc:rb}:meta", "head", 3).Err(); err != nil {
		t.Fatal(err)
	}
	if err := r.rdb.XDel(ctx, "tandem:{doc:rb}:log", "4-1", "5-1").Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case _, ok := <-sub.C():
		if ok {
			t.Fatal("entry delivered after the rollback")
		}
		if !errors.Is(sub.Err(), store.ErrReset) {
			t.Fatalf("subscription Err = %v, want ErrReset", sub.Err())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("subscription survived the rollback")
	}
	if _, err := r.store.Log.Subscribe(ctx, "rb", 5); !errors.Is(err, store.ErrReset) {
		t.Fatalf("Subscribe beyond the head: err = %v, want ErrReset", err)
	}
}

// A persistence pointer Redis refuses after the commit stood is retried
// until it is written, and the commit then reaches PostgreSQL.
func TestRefusedPointerIsRetried(t *testing.T) {
	e := newEnv(t)
	writer := e.replica(redisstore.Options{NoFlusher: true, Shards: 1})
	ctx := testCtx(t)
	raw := writer.rdb
	// A string where the shard stream should be: every XADD to it fails
	// with WRONGTYPE, while the document's own keys accept the commit.
	if err := raw.Set(ctx, "tandem:{persist:0}", "in the way", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := commit(ctx, writer.store.Log, "late", "c", 1, "q"); err != nil {
		t.Fatalf("commit with the pointer refused: %v", err)
	}
	// Past the first attempt, nothing was written and the commit stands.
	time.Sleep(300 * time.Millisecond)
	if v, err := raw.Get(ctx, "tandem:{persist:0}").Result(); err != nil || v != "in the way" {
		t.Fatalf("shard key = %q, %v", v, err)
	}
	if err := raw.Del(ctx, "tandem:{persist:0}").Err(); err != nil {
		t.Fatal(err)
	}
	flusher := e.replica(redisstore.Options{Shards: 1, FlushInterval: 50 * time.Millisecond})
	eventually(t, 10*time.Second, "retried pointer flushed", func() (bool, string) {
		snap, err := flusher.durable.Load(ctx, "late")
		return err == nil && snap.Rev == 1 && snap.Text == "q", fmt.Sprintf("rev %d %q, err %v", snap.Rev, snap.Text, err)
	})
}
