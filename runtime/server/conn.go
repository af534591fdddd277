package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/tandem-dev/tandem/runtime/auth"
	"github.com/tandem-dev/tandem/runtime/doc"
	"github.com/tandem-dev/tandem/runtime/metrics"
	"github.com/tandem-dev/tandem/runtime/protocol"
)

const (
	// maxStrikes is how many refused operations in a row over the rate a
	// connection may send before it is closed (4008).
	maxStrikes = 20
)

// conn is one WebSocket connection. An idle connection has no goroutine:
// a reader runs while the client's bytes arrive and parks the connection
// on the process's poller (epoll) when nothing more is buffered, a writer
// runs while there is something to write (frames, a ping, the close
// frame), the queue grows only while frames wait, and the server's wheel
// pings it and watches its pongs. The document never waits for a
// connection: send drops the connection when its queue is full.
type conn struct {
	s    *Server
	ws   *websocket.Conn
	cork *corkConn
	// br is what the WebSocket library reads from; while the connection
	// is parked its buffer is back in the server's pool (see park). src is
	// what br reads from.
	br    *bufio.Reader
	src   *socketReader
	id    string
	doc   string
	ended chan struct{} // closed once the writer has finished for good
	// client is the hello's client id (set by the handshake).
	client string
	// heard is when the last pong (or the hello) arrived, in Unix
	// nanoseconds: the wheel closes the connection when it is too old.
	heard atomic.Int64
	// slot is the connection's group in the server's wheel (guarded by the
	// wheel's lock).
	slot int
	// fd is the socket, for the poller; pollable is false when there is
	// none (the connection then reads with a goroutine of its own).
	fd       int32
	pollable bool
	// rs is the read loop's state, kept while the connection is parked.
	rs *readState

	// expiry closes the connection (4001) when its token stops being
	// accepted; an auth message with a fresh token moves it. nil when the
	// token does not expire. Guarded by mu.
	expiry *time.Timer

	mu        sync.Mutex
	frames    []queuedFrame // frames waiting for the writer
	queued    int           // bytes in frames
	inflight  time.Time     // when the writer took the frames it is writing (zero: none)
	writing   bool          // a writer goroutine is running
	pingDue   bool
	closing   bool
	closeCode int
	closeText string
	// closeBy is metrics.ClosedByClient when the client ended the
	// connection (peerClose is its close code, 1006 when it went away
	// without one); empty when the server did.
	closeBy   string
	peerClose int
	// parked: no reader runs; the poller starts one when the socket is
	// readable. armed: the socket is registered with the poller.
	parked bool
	armed  bool
}

// readState is what the read loop keeps between messages. The rate
// limiters are made when the client first sends an operation or a cursor:
// many connections only ever read.
type readState struct {
	sess          *doc.Session
	id            auth.Identity
	limiter       *rate.Limiter
	cursorLimiter *rate.Limiter
	strikes       int
}

// send queues f and has it written; false means the connection is gone
// or too slow.
func (c *conn) send(f *protocol.Frame) bool {
	if !c.queue(f) {
		return false
	}
	c.flush()
	return true
}

// queue adds f to what the next flush writes (the document's Member.Send).
func (c *conn) queue(f *protocol.Frame) bool {
	// Parts, not one buffer: a welcome's text is the document's shared
	// encoding and stays shared while it waits here.
	data, err := f.Parts()
	if err != nil {
		c.s.log.Error("encode message", "err", err)
		return true
	}
	size := 0
	for _, p := range data {
		size += len(p)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	// The bound is in bytes, not frames: what it protects is memory, and a
	// busy document sends many small frames in bursts that a healthy
	// client drains a moment later.
	if c.queued+size > c.s.opts.WriteQueueBytes && len(c.frames) > 0 {
		c.s.opts.Metrics.SlowConsumers.WithLabelValues(metrics.BoundConnection).Inc()
		c.closeLocked(protocol.CloseSlowConsumer, "client too slow")
		return false
	}
	// The process-wide bound: when too much waits for slow clients as a
	// whole, a connection that is itself behind is closed rather than
	// given more; one that keeps up still gets its frame unless the frame
	// alone is larger than a connection's queue (a welcome resuming over
	// many large operations), and any connection gets a frame others hold
	// already (it costs nothing more).
	if c.s.pending.full() && !c.s.pending.held(f) && (c.behindLocked() || size > c.s.opts.WriteQueueBytes) {
		c.s.pending.refused.WithLabelValues("websocket").Inc()
		c.s.opts.Metrics.SlowConsumers.WithLabelValues(metrics.BoundProcess).Inc()
		c.closeLocked(protocol.CloseSlowConsumer, "client too slow")
		return false
	}
	c.s.pending.holdFrame(f, size)
	c.frames = append(c.frames, queuedFrame{f: f, parts: data, size: size})
	c.queued += size
	return true
}

// behindLocked reports whether the client has not taken what was last
// written to it for a while: a write in progress for more than
// behindAfter. Frames queued in the document's current batch do not count:
// they are flushed together at its end.
func (c *conn) behindLocked() bool {
	return !c.inflight.IsZero() && time.Since(c.inflight) > behindAfter
}

// behindAfter is how long a write may take before the connection counts
// as behind.
const behindAfter = 50 * time.Millisecond

// queuedFrame is a frame waiting to be written, charged to the server's
// pending bytes until it is written or dropped.
type queuedFrame struct {
	f     *protocol.Frame
	parts [][]byte
	size  int
}

// release gives back what frames were charged.
func (c *conn) release(frames []queuedFrame) {
	for _, q := range frames {
		c.s.pending.releaseFrame(q.f, q.size)
	}
}

// flush has the queued frames written (the document's Member.Flush).
func (c *conn) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.frames) > 0 {
		c.wakeLocked()
	}
}

