package redisstore_test

import (
	"testing"
	"time"

	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/redisstore"
	"github.com/tandem-dev/tandem/runtime/store/storetest"
)

func TestLogConformance(t *testing.T) {
	for _, e := range []struct {
		name string
		env  func(*testing.T) *env
	}{{"redis", func(t *testing.T) *env { return newEnv(t) }}, {"cluster", newClusterEnv}} {
		t.Run(e.name, func(t *testing.T) { logConformance(t, e.env(t)) })
	}
}

func TestPresenceConformance(t *testing.T) {
	for _, e := range []struct {
		name string
		env  func(*testing.T) *env
	}{{"redis", func(t *testing.T) *env { return newEnv(t) }}, {"cluster", newClusterEnv}} {
		t.Run(e.name, func(t *testing.T) { presenceConformance(t, e.env(t)) })
	}
}

func TestRouterConformance(t *testing.T) {
	for _, e := range []struct {
		name string
		env  func(*testing.T) *env
	}{{"redis", func(t *testing.T) *env { return newEnv(t) }}, {"cluster", newClusterEnv}} {
		t.Run(e.name, func(t *testing.T) { routerConformance(t, e.env(t)) })
	}
}

func logConformance(t *testing.T, e *env) {
	storetest.RunLog(t, func(t *testing.T) store.Log {
		sub := &env{t: t, redis: e.redis, cluster: e.cluster, pg: e.pg}
		return sub.replica(redisstore.Options{CatchUp: 200 * time.Millisecond}).store.Log
	})
}

func presenceConformance(t *testing.T, e *env) {
	ttl := conformanceTTL(e)
	storetest.RunPresence(t, func(t *testing.T) store.Presence {
		sub := &env{t: t, redis: e.redis, cluster: e.cluster, pg: e.pg}
		return sub.replica(redisstore.Options{PresenceTTL: ttl}).store.Presence
	}, ttl)
}

func routerConformance(t *testing.T, e *env) {
	ttl := conformanceTTL(e)
	storetest.RunRouter(t, func(t *testing.T) (store.Router, store.Router) {
		sub := &env{t: t, redis: e.redis, cluster: e.cluster, pg: e.pg}
		a := sub.replica(redisstore.Options{LeaseTTL: ttl, NoFlusher: true}).store.Router
		b := sub.replica(redisstore.Options{LeaseTTL: ttl, NoFlusher: true}).store.Router
		return a, b
	}, ttl)
}

// conformanceTTL is the presence and lease TTL of the timing tests: longer
// on a cluster, whose six servers compete with the test for a loaded
// machine's CPU, so that a late renewal is not mistaken for a lapse.
func conformanceTTL(e *env) time.Duration {
	if e.cluster != nil {
		return 2 * time.Second
	}
	return 500 * time.Millisecond
}

// TestClusterFailoverKeepsSubscriptions moves a document's slot to another
// node (CLUSTER FAILOVER: the old master turns replica, and Redis drops
// its sharded subscriptions of the slot) and checks that presence events,
// which nothing polls for, still arrive: the hub resubscribes on the new
// master.
func TestClusterFailoverKeepsSubscriptions(t *testing.T) {
	e := newClusterEnv(t)
	ctx := testCtx(t)
	a := e.replica(redisstore.Options{NoFlusher: true, PresenceTTL: 10 * time.Second})
	b := e.replica(redisstore.Options{NoFlusher: true, PresenceTTL: 10 * time.Second})
	const doc = "moving"
	events, err := a.store.Presence.Subscribe(ctx, doc)
	if err != nil {
		t.Fatal(err)
	}
	announce := func(conn string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := b.store.Presence.Update(ctx, store.PresenceEntry{Doc: doc, Conn: conn, User: store.User{ID: conn, Name: conn, Color: "#123456"}})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("presence update %s: %v", conn, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		timeout := time.After(30 * time.Second)
		for {
			select {
			case ev := <-events:
				if ev.Entry.Conn == conn {
					return
				}
			case <-timeout:
				t.Fatalf("presence event of %s not delivered", conn)
			}
		}
	}
	announce("before")
	old := e.cluster.MasterOf("tandem:{doc:" + doc + "}:presence")
	now := e.cluster.FailoverMasterOf("tandem:{doc:" + doc + "}:presence")
	t.Logf("slot of %s moved from %s to %s", doc, old.Addr(), now.Addr())
	announce("after")
}
