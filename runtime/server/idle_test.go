package server_test

import (
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tandem-dev/tandem/runtime/protocol"
)

// TestIdleConnectionsParkWithoutGoroutines: an idle connection holds no
// goroutine on the server (it waits on the poller), yet it answers pings
// across many ping intervals, stays open, and is served at once when its
// client speaks again.
func TestIdleConnectionsParkWithoutGoroutines(t *testing.T) {
	const n = 40
	s := newStack(t, stackOptions{ping: 100 * time.Millisecond})
	before := runtime.NumGoroutine()
	type peer struct {
		r    *raw
		msgs chan map[string]any
	}
	peers := make([]peer, n)
	for i := range peers {
		r := s.raw(fmt.Sprintf("idle-%d", i%4), nil)
		r.hello("", fmt.Sprintf("idle-client-%d", i))
		r.expect("welcome")
		// One goroutine per client, on the client's side: it reads, which
		// answers the server's pings (the library's default ping handler).
		msgs := make(chan map[string]any, 16)
		go func() {
			defer close(msgs)
			for {
				typ, m, _ := nextQuiet(r.ws)
				if typ == "" {
					return
				}
				msgs <- m
			}
		}()
		peers[i] = peer{r, msgs}
	}
	// Idle for several times the pong wait (250 ms).
	time.Sleep(1500 * time.Millisecond)
	grown := runtime.NumGoroutine() - before
	t.Logf("%d idle connections: %d more goroutines in the process (%d of them the clients' readers)", n, grown, n)
	if grown > n+n/2 {
		t.Errorf("%d idle connections grew the goroutines by %d: the server keeps one per connection", n, grown)
	}
	for i, p := range peers {
		// Still open and served: an op is acknowledged.
		p.r.sendText(fmt.Sprintf(`{"type":"op","seq":1,"rev":0,"op":["x%d"]}`, i))
		deadline := time.After(10 * time.Second)
	wait:
		for {
			select {
			case m, ok := <-p.msgs:
				if !ok {
					t.Fatalf("connection %d was closed while idle", i)
				}
				if m["type"] == "ack" {
					break wait
				}
				if m["type"] == "error" && m["code"] != protocol.CodeBadRevision {
					t.Fatalf("connection %d: %v", i, m)
				}
				if m["type"] == "error" {
					break wait // another client of the document got in first
				}
			case <-deadline:
				t.Fatalf("connection %d: no answer to its op", i)
			}
		}
	}
}

// nextQuiet reads the next message without failing the test: type "" once
// the connection is closed.
func nextQuiet(ws *websocket.Conn) (string, map[string]any, error) {
	_, data, err := ws.ReadMessage()
	if err != nil {
		return "", nil, err
	}
	var m map[string]any
	if err := jsonUnmarshal(data, &m); err != nil {
		return "", nil, err
	}
	typ, _ := m["type"].(string)
	return typ, m, nil
}

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