func (c *conn) sendProblem(p *protocol.Problem) {
	c.s.opts.Metrics.Errors.WithLabelValues(p.Code).Inc()
	c.send(protocol.NewFrame(p.Wire()))
}

// close asks the writer to send what is queued, then a close frame, and to
// end the connection. Only the first call counts.
func (c *conn) close(code int, text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(code, text)
}

func (c *conn) closeLocked(code int, text string) {
	if c.closing {
		return
	}
	c.closing = true
	c.closeCode, c.closeText = code, text
	if c.expiry != nil {
		c.expiry.Stop()
	}
	c.wakeLocked()
	// A parked reader is started, to read the client's answer to the close
	// or see the connection end.
	c.unparkLocked()
}

// wakeLocked starts a writer unless one is running; it will see the new
// work before it exits.
func (c *conn) wakeLocked() {
	if !c.writing {
		c.writing = true
		c.s.workers.start(task{c, taskWrite})
	}
}

// pingTick runs on the server's wheel once per ping interval: a
// connection whose pongs stopped for two and a half intervals is closed
// (4011), any other is sent a ping. With no writer running and nothing
// queued, the wheel writes the ping itself without waiting (pingNow), so a
// slot of idle connections is pinged in one pass with no goroutine per
// connection; otherwise, or when the socket would block, the writer sends it.
func (c *conn) pingTick(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	if now.Sub(time.Unix(0, c.heard.Load())) > c.s.pongWait() {
		c.closeLocked(protocol.CloseTimeout, "timeout")
		return
	}
	if !c.writing && len(c.frames) == 0 && c.pingNowLocked() {
		return
	}
	c.pingDue = true
	c.wakeLocked()
}

// pingFrame is a server's ping with no payload (unmasked).
var pingFrame = [2]byte{0x89, 0x00}

// pingNowLocked writes a ping straight to the socket without blocking;
// false when it could not be written whole, and the writer must send one.
// The caller holds c.mu and no writer runs, so the only other writes are
// the library's answers to the client's control frames, which go through
// the corkConn whole, one frame per write, under its lock.
func (c *conn) pingNowLocked() bool {
	if !c.pollable {
		return false
	}
	c.cork.mu.Lock()
	defer c.cork.mu.Unlock()
	if c.cork.corked || len(c.cork.rest) > 0 {
		return false
	}
	// The socket is open: it is closed only once closing is set (which
	// the caller checked under c.mu), so the descriptor is still c's.
	n, err := writeNonblocking(c.fd, pingFrame[:])
	if err == nil && n == len(pingFrame) {
		return true
	}
	if n > 0 {
		// Part of the frame left: the rest goes before anything else.
		c.cork.rest = append(c.cork.rest, pingFrame[n:]...)
	}
	return false
}

// pongWait is how long a connection may go without a pong: one lost pong
// is tolerated, two are not.
func (s *Server) pongWait() time.Duration { return s.opts.PingInterval * 5 / 2 }

