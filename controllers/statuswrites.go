package controllers

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// statusCacheWait bounds how long a reconcile defers to the watch event of
// its own status write: should the event never come, the CollabCluster is
// reconciled from the cache as it is.
const statusCacheWait = 10 * time.Second

// statusWrites remembers, per CollabCluster, the resourceVersion a
// reconcile read before it patched the status, until the cache has moved
// past it. A reconcile that starts before the cache holds its previous
// status write would compare against the old status: it would patch the
// same change again and emit its events a second time (a child's event
// brings the CollabCluster back before the watch delivers the status: in
// the controllers' tests, a new CollabCluster's RolloutStarted was sent
// twice, the second time as a series patch). The cache
// only moves forward, so a cached resourceVersion other than the one read
// before the write means the write, or something newer, is there; no
// ordering of resourceVersions is assumed.
type statusWrites struct {
	mu      sync.Mutex
	pending map[types.NamespacedName]statusWrite
}

type statusWrite struct {
	readVersion string
	at          time.Time
}

func newStatusWrites() *statusWrites {
	return &statusWrites{pending: map[types.NamespacedName]statusWrite{}}
}

// wrote records that the status was patched over readVersion, the
// resourceVersion the reconcile read from the cache.
func (w *statusWrites) wrote(key types.NamespacedName, readVersion string, now time.Time) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending[key] = statusWrite{readVersion: readVersion, at: now}
}

// behind says whether the cached CollabCluster, at cachedVersion, is still
// the one a status write was made over; false once the cache moved past it
// or statusCacheWait passed, and the record is dropped then.
func (w *statusWrites) behind(key types.NamespacedName, cachedVersion string, now time.Time) bool {
	if w == nil {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	p, ok := w.pending[key]
	if !ok {
		return false
	}
	if p.readVersion == cachedVersion && now.Sub(p.at) < statusCacheWait {
		return true
	}
	delete(w.pending, key)
	return false
}

// forget drops the record of a deleted CollabCluster.
func (w *statusWrites) forget(key types.NamespacedName) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.pending, key)
}
