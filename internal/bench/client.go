// Package bench drives a running tandem-runtime (or a set of replicas)
// through its public WebSocket protocol to measure latency, throughput,
// memory and persistence costs, and checks after every scenario that all
// clients converged and every submitted operation was acknowledged.
//
// client.go is a Jupiter-model client of the wire protocol (the same model
// as the browser's client.js): at most one operation in flight, later local
// edits composed into a buffer, remote operations transformed against both,
// and a resubmission of the in-flight operation after a reconnect.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/protocol"
	"github.com/tandem-dev/tandem/runtime/rope"
)

// ClientOptions configures one connection.
type ClientOptions struct {
	// BaseURL is the runtime's HTTP base, e.g. http://127.0.0.1:8080.
	BaseURL string
	Doc     string
	// ClientID is the stable client id sent in hello; acks are routed by it.
	ClientID string
	// Token is a bearer JWT; empty for a runtime in anonymous mode.
	Token string
	// OnRemote is called (from the read goroutine, without locks held) for
	// every operation committed by another client, with the time it arrived.
	OnRemote func(op protocol.Op, at time.Time)
	// OnAck is called for every acknowledgement of this client's operations
	// with the time from sending to the ack.
	OnAck func(seq, rev int64, latency time.Duration, at time.Time)
	// OnSend is called when an operation goes out for the first time, with
	// the client's lock held: keep it short and do not call the client.
	OnSend func(seq int64, at time.Time)
	// Reconnects bounds how many times a dropped connection is re-dialled
	// (0: never; the client then fails).
	Reconnects int
	// Dialer may be nil (websocket.DefaultDialer with a 10s handshake timeout).
	Dialer *websocket.Dialer
}

// inflight is the operation sent and not yet acknowledged.
type inflight struct {
	seq  int64
	rev  int64 // the base revision it was sent on
	op   ot.Op
	sent time.Time
	// retries counts resubmissions after "unavailable".
	retries int
}

// Client is one connection to one document.
type Client struct {
	opts ClientOptions

	writeMu sync.Mutex // gorilla allows one concurrent writer
	mu      sync.Mutex
	conn    *websocket.Conn
	text    *rope.Rope
	rev     int64
	seq     int64
	flight  *inflight
	buffer  ot.Op // local edits made while flight is out, composed
	hasBuf  bool
	// Counters for the end-of-scenario checks.
	submitted int64 // operations sent (each seq once; resubmissions not counted)
	retries   int64 // resubmissions after a retryable "unavailable"
	acked     int64
	err       error         // first fatal error (server error message, broken stream)
	idle      chan struct{} // closed when nothing is in flight; replaced on send
	done      chan struct{} // closed when the read loop ends for good
	closing   bool
}

// ErrServer is wrapped by errors the server reported in an error message.
var ErrServer = errors.New("server error")

// Dial connects, sends hello and waits for the welcome.
func Dial(ctx context.Context, opts ClientOptions) (*Client, error) {
	c := &Client{opts: opts, idle: make(chan struct{}), done: make(chan struct{})}
	close(c.idle)
	if err := c.connect(ctx, nil); err != nil {
		return nil, err
	}
	go c.readLoop()
	return c, nil
}

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