// write is the writer goroutine: it takes everything queued, writes it
// with as few system calls as it can, and exits when nothing is left.
func (c *conn) write() {
	for {
		c.mu.Lock()
		frames := c.frames
		c.frames = nil // an idle connection keeps no queue
		c.queued = 0
		c.inflight = time.Time{}
		if len(frames) > 0 {
			c.inflight = time.Now()
		}
		ping, closing := c.pingDue, c.closing
		c.pingDue = false
		if len(frames) == 0 && !ping && !closing {
			c.writing = false
			c.mu.Unlock()
			return
		}
		code, text := c.closeCode, c.closeText
		c.mu.Unlock()

		err := c.writeFrames(frames, ping)
		c.release(frames)
		if err != nil {
			c.fail(err)
			return
		}
		if closing {
			msg := websocket.FormatCloseMessage(code, text)
			_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
			// Give the peer a moment to answer the close, then cut the
			// connection; the reader sees the error and ends.
			time.AfterFunc(time.Second, c.closeSocket)
			close(c.ended)
			return // writing stays true: no writer starts again
		}
	}
}

// writeFrames writes frames (and a ping) in one corked burst: the frames
// leave in one write system call rather than one each. A large frame (a
// full-text welcome) is written straight to the connection instead, so
// that a client that does not read pins no copy of it in a cork buffer.
func (c *conn) writeFrames(frames []queuedFrame, ping bool) error {
	if len(frames) == 0 && !ping {
		return nil
	}
	deadline := time.Now().Add(c.s.opts.WriteTimeout)
	_ = c.ws.SetWriteDeadline(deadline)
	c.cork.cork()
	for _, q := range frames {
		parts := q.parts
		if msg, small := joinSmall(parts); small {
			if err := c.ws.WriteMessage(websocket.TextMessage, msg); err != nil {
				_ = c.cork.uncork()
				return fmt.Errorf("write message: %w", err)
			}
			continue
		}
		if err := c.cork.uncork(); err != nil {
			return err
		}
		if err := c.writeParts(parts); err != nil {
			return err
		}
		c.cork.cork()
	}
	if ping {
		if err := c.ws.WriteControl(websocket.PingMessage, nil, deadline); err != nil {
			_ = c.cork.uncork()
			return fmt.Errorf("write ping: %w", err)
		}
	}
	return c.cork.uncork()
}

// joinSmall returns a frame's parts as one message when it is small
// enough to go through the cork buffer.
func joinSmall(parts [][]byte) ([]byte, bool) {
	if len(parts) == 1 {
		return parts[0], len(parts[0]) <= maxPooledCork
	}
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if n > maxPooledCork {
		return nil, false
	}
	return bytes.Join(parts, nil), true
}

// writeParts writes one message from its parts, without joining them.
func (c *conn) writeParts(parts [][]byte) error {
	w, err := c.ws.NextWriter(websocket.TextMessage)
	if err != nil {
		return fmt.Errorf("write message: %w", err)
	}
	for _, p := range parts {
		if _, err := w.Write(p); err != nil {
			_ = w.Close()
			return fmt.Errorf("write message: %w", err)
		}
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("write message: %w", err)
	}
	return nil
}

// fail ends a connection whose writes fail: nothing more can reach the
// peer, so there is no close frame to send. A write that timed out is a
// client that stopped reading: the server cut it (a slow consumer); any
// other error is the connection breaking under the client.
func (c *conn) fail(err error) {
	var ne net.Error
	timeout := errors.As(err, &ne) && ne.Timeout()
	c.mu.Lock()
	if !c.closing {
		c.closing = true
		c.closeCode, c.closeText = protocol.CloseNormal, ""
		c.closeBy, c.peerClose = metrics.ClosedByClient, 1006 // abnormal: no close frame
		if timeout {
			c.closeBy, c.closeCode = "", 1006
			c.s.opts.Metrics.SlowConsumers.WithLabelValues(metrics.BoundWriteTimeout).Inc()
		}
		if c.expiry != nil {
			c.expiry.Stop()
		}
	}
	dropped := c.frames
	c.frames = nil
	c.queued = 0
	c.inflight = time.Time{}
	c.mu.Unlock()
	c.release(dropped)
	c.closeSocket()
	close(c.ended)
}

// closeSocket cuts the connection. The poller forgets the socket first and
// a parked reader is started, so that it sees the end.
func (c *conn) closeSocket() {
	c.mu.Lock()
	c.unparkLocked()
	c.s.poller.disarm(c)
	c.mu.Unlock()
	_ = c.ws.Close()
}

