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
