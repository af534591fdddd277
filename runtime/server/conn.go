package server

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/tandem-dev/tandem/runtime/auth"
	"github.com/tandem-dev/tandem/runtime/doc"
	"github.com/tandem-dev/tandem/runtime/protocol"
)

const (
	// maxStrikes is how many refused operations in a row over the rate a
	// connection may send before it is closed (4008).
	maxStrikes = 20
)

// conn is one WebSocket connection. The read goroutine (serveWS) parses
// and dispatches client messages; the write goroutine (writePump) owns all
// writes. The document never waits for a connection: Send drops the
// connection when its queue is full.
type conn struct {
	s   *Server
	ws  *websocket.Conn
	id  string
	doc string

	out       chan []byte
	closeOnce sync.Once
	closing   chan struct{}
	closeCode int
	closeText string
}

// send queues msg; false means the connection is gone or too slow.
func (c *conn) send(msg any) bool {
	data, err := json.Marshal(msg)
	if err != nil {
		c.s.log.Error("encode message", "err", err)
		return true
	}
	select {
	case <-c.closing:
		return false
	default:
	}
	select {
	case c.out <- data:
		return true
	default:
		c.close(protocol.CloseSlowConsumer, "client too slow")
		return false
	}
}

func (c *conn) sendProblem(p *protocol.Problem) {
	c.s.opts.Metrics.Errors.WithLabelValues(p.Code).Inc()
	c.send(p.Wire())
}

// close asks the write pump to send a close frame and end the connection.
func (c *conn) close(code int, text string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeText = code, text
		close(c.closing)
	})
}

func (c *conn) writePump(done chan<- struct{}) {
	defer close(done)
	ping := time.NewTicker(c.s.opts.PingInterval)
	defer ping.Stop()
	for {
		select {
		case data := <-c.out:
			_ = c.ws.SetWriteDeadline(time.Now().Add(c.s.opts.WriteTimeout))
			if err := c.ws.WriteMessage(websocket.TextMessage, data); err != nil {
				c.close(protocol.CloseNormal, "")
				_ = c.ws.Close()
				return
			}
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.s.opts.WriteTimeout)); err != nil {
				c.close(protocol.CloseNormal, "")
				_ = c.ws.Close()
				return
			}
		case <-c.closing:
			// Write what is queued (an error explaining the close, acks)
			// before the close frame.
			for drained := false; !drained; {
				select {
				case data := <-c.out:
					_ = c.ws.SetWriteDeadline(time.Now().Add(c.s.opts.WriteTimeout))
					if c.ws.WriteMessage(websocket.TextMessage, data) != nil {
						drained = true
					}
				default:
					drained = true
				}
			}
			msg := websocket.FormatCloseMessage(c.closeCode, c.closeText)
			_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
			// Give the peer a moment to answer the close, then cut it; the
			// reader sees the error and ends.
			time.AfterFunc(time.Second, func() { _ = c.ws.Close() })
			return
		}
	}
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	docID := r.PathValue("docId")
	if !ValidDocID(docID) {
		s.writeError(w, http.StatusBadRequest, protocol.CodeBadMessage, "invalid document id")
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		// The upgrader already answered (403 for a refused origin).
		s.log.Debug("websocket upgrade", "err", err)
		return
	}
	c := &conn{s: s, ws: ws, id: randomID(), doc: docID, out: make(chan []byte, s.opts.WriteQueue), closing: make(chan struct{})}
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(protocol.CloseRestart, "server restarting"), time.Now().Add(time.Second))
		_ = ws.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.perDoc[docID]++
	full := s.perDoc[docID] > s.opts.Limits.MaxConnsPerDoc
	s.wg.Add(1)
	s.mu.Unlock()
	s.opts.Metrics.Connections.Inc()

	wrote := make(chan struct{})
	go c.writePump(wrote)
	defer func() {
		c.close(protocol.CloseNormal, "")
		<-wrote
		_ = ws.Close()
		s.mu.Lock()
		delete(s.conns, c)
		if s.perDoc[docID]--; s.perDoc[docID] <= 0 {
			delete(s.perDoc, docID)
		}
		s.mu.Unlock()
		s.opts.Metrics.Connections.Dec()
		s.wg.Done()
	}()
	if full {
		c.sendProblem(&protocol.Problem{Code: protocol.CodeTooLarge, Message: "too many connections to this document"})
		c.close(protocol.CloseDocFull, "too many connections to this document")
		return
	}
	c.serve(r)
}