// corkConn lets the writer gather the frames of one burst into one buffer
// and send them with a single write. Outside a burst (the handshake, control
// frames the WebSocket library answers from the reader) writes go straight
// through. The buffer is pooled, so an idle connection holds none.
type corkConn struct {
	net.Conn
	pool *sync.Pool

	mu     sync.Mutex
	corked bool
	buf    *[]byte
	// rest is the end of a frame the wheel's ping left unwritten (the
	// socket took only part of it): it is written before anything else.
	rest []byte
	// The WebSocket library sets the write deadline before every frame;
	// during a burst only the last one matters, and it is set once, when
	// the burst is written (each setting costs a timer update).
	deadline    time.Time
	deadlineSet bool
}

func (c *corkConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked {
		c.deadline, c.deadlineSet = t, true
		return nil
	}
	return c.Conn.SetWriteDeadline(t)
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		if err := c.writeRestLocked(); err != nil {
			return 0, err
		}
		return c.Conn.Write(p)
	}
	*c.buf = append(*c.buf, p...)
	return len(p), nil
}

func (c *corkConn) cork() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = true
	if c.buf == nil {
		c.buf = c.pool.Get().(*[]byte)
	}
}

// uncork writes what was gathered and returns the buffer to the pool.
func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	if c.buf == nil {
		return nil
	}
	var err error
	if c.deadlineSet {
		c.deadlineSet = false
		err = c.Conn.SetWriteDeadline(c.deadline)
	}
	if err == nil {
		err = c.writeRestLocked()
	}
	if len(*c.buf) > 0 && err == nil {
		_, err = c.Conn.Write(*c.buf)
	}
	if cap(*c.buf) <= maxPooledCork {
		*c.buf = (*c.buf)[:0]
		c.pool.Put(c.buf)
	}
	c.buf = nil
	return err
}

// writeRestLocked writes what is left of a partly written ping. The caller
// holds c.mu.
func (c *corkConn) writeRestLocked() error {
	if len(c.rest) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.rest)
	c.rest = nil
	return err
}

// maxPooledCork keeps a burst of large messages (a full-text welcome) from
// pinning a large buffer in the pool.
const maxPooledCork = 64 << 10

// hijackWriter hands the WebSocket library a corkConn when it takes the
// connection over from the HTTP server.
type hijackWriter struct {
	http.ResponseWriter
	pool *sync.Pool
	conn *corkConn
	br   *bufio.Reader
	src  *socketReader
}

func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = &corkConn{Conn: nc, pool: w.pool}
	// The WebSocket library reads through the buffered reader it is given
	// here (the upgrader has no ReadBufferSize), so the connection can see
	// whether bytes wait in it before it parks. It is smaller than the
	// HTTP server's, which it replaces: bytes that one already holds (a
	// client that sent before the handshake ended) are read first.
	src := &socketReader{r: nc}
	if brw.Reader.Buffered() > 0 {
		src.pre = brw.Reader
	}
	w.src = src
	w.br = bufio.NewReaderSize(src, readBufferSize)
	return w.conn, bufio.NewReadWriter(w.br, brw.Writer), nil
}

// readBufferSize is each connection's read buffer: it must hold a control
// frame (at most 131 bytes from a client) and be over 256 bytes for the
// WebSocket library to read through it; larger messages are read straight
// into the message.
const readBufferSize = 512

// socketReader is what a connection's read buffer reads from: the bytes
// the HTTP server read ahead of the upgrade (a client that sent before the
// handshake ended), then the bytes the poller took from the socket behind
// a parked connection's pongs, then the socket.
type socketReader struct {
	pre  *bufio.Reader // nil once read
	held []byte        // nil once read
	r    io.Reader
}

func (p *socketReader) Read(b []byte) (int, error) {
	if p.pre != nil {
		if n := p.pre.Buffered(); len(b) > n {
			b = b[:n]
		}
		n, err := p.pre.Read(b)
		if p.pre.Buffered() == 0 {
			p.pre = nil
		}
		return n, err
	}
	if len(p.held) > 0 {
		n := copy(b, p.held)
		if p.held = p.held[n:]; len(p.held) == 0 {
			p.held = nil
		}
		return n, nil
	}
	return p.r.Read(b)
}

// pending reports whether bytes wait here rather than in the socket, where
// the poller would not see them.
func (p *socketReader) pending() bool { return p.pre != nil || len(p.held) > 0 }