// connect dials and handles the welcome. With rev set it resumes: missed
// operations are applied (our own in-flight one counts as acknowledged).
func (c *Client) connect(ctx context.Context, rev *int64) error {
	u, err := WSURL(c.opts.BaseURL, c.opts.Doc)
	if err != nil {
		return err
	}
	d := c.opts.Dialer
	if d == nil {
		d = &websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}
	}
	conn, resp, err := d.DialContext(ctx, u, http.Header{})
	if err != nil {
		if resp != nil {
			return fmt.Errorf("dial %s: %w (HTTP %d)", u, err, resp.StatusCode)
		}
		return fmt.Errorf("dial %s: %w", u, err)
	}
	hello := protocol.Hello{Type: protocol.TypeHello, V: protocol.Version, Token: c.opts.Token, Client: c.opts.ClientID, Rev: rev}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetWriteDeadline(dl)
		_ = conn.SetReadDeadline(dl)
	}
	if err := conn.WriteJSON(hello); err != nil {
		conn.Close()
		return fmt.Errorf("send hello to %s: %w", u, err)
	}
	_, data, err := conn.ReadMessage()
	if err != nil {
		conn.Close()
		return fmt.Errorf("read welcome from %s: %w", u, err)
	}
	_ = conn.SetWriteDeadline(time.Time{})
	_ = conn.SetReadDeadline(time.Time{})
	var w struct {
		protocol.Welcome
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(data, &w); err != nil {
		conn.Close()
		return fmt.Errorf("decode welcome from %s: %w", u, err)
	}
	if w.Type == protocol.TypeError {
		conn.Close()
		return fmt.Errorf("join %q: %w: %s: %s", c.opts.Doc, ErrServer, w.Code, w.Message)
	}
	if w.Type != protocol.TypeWelcome {
		conn.Close()
		return fmt.Errorf("join %q: expected welcome, got %q", c.opts.Doc, w.Type)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn = conn
	switch {
	case w.Text != nil && rev == nil:
		c.text = rope.New(*w.Text)
		c.rev = w.Rev
	case w.Text != nil:
		// Too far behind to resume; what we hold cannot be reconciled
		// without knowing whether the in-flight operation committed.
		conn.Close()
		return fmt.Errorf("resume %q at revision %d: the server sent the full text (revision %d) instead of the missed operations", c.opts.Doc, *rev, w.Rev)
	default:
		for _, op := range w.Ops {
			if err := c.applyServerOp(op, time.Now()); err != nil {
				conn.Close()
				return err
			}
		}
		if w.Rev != c.rev {
			conn.Close()
			return fmt.Errorf("resume %q: welcome says revision %d, replayed operations reach %d", c.opts.Doc, w.Rev, c.rev)
		}
		// Still in flight after the replay: it never committed (or the
		// commit is yet to come); send it again with the same seq, and the
		// server acknowledges it once whichever way it went.
		if f := c.flight; f != nil {
			f.rev = c.rev
			if err := c.writeLocked(protocol.ClientOp{Type: protocol.TypeOp, Seq: f.seq, Rev: f.rev, Op: f.op}); err != nil {
				conn.Close()
				return err
			}
		}
	}
	return nil
}

func (c *Client) writeLocked(msg any) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := c.conn.WriteJSON(msg); err != nil {
		return fmt.Errorf("send to %q: %w", c.opts.Doc, err)
	}
	return nil
}

func (c *Client) readLoop() {
	defer close(c.done)
	reconnects := 0
	for {
		c.mu.Lock()
		conn := c.conn
		c.mu.Unlock()
		err := c.readConn(conn)
		c.mu.Lock()
		closing, fatal := c.closing, c.err
		c.mu.Unlock()
		if closing || fatal != nil {
			return
		}
		if reconnects >= c.opts.Reconnects {
			c.fail(fmt.Errorf("connection to %q lost: %w", c.opts.Doc, err))
			return
		}
		reconnects++
		var rerr error
		for attempt := 0; attempt < 20; attempt++ {
			time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
			c.mu.Lock()
			rev := c.rev
			c.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			rerr = c.connect(ctx, &rev)
			cancel()
			if rerr == nil {
				break
			}
		}
		if rerr != nil {
			c.fail(fmt.Errorf("reconnect to %q: %w", c.opts.Doc, rerr))
			return
		}
	}
}

// readConn handles messages until the connection fails.
func (c *Client) readConn(conn *websocket.Conn) error {
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return err
		}
		at := time.Now()
		// One decode per message: the load tool must not be the bottleneck
		// it measures, and every field of op, ack and error fits here.
		var m struct {
			Type    string `json:"type"`
			Code    string `json:"code"`
			Message string `json:"message"`
			Seq     int64  `json:"seq"`
			Rev     int64  `json:"rev"`
			Op      ot.Op  `json:"op"`
			Client  string `json:"client"`
			// A string in op messages, an object in presence ones.
			User json.RawMessage `json:"user"`
		}
		if err := json.Unmarshal(data, &m); err != nil {
			c.fail(fmt.Errorf("doc %q: undecodable message %q: %w", c.opts.Doc, data, err))
			conn.Close()
			return err
		}
		switch m.Type {
		case protocol.TypeOp:
			op := protocol.Op{Type: m.Type, Rev: m.Rev, Op: m.Op, Client: m.Client, Seq: m.Seq}
			if len(m.User) > 0 {
				_ = json.Unmarshal(m.User, &op.User)
			}
			c.mu.Lock()
			err := c.applyServerOp(op, at)
			c.mu.Unlock()
			if err != nil {
				c.fail(err)
				conn.Close()
				return err
			}
			if c.opts.OnRemote != nil && op.Client != c.opts.ClientID {
				c.opts.OnRemote(op, at)
			}
		case protocol.TypeAck:
			if err := c.handleAck(m.Seq, m.Rev, at); err != nil {
				c.fail(err)
				conn.Close()
				return err
			}
		case protocol.TypeError:
			if m.Code == protocol.CodeUnavailable && m.Seq > 0 && c.retryLater(m.Seq) {
				// Retryable by contract (storage contended or briefly
				// down): the operation stays in flight and goes out again.
				continue
			}
			err := fmt.Errorf("doc %q: %w: %s: %s", c.opts.Doc, ErrServer, m.Code, m.Message)
			c.fail(err)
			conn.Close()
			return err
		default:
			// presence, leave: not needed for the measurements.
		}
	}
}