// serve runs the read loop until the connection ends.
func (c *conn) serve(r *http.Request) {
	s := c.s
	ws := c.ws
	ws.SetReadLimit(s.opts.Limits.MaxMessageBytes)
	// Two and a half ping intervals: one lost pong is tolerated, two are not.
	pongWait := s.opts.PingInterval * 5 / 2
	ws.SetPongHandler(func(string) error { return ws.SetReadDeadline(time.Now().Add(pongWait)) })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.closing:
			// Unblock the reader once the close handshake had its chance.
			time.Sleep(time.Second)
			_ = ws.SetReadDeadline(time.Now())
		case <-ctx.Done():
		}
	}()

	// 1. hello, within HelloTimeout.
	_ = ws.SetReadDeadline(time.Now().Add(s.opts.HelloTimeout))
	var hello *protocol.Hello
	for hello == nil {
		data, ok := c.read()
		if !ok {
			return
		}
		msg, p := protocol.Decode(data)
		if p != nil {
			c.sendProblem(p)
			continue
		}
		h, isHello := msg.(*protocol.Hello)
		if !isHello {
			c.sendProblem(&protocol.Problem{Code: protocol.CodeBadMessage, Message: "the first message must be hello"})
			continue
		}
		hello = h
	}
	_ = ws.SetReadDeadline(time.Now().Add(pongWait))

	// 2. who is it?
	token := hello.Token
	if token == "" {
		token = bearer(r)
	}
	id, err := s.opts.Auth.Authenticate(token, c.doc)
	if err != nil {
		code, close := protocol.CodeUnauthorized, protocol.CloseUnauthorized
		var ae *auth.Error
		if errors.As(err, &ae) && ae.Code == auth.CodeForbidden {
			code, close = protocol.CodeForbidden, protocol.CloseForbidden
		}
		c.sendProblem(&protocol.Problem{Code: code, Message: err.Error()})
		c.close(close, code)
		c.drain()
		return
	}

	// 3. join: the document sends the welcome through c.send.
	sess, err := s.opts.Manager.Join(ctx, c.doc, doc.Member{
		Conn: c.id, Client: hello.Client, User: id.User, Perm: string(id.Perm), Send: c.send,
		Kick: func(reason string) { c.close(protocol.CloseRestart, reason) },
	}, hello.Rev)
	if err != nil {
		s.log.Warn("join document", "doc", c.doc, "err", err)
		c.sendProblem(&protocol.Problem{Code: protocol.CodeUnavailable, Message: "document unavailable, retry"})
		c.close(protocol.CloseTryLater, "document unavailable")
		c.drain()
		return
	}
	defer sess.Leave(context.Background())

	// 4. messages.
	limiter := rate.NewLimiter(rate.Limit(s.opts.Limits.OpsPerSecond), s.opts.Limits.OpsBurst)
	cursorLimiter := rate.NewLimiter(rate.Limit(30), 30)
	strikes := 0
	for {
		data, ok := c.read()
		if !ok {
			return
		}
		msg, p := protocol.Decode(data)
		if p != nil {
			c.sendProblem(p)
			continue
		}
		switch m := msg.(type) {
		case *protocol.Hello:
			c.sendProblem(&protocol.Problem{Code: protocol.CodeBadMessage, Message: "hello was already received"})
		case *protocol.ClientOp:
			seq := m.Seq
			if !id.CanWrite() {
				c.sendProblem(&protocol.Problem{Code: protocol.CodeForbidden, Message: "read-only access", Seq: &seq})
				continue
			}
			if !limiter.Allow() {
				c.sendProblem(&protocol.Problem{Code: protocol.CodeRateLimited, Message: "too many operations, slow down", Seq: &seq})
				if strikes++; strikes >= maxStrikes {
					c.close(protocol.CloseRateLimited, "rate limit exceeded")
					c.drain()
					return
				}
				continue
			}
			strikes = 0
			if n := insertedBytes(m); n > s.opts.Limits.MaxOpBytes {
				c.sendProblem(&protocol.Problem{Code: protocol.CodeTooLarge, Message: "operation inserts too much text at once", Seq: &seq})
				continue
			}
			if err := sess.Submit(ctx, m.Seq, m.Rev, m.Op); err != nil {
				c.sendProblem(&protocol.Problem{Code: protocol.CodeUnavailable, Message: "document unavailable, retry", Seq: &seq})
			}
		case *protocol.ClientPresence:
			if cursorLimiter.Allow() {
				_ = sess.SetCursor(ctx, m.Cursor, m.Rev)
			}
		}
	}
}

// read returns the next text message; false when the connection ended.
// Binary frames are answered with bad_message.
func (c *conn) read() ([]byte, bool) {
	for {
		kind, data, err := c.ws.ReadMessage()
		if err != nil {
			var ne net.Error
			switch {
			case errors.Is(err, websocket.ErrReadLimit):
				// The library already sent close 1009.
				c.s.opts.Metrics.Errors.WithLabelValues(protocol.CodeTooLarge).Inc()
				c.close(protocol.CloseTooLarge, "message too large")
			case errors.As(err, &ne) && ne.Timeout():
				// No hello in time, or pongs stopped.
				c.close(protocol.CloseTimeout, "timeout")
			}
			return nil, false
		}
		if kind != websocket.TextMessage {
			c.sendProblem(&protocol.Problem{Code: protocol.CodeBadMessage, Message: "only text frames are accepted"})
			continue
		}
		return data, true
	}
}

// drain reads until the peer answers the close or the connection is cut,
// so the close frame is not lost to a reset.
func (c *conn) drain() {
	_ = c.ws.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		if _, _, err := c.ws.ReadMessage(); err != nil {
			return
		}
	}
}

func insertedBytes(m *protocol.ClientOp) int {
	n := 0
	for _, c := range m.Op {
		n += len(c.Insert)
	}
	return n
}