func (w *hijackWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	docID := r.PathValue("docId")
	if !ValidDocID(docID) {
		s.refused(metrics.RefusedInvalidDocument)
		s.writeError(w, http.StatusBadRequest, protocol.CodeBadMessage, "invalid document id")
		return
	}
	hw := &hijackWriter{ResponseWriter: w, pool: &s.corkPool}
	ws, err := s.upgrader.Upgrade(hw, r, nil)
	if err != nil {
		// The upgrader already answered (403 for a refused origin).
		s.log.Debug("websocket upgrade", "err", err)
		if !s.upgrader.CheckOrigin(r) {
			s.refused(metrics.RefusedOrigin)
		}
		return
	}
	c := &conn{s: s, ws: ws, cork: hw.conn, br: hw.br, src: hw.src, id: randomID(), doc: docID, ended: make(chan struct{})}
	if s.poller != nil {
		c.fd, c.pollable = socketFD(hw.conn.Conn)
	}
	c.heard.Store(time.Now().UnixNano())
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		s.refused(metrics.RefusedDraining)
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(protocol.CloseRestart, "server restarting"), time.Now().Add(time.Second))
		_ = ws.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.wheel.add(c)
	s.perDoc[docID]++
	full := s.perDoc[docID] > s.opts.Limits.MaxConnsPerDoc
	s.wg.Add(1)
	s.mu.Unlock()
	s.opts.Metrics.Connections.Inc()

	// The connection continues on a goroutine of its own and the handler
	// returns: the HTTP server then lets go of the request, its headers and
	// its buffers, which an idle connection would otherwise keep for its
	// whole life.
	go c.run(full, bearer(r))
}

// run serves the connection: the handshake here, the messages on a fresh
// goroutine. The handshake (token check, join) grows a goroutine's stack
// to several KiB; starting the long-lived read loop on a new goroutine
// lets an idle connection keep only the small stack the loop needs.
func (c *conn) run(full bool, headerToken string) {
	if full {
		c.s.refused(metrics.RefusedDocumentFull)
		c.sendProblem(&protocol.Problem{Code: protocol.CodeTooLarge, Message: "too many connections to this document"})
		c.close(protocol.CloseDocFull, "too many connections to this document")
		c.finish()
		return
	}
	// No context of its own: nothing waits on the connection's behalf
	// once it is gone (a close from elsewhere, a slow consumer, a kick or
	// shutdown, ends the reader through the socket: the writer cuts it a
	// second after the close frame).
	c.s.handshaking.Add(1)
	sess, id, ok := c.handshake(context.Background(), headerToken)
	c.s.handshaking.Add(-1)
	if !ok {
		c.finish()
		return
	}
	c.rs = &readState{sess: sess, id: id}
	c.readLoop(false)
}

// readLoop reads and handles the client's messages. When nothing more is
// buffered it parks the connection on the poller and returns; the poller
// starts it again (woken) once the socket is readable. It ends the
// connection when the client does, or after a close.
func (c *conn) readLoop(woken bool) {
	rs := c.rs
	ended := false
	c.takeReadBuffer()
	if woken {
		// The socket is readable: take what is there into the buffer, so
		// that pongs can be told from the rest without a blocking read.
		// Readable with nothing to read is the peer's end (or an error):
		// the read below sees it again, and the connection must not park.
		_, err := c.br.Peek(1)
		ended = err != nil
	}
	for {
		if c.pollable && !ended && !c.isClosing() {
			c.takePongs()
			if c.br.Buffered() == 0 && c.park() {
				return
			}
		}
		var data []byte
		ok := !c.timedOut() // a silent client will not answer the close either
		if ok {
			data, ok = c.read()
		}
		if !ok || c.isClosing() {
			// Once a close is under way (an expired token, a kick, a slow
			// consumer) nothing more the client sends is acted on.
			rs.sess.Leave(context.Background())
			c.finish()
			return
		}
		if !c.handle(data) {
			rs.sess.Leave(context.Background())
			c.finish()
			return
		}
	}
}

// takePongs consumes the complete pong frames at the front of the read
// buffer. The WebSocket library would answer them and then block reading
// for the next frame; an idle connection whose client only answers pings
// must be able to park instead. Called between messages only, where the
// buffer starts at a frame boundary.
func (c *conn) takePongs() {
	for {
		n := c.br.Buffered()
		if n < 2 {
			return
		}
		b, _ := c.br.Peek(n)
		// FIN and opcode 10 (pong), masked (as every client frame is),
		// payload of at most 125 bytes (a control frame's limit).
		if b[0] != 0x8A || b[1]&0x80 == 0 || b[1]&0x7F > 125 {
			return
		}
		size := 2 + 4 + int(b[1]&0x7F)
		if n < size {
			return
		}
		_, _ = c.br.Discard(size)
		c.heard.Store(time.Now().UnixNano())
	}
}