// applyServerOp applies a committed operation received from the server (an
// op message or a replayed welcome entry). Our own entry counts as an ack.
// Called with c.mu held.
func (c *Client) applyServerOp(op protocol.Op, at time.Time) error {
	if op.Rev != c.rev+1 {
		if c.flight != nil && op.Rev > c.rev+1 {
			// The usual cause: the ack of our operation was lost, and its
			// revision is the hole.
			return fmt.Errorf("doc %q: operation for revision %d arrived at revision %d (gap or reorder): our operation seq %d was never acknowledged",
				c.opts.Doc, op.Rev, c.rev, c.flight.seq)
		}
		return fmt.Errorf("doc %q: operation for revision %d arrived at revision %d (gap or reorder)", c.opts.Doc, op.Rev, c.rev)
	}
	if op.Client == c.opts.ClientID {
		if c.flight == nil || c.flight.seq != op.Seq {
			return fmt.Errorf("doc %q: server sent our own operation seq %d that is not in flight", c.opts.Doc, op.Seq)
		}
		c.mu.Unlock()
		err := c.handleAck(op.Seq, op.Rev, at)
		c.mu.Lock()
		return err
	}
	remote := op.Op
	var err error
	if c.flight != nil {
		// The server commits our in-flight operation after this one and
		// transforms it with ot.Left (its inserts first on ties), so this
		// one goes after ours: Right.
		f := c.flight.op
		if c.flight.op, err = ot.Transform(f, remote, ot.Left); err != nil {
			return fmt.Errorf("doc %q: transform in-flight op against revision %d: %w", c.opts.Doc, op.Rev, err)
		}
		if remote, err = ot.Transform(remote, f, ot.Right); err != nil {
			return fmt.Errorf("doc %q: transform revision %d against in-flight op: %w", c.opts.Doc, op.Rev, err)
		}
		if c.hasBuf {
			b := c.buffer
			if c.buffer, err = ot.Transform(b, remote, ot.Left); err != nil {
				return fmt.Errorf("doc %q: transform buffer against revision %d: %w", c.opts.Doc, op.Rev, err)
			}
			if remote, err = ot.Transform(remote, b, ot.Right); err != nil {
				return fmt.Errorf("doc %q: transform revision %d against buffer: %w", c.opts.Doc, op.Rev, err)
			}
		}
	}
	if err := c.text.Apply(remote); err != nil {
		return fmt.Errorf("doc %q: apply revision %d: %w", c.opts.Doc, op.Rev, err)
	}
	c.rev = op.Rev
	return nil
}

func (c *Client) handleAck(seq, rev int64, at time.Time) error {
	c.mu.Lock()
	f := c.flight
	if f == nil || f.seq != seq {
		c.mu.Unlock()
		return fmt.Errorf("doc %q: ack for seq %d that is not in flight", c.opts.Doc, seq)
	}
	if rev != c.rev+1 {
		c.mu.Unlock()
		return fmt.Errorf("doc %q: ack of seq %d as revision %d at revision %d", c.opts.Doc, seq, rev, c.rev)
	}
	c.rev = rev
	c.flight = nil
	c.acked++
	var sendErr error
	if c.hasBuf {
		sendErr = c.sendLocked(c.buffer)
		c.buffer, c.hasBuf = nil, false
	} else {
		close(c.idle)
	}
	c.mu.Unlock()
	if c.opts.OnAck != nil {
		c.opts.OnAck(seq, rev, at.Sub(f.sent), at)
	}
	return sendErr
}

