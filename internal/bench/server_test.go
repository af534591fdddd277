package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tandem-dev/tandem/runtime/doc"
	"github.com/tandem-dev/tandem/runtime/metrics"
	"github.com/tandem-dev/tandem/runtime/protocol"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/memory"
)

// testServer speaks the document WebSocket protocol on loopback on top of
// the real document sequencer (runtime/doc over the in-memory log). Its
// fault hook sees every outgoing message and may rewrite or drop it, which
// is how the tests make a server that loses an ack or corrupts an
// operation for one connection.
type testServer struct {
	URL     string
	manager *doc.Manager
	metrics *metrics.Metrics
	// fault returns the message to send (possibly changed) and false to
	// drop it. nil: send everything as is.
	fault func(conn string, member doc.Member, msg any) (any, bool)
	// closeAfter, when > 0, makes every connection close abruptly after
	// reading that many operations (to exercise reconnects).
	closeAfter int64
	// refuseEvery, when > 0, answers every n-th operation read on a
	// connection with a retryable "unavailable" instead of submitting it.
	refuseEvery int64
	conns       atomic.Int64
}

func startTestServer(t *testing.T, configure func(*testServer)) *testServer {
	t.Helper()
	m := metrics.New()
	log := memory.NewLog(memory.LogOptions{})
	s := &testServer{metrics: m}
	s.manager = doc.NewManager(doc.Options{Log: log, Metrics: m, Logger: slog.New(slog.DiscardHandler)})
	if configure != nil {
		configure(s)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /v1/docs/{id}/ws", s.serveWS)
	srv := httptest.NewServer(mux)
	s.URL = srv.URL
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.manager.Close(ctx)
		_ = log.Close(ctx)
	})
	return s
}

func (s *testServer) serveWS(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	_, data, err := ws.ReadMessage()
	if err != nil {
		return
	}
	msg, p := protocol.Decode(data)
	hello, ok := msg.(*protocol.Hello)
	if p != nil || !ok {
		_ = ws.WriteJSON(protocol.Error{Type: protocol.TypeError, Code: protocol.CodeBadMessage, Message: "hello first"})
		return
	}
	connID := fmt.Sprintf("conn-%d", s.conns.Add(1))
	out := make(chan any, 1024)
	member := doc.Member{Conn: connID, Client: hello.Client, User: store.User{ID: "u-" + hello.Client}, Perm: "write"}
	member.Send = func(f *protocol.Frame) bool {
		m := f.Msg
		if f.SharedText() != nil {
			// A welcome whose text is shared between members: Msg lacks
			// the text, so the whole encoding goes out as it is.
			b, err := f.Encoded()
			if err != nil {
				return false
			}
			m = json.RawMessage(b)
		}
		select {
		case out <- m: // the fault hook sees and may change the message
			return true
		default:
			return false
		}
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case m := <-out:
				if s.fault != nil {
					var keep bool
					if m, keep = s.fault(connID, member, m); !keep {
						continue
					}
				}
				if err := ws.WriteJSON(m); err != nil {
					cancel()
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	defer wg.Wait()
	defer cancel()
	sess, err := s.manager.Join(ctx, r.PathValue("id"), member, hello.Rev)
	if err != nil {
		return
	}
	defer sess.Leave(context.Background())
	var ops, refused int64
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		msg, p := protocol.Decode(data)
		if p != nil {
			out <- p.Wire()
			continue
		}
		if op, ok := msg.(*protocol.ClientOp); ok {
			if s.refuseEvery > 0 {
				if refused++; refused%s.refuseEvery == 0 {
					seq := op.Seq
					out <- protocol.Error{Type: protocol.TypeError, Code: protocol.CodeUnavailable, Message: "injected contention", Seq: &seq}
					continue
				}
			}
			if err := sess.Submit(ctx, op.Seq, op.Rev, op.Op); err != nil {
				return
			}
			ops++
			if s.closeAfter > 0 && ops%s.closeAfter == 0 {
				// Give the actor a moment so that some closes happen after
				// the commit and some before, then drop the connection.
				time.Sleep(time.Millisecond)
				return
			}
		}
	}
}