// park hands the connection to the poller; false when it cannot be
// parked (closing, or the poller refused it) and the caller reads on.
func (c *conn) park() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	if c.src.pending() {
		return false // bytes wait in src, not in the socket
	}
	// Before arming: from then on a reader may start at any moment.
	c.releaseReadBuffer()
	if err := c.s.poller.arm(c); err != nil {
		c.takeReadBuffer()
		c.s.log.Warn("park connection; reading with a goroutine instead", "err", err)
		c.pollable = false
		return false
	}
	c.parked = true
	c.s.idle.Add(1)
	return true
}

// releaseReadBuffer gives the empty read buffer to the server's pool: a
// parked connection holds none. Only the reader calls it (or park, before
// the poller may start one).
func (c *conn) releaseReadBuffer() {
	if c.br.Size() == 0 || c.br.Buffered() > 0 {
		return
	}
	held := new(bufio.Reader)
	*held = *c.br
	held.Reset(nil) // no reference to the connection from the pool
	*c.br = bufio.Reader{}
	c.s.readBufs.Put(held)
}

// takeReadBuffer gives the connection a read buffer again (from the pool)
// if it released its own.
func (c *conn) takeReadBuffer() {
	if c.br.Size() != 0 {
		return
	}
	if held, ok := c.s.readBufs.Get().(*bufio.Reader); ok {
		held.Reset(c.src)
		*c.br = *held
		return
	}
	*c.br = *bufio.NewReaderSize(c.src, readBufferSize)
}

// wake starts the reader of a parked connection (the poller saw its
// socket readable), unless all that arrived are pongs: those are taken
// here, on the poller's goroutine, and the connection stays parked.
func (c *conn) wake() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.parked {
		return
	}
	if !c.closing && c.takeParkedPongsLocked() {
		if err := c.s.poller.arm(c); err == nil {
			return
		}
	}
	if !c.parked {
		return // closeLocked started the reader
	}
	c.parked = false
	c.s.idle.Add(-1)
	c.s.workers.start(task{c, taskReadWoken})
}

// takeParkedPongsLocked reads what the socket holds (one system call) and
// consumes the complete pong frames at its front; true when that was all
// of it. Anything else that was read (another frame, a partial one) is
// handed to the reader through src, and false says to start it, as it does
// when nothing could be read (the peer's end, an error). The caller holds
// c.mu and the connection is parked: no reader runs, and the socket is
// open (closeSocket unparks first).
func (c *conn) takeParkedPongsLocked() bool {
	var buf [128]byte
	n, err := readNonblocking(c.fd, buf[:])
	if err != nil || n == 0 {
		return false
	}
	size := 0
	for size < n {
		b := buf[size:n]
		// As takePongs: FIN and opcode 10, masked, at most 125 bytes.
		if len(b) < 2 || b[0] != 0x8A || b[1]&0x80 == 0 || b[1]&0x7F > 125 {
			break
		}
		l := 2 + 4 + int(b[1]&0x7F)
		if len(b) < l {
			break
		}
		size += l
	}
	if size > 0 {
		c.heard.Store(time.Now().UnixNano())
	}
	if size == n {
		return true
	}
	c.src.held = append([]byte(nil), buf[size:n]...)
	return false
}

// unparkLocked starts the reader of a parked connection that is being
// closed. The caller holds c.mu.
func (c *conn) unparkLocked() {
	if c.parked {
		c.parked = false
		c.s.idle.Add(-1)
		c.s.workers.start(task{c, taskRead})
	}
}

// finish ends the connection and unregisters it.
func (c *conn) finish() {
	s := c.s
	c.close(protocol.CloseNormal, "")
	<-c.ended
	c.closeSocket()
	s.wheel.remove(c)
	s.mu.Lock()
	delete(s.conns, c)
	if s.perDoc[c.doc]--; s.perDoc[c.doc] <= 0 {
		delete(s.perDoc, c.doc)
	}
	s.mu.Unlock()
	c.countClose()
	s.opts.Metrics.Connections.Dec()
	s.wg.Done()
}

// countClose counts how the connection ended: the client's close code when
// the client ended it (1006 when it just went away), else the server's.
func (c *conn) countClose() {
	c.mu.Lock()
	code, by := c.closeCode, metrics.ClosedByServer
	if c.closeBy == metrics.ClosedByClient {
		code, by = c.peerClose, metrics.ClosedByClient
	}
	c.mu.Unlock()
	c.s.opts.Metrics.Closes.WithLabelValues(metrics.CloseLabel(code, by), by).Inc()
}

