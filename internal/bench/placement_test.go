package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"
)

// countingReplica is a reverse proxy in front of the one test server that
// counts the WebSocket upgrades passing through it, so a test can see which
// "replica" each client dialled while the document stays shared.
type countingReplica struct {
	url      string
	upgrades atomic.Int64
}

func newCountingReplica(t *testing.T, backend string) *countingReplica {
	t.Helper()
	target, err := url.Parse(backend)
	if err != nil {
		t.Fatal(err)
	}
	c := &countingReplica{}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			c.upgrades.Add(1)
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	c.url = srv.URL
	return c
}

// TestPlacementPutsClientsWhereItSays checks the placements the stickiness
// comparison rests on: spread uses both replicas, colocated only the first
// (the second sees nothing but the end-of-run verification connection).
func TestPlacementPutsClientsWhereItSays(t *testing.T) {
	srv := startTestServer(t, nil)
	tests := []struct {
		name         string
		run          func(env *Env) Result
		wantID       string
		wantA, wantB int64
	}{
		{"S1 spread", func(env *Env) Result {
			return S1(context.Background(), env, S1Options{Duration: 300 * time.Millisecond, Readers: 4, Placement: PlaceSpread})
		}, "S1-spread", 1 + 2, 2 + 1},
		{"S1 colocated", func(env *Env) Result {
			return S1(context.Background(), env, S1Options{Duration: 300 * time.Millisecond, Readers: 4, Placement: PlaceColocated})
		}, "S1-colocated", 1 + 4, 1},
		{"S1 classic", func(env *Env) Result {
			return S1(context.Background(), env, S1Options{Duration: 300 * time.Millisecond, Readers: 4})
		}, "S1", 1, 4 + 1},
		{"S2 spread", func(env *Env) Result {
			r, _ := S2(context.Background(), env, S2Options{Duration: 300 * time.Millisecond, Writers: 4, Placement: PlaceSpread})
			return r
		}, "S2", 2, 2 + 1},
		{"S2 colocated", func(env *Env) Result {
			r, _ := S2(context.Background(), env, S2Options{Duration: 300 * time.Millisecond, Writers: 4, Placement: PlaceColocated})
			return r
		}, "S2-colocated", 4, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newCountingReplica(t, srv.URL), newCountingReplica(t, srv.URL)
			env := &Env{Replicas: []string{a.url, b.url}, Settle: 10 * time.Second, Seed: 3}
			r := tc.run(env)
			if r.Error != "" {
				t.Fatalf("%s failed: %s", r.ID, r.Error)
			}
			if r.ID != tc.wantID {
				t.Errorf("ID = %q, want %q", r.ID, tc.wantID)
			}
			if got := a.upgrades.Load(); got != tc.wantA {
				t.Errorf("replica A saw %d WebSockets, want %d", got, tc.wantA)
			}
			if got := b.upgrades.Load(); got != tc.wantB {
				t.Errorf("replica B saw %d WebSockets, want %d", got, tc.wantB)
			}
		})
	}
}
