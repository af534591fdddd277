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