// handshake reads hello, authenticates and joins the document; false when
// the connection ended or was refused (the client was told why).
// headerToken is the bearer token of the upgrade request, used when hello
// carries none.
func (c *conn) handshake(ctx context.Context, headerToken string) (*doc.Session, auth.Identity, bool) {
	s := c.s
	ws := c.ws
	ws.SetReadLimit(s.opts.Limits.MaxMessageBytes)
	// Liveness is the wheel's (pingTick): it closes a connection whose
	// pongs stopped, whether a reader runs or it is parked.
	ws.SetPongHandler(func(string) error {
		c.heard.Store(time.Now().UnixNano())
		return nil
	})

	// 1. hello, within HelloTimeout.
	_ = ws.SetReadDeadline(time.Now().Add(s.opts.HelloTimeout))
	var hello *protocol.Hello
	for hello == nil {
		data, ok := c.read()
		if !ok {
			s.refused(metrics.RefusedNoHello)
			return nil, auth.Identity{}, false
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
	_ = ws.SetReadDeadline(time.Time{})
	c.heard.Store(time.Now().UnixNano())

	// 2. who is it?
	token := hello.Token
	if token == "" {
		token = headerToken
	}
	id, err := s.opts.Auth.Authenticate(token, c.doc)
	if err != nil {
		code, close, reason := protocol.CodeUnauthorized, protocol.CloseUnauthorized, metrics.RefusedUnauthorized
		var ae *auth.Error
		if errors.As(err, &ae) && ae.Code == auth.CodeForbidden {
			code, close, reason = protocol.CodeForbidden, protocol.CloseForbidden, metrics.RefusedForbidden
		}
		s.refused(reason)
		c.sendProblem(&protocol.Problem{Code: code, Message: err.Error()})
		c.close(close, code)
		c.drain()
		return nil, auth.Identity{}, false
	}

	id = id.ForClient(hello.Client).WithProfile(hello.Name, hello.Color)
	c.client = hello.Client
	// The token's clock runs from here: the connection ends when it does.
	c.setExpiry(id.ValidFor)

	// 3. join: the document sends the welcome through c.send.
	sess, err := s.opts.Manager.Join(ctx, c.doc, doc.Member{
		Conn: c.id, Client: hello.Client, User: id.User, Perm: string(id.Perm), AuthTTLMs: id.ValidFor.Milliseconds(),
		Limits: protocol.Limits{MaxMessageBytes: s.opts.Limits.MaxMessageBytes, MaxOpBytes: s.opts.Limits.MaxOpBytes},
		Send:   c.queue, Flush: c.flush,
		Kick:    func(reason string) { c.close(protocol.CloseRestart, reason) },
		Deleted: func() { c.close(protocol.CloseDeleted, "document deleted") },
	}, hello.Rev)
	if err != nil {
		s.log.Warn("join document", "doc", c.doc, "err", err)
		s.refused(metrics.RefusedUnavailable)
		c.sendProblem(&protocol.Problem{Code: protocol.CodeUnavailable, Message: "document unavailable, retry"})
		c.close(protocol.CloseTryLater, "document unavailable")
		c.drain()
		return nil, auth.Identity{}, false
	}
	return sess, id, true
}

// handle acts on one client message; false when the connection is to end.
func (c *conn) handle(data []byte) bool {
	s := c.s
	rs := c.rs
	ctx, sess, id := context.Background(), rs.sess, rs.id
	msg, p := protocol.Decode(data)
	if p != nil {
		c.sendProblem(p)
		return true
	}
	switch m := msg.(type) {
	case *protocol.Hello:
		c.sendProblem(&protocol.Problem{Code: protocol.CodeBadMessage, Message: "hello was already received"})
	case *protocol.ClientOp:
		seq := m.Seq
		if !id.CanWrite() {
			c.sendProblem(&protocol.Problem{Code: protocol.CodeForbidden, Message: "read-only access", Seq: &seq})
			return true
		}
		if rs.limiter == nil {
			rs.limiter = rate.NewLimiter(rate.Limit(s.opts.Limits.OpsPerSecond), s.opts.Limits.OpsBurst)
		}
		if !rs.limiter.Allow() {
			c.sendProblem(&protocol.Problem{Code: protocol.CodeRateLimited, Message: "too many operations, slow down", Seq: &seq})
			if rs.strikes++; rs.strikes >= maxStrikes {
				c.close(protocol.CloseRateLimited, "rate limit exceeded")
				c.drain()
				return false
			}
			return true
		}
		rs.strikes = 0
		if n := insertedBytes(m); n > s.opts.Limits.MaxOpBytes {
			// Refused, not closed: the client splits the insert and goes
			// on with this connection.
			c.sendProblem(&protocol.Problem{Code: protocol.CodeTooLarge, Seq: &seq, Message: fmt.Sprintf(
				"operation inserts %d bytes of text, more than the %d one operation may insert (welcome limits.maxOpBytes); split it into several operations", n, s.opts.Limits.MaxOpBytes)})
			return true
		}
		if err := sess.Submit(ctx, m.Seq, m.Rev, m.Op); err != nil {
			c.sendProblem(&protocol.Problem{Code: protocol.CodeUnavailable, Message: "document unavailable, retry", Seq: &seq})
		}
	case *protocol.ClientPresence:
		if rs.cursorLimiter == nil {
			rs.cursorLimiter = rate.NewLimiter(rate.Limit(30), 30)
		}
		if rs.cursorLimiter.Allow() {
			_ = sess.SetCursor(ctx, m.Cursor, m.Rev)
		}
	case *protocol.ClientAuth:
		c.refreshAuth(id, m.Token)
	}
	return true
}

// timedOut reports a connection closed for its missing pongs.
func (c *conn) timedOut() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing && c.closeCode == protocol.CloseTimeout
}

func (c *conn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// setExpiry arranges for the connection to end when its token stops being
// accepted, validFor from now (0: never), replacing an earlier deadline.
func (c *conn) setExpiry(validFor time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.expiry != nil {
		c.expiry.Stop()
		c.expiry = nil
	}
	if validFor <= 0 || c.closing {
		return
	}
	c.expiry = time.AfterFunc(validFor, c.expire)
}

// expire ends a connection whose token is no longer accepted: whatever it
// sends from now on would be on the authority of an expired token.
func (c *conn) expire() {
	c.sendProblem(&protocol.Problem{Code: protocol.CodeUnauthorized, Message: "token expired; reconnect with a fresh token, or send one in an auth message before it expires"})
	c.close(protocol.CloseUnauthorized, "token expired")
}

// refreshAuth takes a fresh token on the open connection. It must be valid
// and name the same document, user and permission as the connection's:
// a refresh extends a session, it does not turn it into another one. A
// refused token changes nothing: the connection keeps its current token
// until that expires.
func (c *conn) refreshAuth(cur auth.Identity, token string) {
	s := c.s
	id, err := s.opts.Auth.Authenticate(token, c.doc)
	if err != nil {
		code := protocol.CodeUnauthorized
		var ae *auth.Error
		if errors.As(err, &ae) && ae.Code == auth.CodeForbidden {
			code = protocol.CodeForbidden
		}
		c.sendProblem(&protocol.Problem{Code: code, Message: "auth refused, the current token stays in force: " + err.Error()})
		return
	}
	id = id.ForClient(c.client)
	switch {
	case id.User.ID != cur.User.ID:
		c.sendProblem(&protocol.Problem{Code: protocol.CodeForbidden, Message: fmt.Sprintf("auth refused: the token is for user %q, this connection is %q's", id.User.ID, cur.User.ID)})
		return
	case id.Perm != cur.Perm:
		c.sendProblem(&protocol.Problem{Code: protocol.CodeForbidden, Message: fmt.Sprintf("auth refused: the token grants %s access, this connection has %s; reconnect with it", id.Perm, cur.Perm)})
		return
	}
	c.setExpiry(id.ValidFor)
	c.send(protocol.NewFrame(protocol.Auth{Type: protocol.TypeAuth, AuthTTLMs: id.ValidFor.Milliseconds()}))
}

// closedByPeer notes that the client ended the connection with code,
// unless the server had begun closing it already.
func (c *conn) closedByPeer(code int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closing && c.closeBy == "" {
		c.closeBy, c.peerClose = metrics.ClosedByClient, code
	}
}

// read returns the next text message; false when the connection ended.
// Binary frames are answered with bad_message.
func (c *conn) read() ([]byte, bool) {
	for {
		kind, data, err := c.ws.ReadMessage()
		if err != nil {
			var ne net.Error
			var ce *websocket.CloseError
			switch {
			case errors.As(err, &ce):
				c.closedByPeer(ce.Code)
			case errors.Is(err, websocket.ErrReadLimit):
				// The library already sent close 1009.
				c.s.opts.Metrics.Errors.WithLabelValues(protocol.CodeTooLarge).Inc()
				c.close(protocol.CloseTooLarge, "message too large")
			case errors.As(err, &ne) && ne.Timeout():
				// No hello in time, or pongs stopped.
				c.close(protocol.CloseTimeout, "timeout")
			default:
				c.closedByPeer(1006) // gone without a close frame
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
