package redisstore

import (
	"errors"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/runtime/store"
)

func TestObserveAndPruneEpochs(t *testing.T) {
	l := &Log{epochs: map[string]knownEpoch{}}
	steps := []struct {
		name      string
		doc, ep   string
		wantReset bool
	}{
		{"first sight is learned", "a", "e1", false},
		{"same epoch is fine", "a", "e1", false},
		{"changed epoch is a reset", "a", "e2", true},
		{"after the report the new epoch is learned", "a", "e2", false},
		{"other documents are independent", "b", "e9", false},
	}
	for _, s := range steps {
		err := l.observe(s.doc, s.ep)
		if got := errors.Is(err, store.ErrReset) && errors.Is(err, store.ErrUnavailable); got != s.wantReset {
			t.Fatalf("%s: observe(%s, %s) = %v, want reset %v", s.name, s.doc, s.ep, err, s.wantReset)
		}
	}
	l.pruneEpochs(time.Now().Add(epochTTL / 2))
	if len(l.epochs) != 2 {
		t.Fatalf("recently used epochs pruned: %v", l.epochs)
	}
	l.pruneEpochs(time.Now().Add(2 * epochTTL))
	if len(l.epochs) != 0 {
		t.Fatalf("stale epochs kept: %v", l.epochs)
	}
}
