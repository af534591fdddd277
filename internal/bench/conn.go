// Package bench drives a running tandem-runtime (or a set of replicas)
// through its public WebSocket protocol to measure latency, throughput,
// memory and persistence costs, and checks after every scenario that all
// clients converged and every submitted operation was acknowledged.
//
// Every connection is a runtime/client Client: the same Jupiter-model
// client the tests use, with its per-operation callbacks (first send, ack,
// remote operation) feeding the latency figures and its counters (operations
// submitted and acknowledged, retries) feeding the end-of-scenario checks.
package bench

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tandem-dev/tandem/runtime/client"
)

// WSURL is the WebSocket URL of doc on a runtime at base.
func WSURL(base, doc string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("parse runtime URL %q: %w", base, err)
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "ws"
	case "https", "wss":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("runtime URL %q: scheme must be http or https", base)
	}
	u.Path = "/v1/docs/" + url.PathEscape(doc) + "/ws"
	return u.String(), nil
}

// connSpec is one connection a scenario opens: to document Doc on the
// runtime at Base, with the client options (URL and Dialer are filled in).
type connSpec struct {
	Base, Doc string
	client.Options
}

// newDialer is shared by the connections of one scenario; small buffers
// keep thousands of idle connections cheap for the load tool too.
func newDialer() *websocket.Dialer {
	return &websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}
}

// dial connects one client and waits for its welcome.
func dial(ctx context.Context, spec connSpec, d *websocket.Dialer) (*client.Client, error) {
	u, err := WSURL(spec.Base, spec.Doc)
	if err != nil {
		return nil, err
	}
	o := spec.Options
	o.URL, o.Dialer = u, d
	// The scenarios see every ack through OnAck; keeping them all would
	// grow with the run.
	o.DiscardAcks = true
	c := client.New(o)
	if err := c.Connect(ctx); err != nil {
		return nil, fmt.Errorf("join %q as %s: %w", spec.Doc, o.ClientID, err)
	}
	return c, nil
}

// dialAll opens connections with bounded parallelism; on error every
// opened client is closed.
func dialAll(ctx context.Context, env *Env, specs []connSpec) ([]*client.Client, error) {
	clients := make([]*client.Client, len(specs))
	d := newDialer()
	sem := make(chan struct{}, env.dialParallel())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := range specs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			s := specs[i]
			if s.Reconnects == 0 {
				s.Reconnects = env.Reconnects
			}
			c, err := dial(dctx, s, d)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("connection %d of %d: %w", i+1, len(specs), err)
				}
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	if firstErr != nil {
		closeAll(clients)
		return nil, firstErr
	}
	return clients, nil
}

func closeAll(clients []*client.Client) {
	var wg sync.WaitGroup
	for _, c := range clients {
		if c != nil {
			wg.Add(1)
			go func() { defer wg.Done(); c.Close() }()
		}
	}
	wg.Wait()
}
