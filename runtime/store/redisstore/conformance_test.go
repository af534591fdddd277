package redisstore_test

import (
	"testing"
	"time"

	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/redisstore"
	"github.com/tandem-dev/tandem/runtime/store/storetest"
)

func TestLogConformance(t *testing.T) {
	e := newEnv(t)
	storetest.RunLog(t, func(t *testing.T) store.Log {
		sub := &env{t: t, redis: e.redis, pg: e.pg}
		return sub.replica(redisstore.Options{CatchUp: 200 * time.Millisecond}).store.Log
	})
}

func TestPresenceConformance(t *testing.T) {
	e := newEnv(t)
	const ttl = 500 * time.Millisecond
	storetest.RunPresence(t, func(t *testing.T) store.Presence {
		sub := &env{t: t, redis: e.redis, pg: e.pg}
		return sub.replica(redisstore.Options{PresenceTTL: ttl}).store.Presence
	}, ttl)
}

func TestRouterConformance(t *testing.T) {
	e := newEnv(t)
	const ttl = 500 * time.Millisecond
	storetest.RunRouter(t, func(t *testing.T) (store.Router, store.Router) {
		sub := &env{t: t, redis: e.redis, pg: e.pg}
		a := sub.replica(redisstore.Options{LeaseTTL: ttl, NoFlusher: true}).store.Router
		b := sub.replica(redisstore.Options{LeaseTTL: ttl, NoFlusher: true}).store.Router
		return a, b
	}, ttl)
}
