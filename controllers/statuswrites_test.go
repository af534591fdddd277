package controllers

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

func TestStatusWrites(t *testing.T) {
	key := types.NamespacedName{Namespace: "ns", Name: "docs"}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	w := newStatusWrites()
	if w.behind(key, "5", t0) {
		t.Fatal("a CollabCluster never written is not behind")
	}
	w.wrote(key, "5", t0)
	steps := []struct {
		name       string
		cached     string
		at         time.Duration
		wantBehind bool
	}{
		{"the cache still has the version the write was made over", "5", time.Second, true},
		{"still, until statusCacheWait", "5", statusCacheWait - time.Millisecond, true},
		{"given up after statusCacheWait", "5", statusCacheWait, false},
		{"the record is gone", "5", statusCacheWait + time.Second, false},
	}
	for _, s := range steps {
		if got := w.behind(key, s.cached, t0.Add(s.at)); got != s.wantBehind {
			t.Errorf("%s: behind = %v, want %v", s.name, got, s.wantBehind)
		}
	}

	w.wrote(key, "7", t0)
	if w.behind(key, "8", t0.Add(time.Millisecond)) {
		t.Error("the cache moved past the version read: not behind")
	}
	if w.behind(key, "7", t0.Add(2*time.Millisecond)) {
		t.Error("once seen past it, the record is dropped")
	}
	w.wrote(key, "9", t0)
	w.forget(key)
	if w.behind(key, "9", t0) {
		t.Error("a forgotten CollabCluster is not behind")
	}
	var none *statusWrites
	none.wrote(key, "1", t0)
	if none.behind(key, "1", t0) {
		t.Error("a nil statusWrites holds nothing back")
	}
}
