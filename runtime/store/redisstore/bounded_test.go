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

	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/redisstore"
)

// docKeys lists the Redis keys of doc.
func docKeys(t *testing.T, r *replica, doc string) []string {
	t.Helper()
	ctx := context.Background()
	pattern := "tandem:{doc:" + doc + "}:*"
	if cc, ok := r.rdb.(*redis.ClusterClient); ok {
		// KEYS goes to one node; the document's slot lives on one master.
		var mu sync.Mutex
		var all []string
		err := cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			keys, err := n.Keys(ctx, pattern).Result()
			mu.Lock()
			all = append(all, keys...)
			mu.Unlock()
			return err
		})
		if err != nil {
			t.Fatalf("KEYS on the masters: %v", err)
		}
		return all
	}
	keys, err := r.rdb.Keys(ctx, pattern).Result()
	if err != nil {
		t.Fatalf("KEYS: %v", err)
	}
	return keys
}

// A fully persisted document nobody uses loses its keys after the idle
// TTL; its next edit reloads it from PostgreSQL with nothing lost. An
// append clears the TTL (unpersisted entries never expire).
func TestIdlePersistedDocumentExpires(t *testing.T) {
	e := newEnv(t)
	r := e.replica(redisstore.Options{FlushInterval: 50 * time.Millisecond, IdleTTL: time.Second})
	ctx := testCtx(t)
	doc := "idle-doc"
	for i := range 5 {
		if _, err := commit(ctx, r.store.Log, doc, "c1", int64(i+1), fmt.Sprintf("%d", i)); err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
	// Right after an append nothing may expire.
	if ttl, err := r.rdb.PTTL(ctx, "tandem:{doc:"+doc+"}:log").Result(); err != nil || ttl > 0 {
		t.Fatalf("log TTL right after an append = %v, %v; want none", ttl, err)
	}
	eventually(t, 30*time.Second, "keys of the idle persisted document expire", func() (bool, string) {
		keys := docKeys(t, r, doc)
		return len(keys) == 0, strings.Join(keys, ",")
	})
	snap, err := r.durable.Load(ctx, doc)
	if err != nil || snap.Rev != 5 || snap.Text != "43210" {
		t.Fatalf("PostgreSQL holds %+v, %v; want rev 5 %q", snap, err, "43210")
	}
	// The next edit continues at revision 6 with the text intact.
	rev, err := commit(ctx, r.store.Log, doc, "c1", 6, "5")
	if err != nil || rev != 6 {
		t.Fatalf("commit after expiry = %d, %v; want revision 6", rev, err)
	}
	eventually(t, 30*time.Second, "the edit after expiry is persisted", func() (bool, string) {
		snap, err := r.durable.Load(ctx, doc)
		return err == nil && snap.Rev == 6 && snap.Text == "543210", fmt.Sprintf("%+v %v", snap, err)
	})
}

// A subscriber (an open document) keeps the keys alive: its catch-up reads
// refresh the TTL.
func TestWatchedDocumentDoesNotExpire(t *testing.T) {
	e := newEnv(t)
	r := e.replica(redisstore.Options{FlushInterval: 50 * time.Millisecond, IdleTTL: 1500 * time.Millisecond, CatchUp: 200 * time.Millisecond})
	ctx := testCtx(t)
	doc := "watched"
	if _, err := commit(ctx, r.store.Log, doc, "c1", 1, "x"); err != nil {
		t.Fatalf("commit: %v", err)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sub, err := r.store.Log.Subscribe(sctx, doc, 1)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	time.Sleep(4 * time.Second)
	if keys := docKeys(t, r, doc); len(keys) < 2 {
		t.Fatalf("keys of a watched document expired: %v", keys)
	}
	cancel()
	for range sub.C() {
	}
	eventually(t, 30*time.Second, "keys expire once nobody watches", func() (bool, string) {
		keys := docKeys(t, r, doc)
		return len(keys) == 0, strings.Join(keys, ",")
	})
}

// The stream tail is bounded in bytes as well as entries, once persisted.
func TestTailBoundedInBytes(t *testing.T) {
	e := newEnv(t)
	r := e.replica(redisstore.Options{FlushInterval: 50 * time.Millisecond, Tail: 1000, TailBytes: 64 << 10})
	ctx := testCtx(t)
	doc := "big-ops"
	big := strings.Repeat("x", 8<<10)
	for i := range 40 {
		if _, err := commit(ctx, r.store.Log, doc, "c1", int64(i+1), big); err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
	eventually(t, 30*time.Second, "the tail is trimmed to its byte bound", func() (bool, string) {
		n, err := r.rdb.XLen(ctx, "tandem:{doc:"+doc+"}:log").Result()
		// 64 KiB holds at most 7 entries of 8 KiB plus their fields.
		return err == nil && n <= 8 && n > 0, fmt.Sprintf("%d entries, %v", n, err)
	})
	// Reading older revisions falls back to PostgreSQL.
	if _, err := r.store.Log.Read(ctx, doc, 0, 10); !errors.Is(err, store.ErrTrimmed) {
		t.Fatalf("Read of trimmed revisions: %v, want ErrTrimmed", err)
	}
	// The trim only drops persisted entries, so the first revisions must be
	// in PostgreSQL already; the newest few may still be on their way.
	ops, err := r.durable.Ops(ctx, doc, 0, 10)
	if err != nil || len(ops) != 10 || ops[0].Rev != 1 {
		t.Fatalf("PostgreSQL has %d of the trimmed ops, %v; want revisions 1-10", len(ops), err)
	}
	eventually(t, 30*time.Second, "every op reaches PostgreSQL", func() (bool, string) {
		ops, err := r.durable.Ops(ctx, doc, 0, -1)
		return err == nil && len(ops) == 40, fmt.Sprintf("%d ops, %v", len(ops), err)
	})
}

// Deleting a document removes its keys, ends subscriptions with
// ErrDeleted and its rows in PostgreSQL; the id then starts over.
func TestDeleteRemovesEveryKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  func(*testing.T) *env
	}{{"redis", func(t *testing.T) *env { return newEnv(t) }}, {"cluster", newClusterEnv}} {
		t.Run(tc.name, func(t *testing.T) { deleteRemovesEveryKey(t, tc.env(t)) })
	}
}

func deleteRemovesEveryKey(t *testing.T, e *env) {
	a := e.replica(redisstore.Options{FlushInterval: 50 * time.Millisecond})
	b := e.replica(redisstore.Options{FlushInterval: 50 * time.Millisecond})
	ctx := testCtx(t)
	doc := "to-delete"
	for i := range 3 {
		if _, err := commit(ctx, a.store.Log, doc, "c1", int64(i+1), "a"); err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
	if err := a.store.Presence.Update(ctx, store.PresenceEntry{Doc: doc, Conn: "k1", User: store.User{ID: "u"}}); err != nil {
		t.Fatalf("presence: %v", err)
	}
	sub, err := b.store.Log.Subscribe(ctx, doc, 3)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	eventually(t, 30*time.Second, "persisted", func() (bool, string) {
		snap, err := a.durable.Load(ctx, doc)
		return err == nil && snap.Rev == 3, fmt.Sprint(snap.Rev, err)
	})
	if err := a.store.Log.Delete(ctx, doc); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	select {
	case _, ok := <-sub.C():
		if ok {
			t.Fatal("subscription delivered an entry after the delete")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("subscription on the other replica did not end")
	}
	if !errors.Is(sub.Err(), store.ErrDeleted) {
		t.Fatalf("subscription ended with %v, want ErrDeleted", sub.Err())
	}
	if keys := docKeys(t, a, doc); len(keys) != 0 {
		t.Fatalf("keys left after delete: %v", keys)
	}
	if snap, err := a.durable.Load(ctx, doc); err != nil || snap.Rev != 0 {
		t.Fatalf("PostgreSQL after delete: %+v, %v", snap, err)
	}
	if ops, err := a.durable.Ops(ctx, doc, 0, -1); err != nil || len(ops) != 0 {
		t.Fatalf("PostgreSQL ops after delete: %d, %v", len(ops), err)
	}
	// Both replicas start the id over at revision 1.
	if rev, err := commit(ctx, b.store.Log, doc, "c2", 1, "new"); err != nil || rev != 1 {
		t.Fatalf("commit on the other replica after delete = %d, %v; want 1", rev, err)
	}
	if err := b.store.Log.Append(ctx, doc, 1, []store.Entry{{Doc: doc, Rev: 2, Op: ot.Op{{Insert: "!"}}, Client: "c2", Seq: 2, User: "u-c2"}}); err != nil {
		t.Fatalf("append: %v", err)
	}
}

// A delete that lands between the flusher reading a document's entries
// from Redis and writing them to PostgreSQL must win: the flush is
// discarded, nothing of the document comes back, and the id starts over.
func TestDeleteDuringFlushLeavesNothing(t *testing.T) {
	e := newEnv(t)
	a := e.replica(redisstore.Options{FlushInterval: 20 * time.Millisecond})
	ctx := testCtx(t)
	doc := "deleted-mid-flush"
	deleted := make(chan error, 1)
	var once sync.Once
	race := func(entries []store.Entry) {
		for _, en := range entries {
			if en.Doc == doc {
				once.Do(func() { deleted <- a.store.Log.Delete(ctx, doc) })
				return
			}
		}
	}
	a.durable.beforeWrite.Store(&race)
	for i := range 3 {
		if _, err := commit(ctx, a.store.Log, doc, "c1", int64(i+1), "a"); err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
	select {
	case err := <-deleted:
		if err != nil {
			t.Fatalf("Delete during the flush: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the flusher never wrote the document")
	}
	a.durable.beforeWrite.Store(nil)
	// The flush that raced goes on after the delete: wait for it.
	eventually(t, 30*time.Second, "the raced write done", func() (bool, string) {
		return a.durable.writes.Load() >= 1, fmt.Sprint(a.durable.writes.Load(), " writes")
	})
	if snap, err := a.durable.Load(ctx, doc); err != nil || snap.Rev != 0 || snap.Text != "" {
		t.Fatalf("PostgreSQL after delete during flush: rev %d %q, %v; want nothing", snap.Rev, snap.Text, err)
	}
	if ops, err := a.durable.Ops(ctx, doc, 0, -1); err != nil || len(ops) != 0 {
		t.Fatalf("PostgreSQL ops after delete during flush: %d, %v; want none", len(ops), err)
	}
	if docs, err := a.durable.List(ctx, doc, "", 10); err != nil || len(docs) != 0 {
		t.Fatalf("listed after delete during flush: %v, %v", docs, err)
	}
	// The id starts over, and its new history is flushed.
	if rev, err := commit(ctx, a.store.Log, doc, "c2", 1, "new"); err != nil || rev != 1 {
		t.Fatalf("commit after delete = %d, %v; want 1", rev, err)
	}
	eventually(t, 30*time.Second, "new history persisted", func() (bool, string) {
		snap, err := a.durable.Load(ctx, doc)
		return err == nil && snap.Rev == 1 && snap.Text == "new", fmt.Sprint(snap, err)
	})
}

// Peek tells a document's head without creating anything in Redis.
func TestPeekCreatesNothing(t *testing.T) {
	e := newEnv(t)
	r := e.replica(redisstore.Options{})
	ctx := testCtx(t)
	head, known, err := r.store.Log.Peek(ctx, "nobody-opened-this")
	if err != nil || known || head != 0 {
		t.Fatalf("Peek of a missing document = %d, %v, %v", head, known, err)
	}
	if keys := docKeys(t, r, "nobody-opened-this"); len(keys) != 0 {
		t.Fatalf("Peek created keys: %v", keys)
	}
	if _, err := commit(ctx, r.store.Log, "opened", "c", 1, "x"); err != nil {
		t.Fatal(err)
	}
	if head, known, err := r.store.Log.Peek(ctx, "opened"); err != nil || !known || head != 1 {
		t.Fatalf("Peek of an opened document = %d, %v, %v; want 1, known", head, known, err)
	}
}