// sendLocked puts op in flight. Called with c.mu held and no flight.
func (c *Client) sendLocked(op ot.Op) error {
	c.seq++
	now := time.Now()
	c.flight = &inflight{seq: c.seq, rev: c.rev, op: op, sent: now}
	c.submitted++
	if c.opts.OnSend != nil {
		c.opts.OnSend(c.seq, now)
	}
	return c.writeLocked(protocol.ClientOp{Type: protocol.TypeOp, Seq: c.seq, Rev: c.rev, Op: op})
}

// maxRetries bounds the resubmissions of one operation refused with
// "unavailable" before the client gives up.
const maxRetries = 20

// retryLater resends the in-flight operation seq after a short backoff,
// on the current revision with its transformed form (the server would
// acknowledge a duplicate once, should the first attempt have committed
// after all). False when seq is not in flight or retries are exhausted.
func (c *Client) retryLater(seq int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.flight
	if f == nil || f.seq != seq || c.closing {
		return false
	}
	f.retries++
	if f.retries > maxRetries {
		return false
	}
	c.retries++
	delay := time.Duration(f.retries) * time.Duration(1+rand.IntN(10)) * time.Millisecond
	time.AfterFunc(delay, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.flight != f || c.closing || c.err != nil {
			return
		}
		f.rev = c.rev
		if err := c.writeLocked(protocol.ClientOp{Type: protocol.TypeOp, Seq: f.seq, Rev: f.rev, Op: f.op}); err != nil {
			c.err = err
		}
	})
	return true
}

// Edit applies a local edit built from the current text length and submits
// it (or composes it into the buffer while another operation is in
// flight). It returns the seq the edit went out with, or 0 when buffered.
func (c *Client) Edit(build func(length int) ot.Op) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	op := build(c.text.Len())
	if err := c.text.Apply(op); err != nil {
		return 0, fmt.Errorf("doc %q: local edit: %w", c.opts.Doc, err)
	}
	if c.flight == nil {
		c.idle = make(chan struct{})
		if err := c.sendLocked(op); err != nil {
			return 0, err
		}
		return c.seq, nil
	}
	if !c.hasBuf {
		c.buffer, c.hasBuf = op, true
		return 0, nil
	}
	composed, err := ot.Compose(c.buffer, op)
	if err != nil {
		return 0, fmt.Errorf("doc %q: compose local edits: %w", c.opts.Doc, err)
	}
	c.buffer = composed
	return 0, nil
}

// WaitIdle waits until nothing is in flight or buffered.
func (c *Client) WaitIdle(ctx context.Context) error {
	for {
		c.mu.Lock()
		idle, err := c.idle, c.err
		c.mu.Unlock()
		if err != nil {
			return err
		}
		select {
		case <-idle:
			c.mu.Lock()
			again := c.flight != nil
			err := c.err
			c.mu.Unlock()
			if err != nil {
				return err
			}
			if !again {
				return nil
			}
		case <-c.done:
			c.mu.Lock()
			err := c.err
			c.mu.Unlock()
			if err == nil {
				err = fmt.Errorf("doc %q: connection closed", c.opts.Doc)
			}
			return err
		case <-ctx.Done():
			c.mu.Lock()
			f := c.flight
			c.mu.Unlock()
			if f != nil {
				return fmt.Errorf("doc %q client %s: operation seq %d (sent %s ago) was never acknowledged: %w",
					c.opts.Doc, c.opts.ClientID, f.seq, time.Since(f.sent).Round(time.Millisecond), ctx.Err())
			}
			return ctx.Err()
		}
	}
}

func (c *Client) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil && !c.closing {
		c.err = err
	}
}

// State is a client's view at one moment.
type State struct {
	Text      string
	Rev       int64
	Submitted int64
	Acked     int64
	Pending   bool // an operation in flight or buffered
	Retries   int64
	Err       error
}

// State returns the client's current view.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return State{Text: c.text.String(), Rev: c.rev, Submitted: c.submitted, Acked: c.acked,
		Pending: c.flight != nil || c.hasBuf, Retries: c.retries, Err: c.err}
}

// Rev returns the revision the client's text is at (without pending edits).
func (c *Client) Rev() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rev
}

// Err returns the first fatal error, if any.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection normally and waits for the read loop.
func (c *Client) Close() {
	c.mu.Lock()
	c.closing = true
	conn := c.conn
	c.mu.Unlock()
	c.writeMu.Lock()
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(protocol.CloseNormal, ""), time.Now().Add(time.Second))
	c.writeMu.Unlock()
	_ = conn.Close()
	<-c.done
}
