// Package client is a Go client of the document protocol in the Jupiter
// model: at most one operation in flight, later local edits composed into a
// buffer, remote operations transformed against both, and the in-flight
// operation resubmitted with the same seq after a reconnect. Tests, the
// benchmark tool and the distributed-mode tests drive documents through it.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/protocol"
)

// Options configures a Client.
type Options struct {
	// URL is the document's WebSocket endpoint, ws://host/v1/docs/{id}/ws.
	URL string
	// Token is sent in the hello message (may be empty in anonymous mode).
	Token string
	// ClientID is the stable client id; required.
	ClientID string
	// Header is added to the upgrade request (for example an Origin).
	Header http.Header
	// Dialer defaults to websocket.DefaultDialer.
	Dialer *websocket.Dialer
}

// Ack records that operation Seq was committed as revision Rev.
type Ack struct{ Seq, Rev int64 }

// Client is one editor of one document. Its methods are safe for
// concurrent use.
type Client struct {
	opts Options

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every state change
	ws       *websocket.Conn
	writeMu  sync.Mutex
	welcomed bool
	welcome  protocol.Welcome

	hasRev   bool
	rev      int64
	text     string
	inflight *pending
	buffer   ot.Op // composed local edits waiting for the in-flight ack
	nextSeq  int64

	acks     []Ack
	errs     []protocol.Error
	closeErr error
	others   map[string]protocol.Presence
}

type pending struct {
	seq int64
	op  ot.Op
}

// New returns a disconnected client with an empty document.
func New(opts Options) *Client {
	if opts.Dialer == nil {
		opts.Dialer = websocket.DefaultDialer
	}
	return &Client{opts: opts, changed: make(chan struct{}), nextSeq: 1, others: map[string]protocol.Presence{}}
}

// ErrResync means the server sent the full text while local edits were
// pending; they were dropped and the client now mirrors the server.
var ErrResync = errors.New("client: pending edits dropped on full-text resync")

func (c *Client) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Connect dials, says hello with the last known revision, waits for the
// welcome and resubmits the in-flight operation.
func (c *Client) Connect(ctx context.Context) error {
	if c.opts.ClientID == "" {
		return errors.New("client: ClientID is required")
	}
	ws, resp, err := c.opts.Dialer.DialContext(ctx, c.opts.URL, c.opts.Header)
	if err != nil {
		if resp != nil {
			return fmt.Errorf("dial %s: %w (HTTP %d)", c.opts.URL, err, resp.StatusCode)
		}
		return fmt.Errorf("dial %s: %w", c.opts.URL, err)
	}
	c.mu.Lock()
	if c.ws != nil {
		c.mu.Unlock()
		ws.Close()
		return errors.New("client: already connected")
	}
	c.ws = ws
	c.welcomed = false
	c.closeErr = nil
	hello := protocol.Hello{Type: protocol.TypeHello, V: protocol.Version, Token: c.opts.Token, Client: c.opts.ClientID}
	if c.hasRev {
		r := c.rev
		hello.Rev = &r
	}
	c.mu.Unlock()
	if err := c.write(ws, hello); err != nil {
		c.drop(ws, err)
		return err
	}
	go c.readLoop(ws)
	// Wait for the welcome or the end of the connection.
	for {
		c.mu.Lock()
		welcomed, gone, closeErr, ch := c.welcomed, c.ws != ws, c.closeErr, c.changed
		c.mu.Unlock()
		if welcomed {
			return nil
		}
		if gone {
			return fmt.Errorf("connection ended before welcome: %w", closeErr)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			c.drop(ws, ctx.Err())
			return ctx.Err()
		}
	}
}

// Disconnect cuts the connection without a close handshake, as a network
// failure would. Pending edits stay and are resubmitted by Connect.
func (c *Client) Disconnect() {
	c.mu.Lock()
	ws := c.ws
	c.mu.Unlock()
	if ws != nil {
		c.drop(ws, errors.New("disconnected"))
	}
}

// Close ends the connection with a normal close frame.
func (c *Client) Close() {
	c.mu.Lock()
	ws := c.ws
	c.mu.Unlock()
	if ws == nil {
		return
	}
	c.writeMu.Lock()
	_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.writeMu.Unlock()
	c.drop(ws, errors.New("closed"))
}

func (c *Client) drop(ws *websocket.Conn, err error) {
	_ = ws.Close()
	c.mu.Lock()
	if c.ws == ws {
		c.ws = nil
		c.welcomed = false
		c.closeErr = err
		c.notify()
	}
	c.mu.Unlock()
}

func (c *Client) write(ws *websocket.Conn, msg any) error {
	data, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("encode %T: %w", msg, err)
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	_ = ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, data); err != nil {
		return fmt.Errorf("send %T: %w", msg, err)
	}
	return nil
}

// Edit applies a local operation (made on the current local text) and
// sends it when nothing is in flight.
func (c *Client) Edit(op ot.Op) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.editLocked(op)
}

// EditFunc builds a local operation from the current local text and applies
// it atomically: a remote operation cannot slip in between.
func (c *Client) EditFunc(build func(text string) ot.Op) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.editLocked(build(c.text))
}

func (c *Client) editLocked(op ot.Op) error {
	text, err := ot.Apply(c.text, op)
	if err != nil {
		return fmt.Errorf("local edit: %w", err)
	}
	if !c.hasRev {
		return errors.New("client: no document yet (connect first)")
	}
	c.text = text
	switch {
	case c.inflight == nil:
		c.inflight = &pending{seq: c.nextSeq, op: op}
		c.nextSeq++
		c.sendInflightLocked()
	case c.buffer == nil:
		c.buffer = op
	default:
		if c.buffer, err = ot.Compose(c.buffer, op); err != nil {
			return fmt.Errorf("compose local edits: %w", err)
		}
	}
	c.notify()
	return nil
}

// SetCursor sends the local cursor (positions in the local text).
func (c *Client) SetCursor(cur protocol.Cursor) error {
	c.mu.Lock()
	ws, welcomed, rev := c.ws, c.welcomed, c.rev
	c.mu.Unlock()
	if ws == nil || !welcomed {
		return errors.New("client: not connected")
	}
	return c.write(ws, protocol.ClientPresence{Type: protocol.TypePresence, Cursor: &cur, Rev: &rev})
}

// sendInflightLocked sends the in-flight operation if connected; c.mu held.
// A failed write is left to the reader to notice.
func (c *Client) sendInflightLocked() {
	if c.ws == nil || !c.welcomed || c.inflight == nil {
		return
	}
	msg := protocol.ClientOp{Type: protocol.TypeOp, Seq: c.inflight.seq, Rev: c.rev, Op: c.inflight.op}
	ws := c.ws
	go func() {
		if err := c.write(ws, msg); err != nil {
			c.drop(ws, err)
		}
	}()
}

func (c *Client) readLoop(ws *websocket.Conn) {
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			c.drop(ws, err)
			return
		}
		if err := c.handle(ws, data); err != nil {
			c.drop(ws, err)
			return
		}
	}
}

func (c *Client) handle(ws *websocket.Conn, data []byte) error {
	var env struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(data, &env); err != nil {
		return fmt.Errorf("server frame is not JSON: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ws != ws {
		return nil // a message from a connection we already dropped
	}
	defer c.notify()
	switch env.Type {
	case protocol.TypeWelcome:
		var w protocol.Welcome
		if err := json.Unmarshal(data, &w); err != nil {
			return fmt.Errorf("decode welcome: %w", err)
		}
		return c.onWelcome(w)
	case protocol.TypeAck:
		var a protocol.Ack
		if err := json.Unmarshal(data, &a); err != nil {
			return fmt.Errorf("decode ack: %w", err)
		}
		c.onAck(a.Seq, a.Rev)
	case protocol.TypeOp:
		var o protocol.Op
		if err := json.Unmarshal(data, &o); err != nil {
			return fmt.Errorf("decode op: %w", err)
		}
		return c.onOp(o)
	case protocol.TypePresence:
		var p protocol.Presence
		if err := json.Unmarshal(data, &p); err == nil {
			c.others[p.Conn] = p
		}
	case protocol.TypeLeave:
		var l protocol.Leave
		if err := json.Unmarshal(data, &l); err == nil {
			delete(c.others, l.Conn)
		}
	case protocol.TypeError:
		var e protocol.Error
		if err := json.Unmarshal(data, &e); err != nil {
			return fmt.Errorf("decode error: %w", err)
		}
		c.errs = append(c.errs, e)
		if e.Seq != nil && c.inflight != nil && *e.Seq == c.inflight.seq {
			switch e.Code {
			case protocol.CodeUnavailable, protocol.CodeRateLimited:
				// Retryable: reconnecting resubmits it.
				return fmt.Errorf("operation %d refused (%s): reconnect", *e.Seq, e.Code)
			default:
				return fmt.Errorf("operation %d refused: %s: %s", *e.Seq, e.Code, e.Message)
			}
		}
	}
	return nil
}

func (c *Client) onWelcome(w protocol.Welcome) error {
	if w.Text != nil {
		if c.inflight != nil || c.buffer != nil {
			c.inflight, c.buffer = nil, nil
			c.errs = append(c.errs, protocol.Error{Type: protocol.TypeError, Code: "resync", Message: ErrResync.Error()})
		}
		c.text, c.rev, c.hasRev = *w.Text, w.Rev, true
	} else {
		for _, o := range w.Ops {
			if err := c.onOp(o); err != nil {
				return err
			}
		}
		if c.rev != w.Rev {
			return fmt.Errorf("welcome at revision %d but its operations reach %d", w.Rev, c.rev)
		}
	}
	c.others = map[string]protocol.Presence{}
	for _, p := range w.Presence {
		c.others[p.Conn] = p
	}
	c.welcome = w
	c.welcomed = true
	c.sendInflightLocked()
	return nil
}

func (c *Client) onAck(seq, rev int64) {
	if c.inflight == nil || c.inflight.seq != seq {
		return // a repeated ack for an operation already confirmed
	}
	c.acks = append(c.acks, Ack{Seq: seq, Rev: rev})
	c.rev = rev
	c.inflight = nil
	if c.buffer != nil {
		c.inflight = &pending{seq: c.nextSeq, op: c.buffer}
		c.nextSeq++
		c.buffer = nil
		c.sendInflightLocked()
	}
}

func (c *Client) onOp(o protocol.Op) error {
	if o.Client == c.opts.ClientID && c.inflight != nil && o.Seq == c.inflight.seq {
		// Our own operation in a resume list: its ack was lost.
		c.onAck(o.Seq, o.Rev)
		return nil
	}
	if o.Rev <= c.rev {
		return nil
	}
	if o.Rev != c.rev+1 {
		return fmt.Errorf("gap: at revision %d, received %d", c.rev, o.Rev)
	}
	remote := o.Op
	var err error
	if c.inflight != nil {
		var mine ot.Op
		if mine, err = ot.Transform(c.inflight.op, remote, ot.Left); err != nil {
			return fmt.Errorf("transform in-flight op by rev %d: %w", o.Rev, err)
		}
		if remote, err = ot.Transform(remote, c.inflight.op, ot.Right); err != nil {
			return fmt.Errorf("transform rev %d by in-flight op: %w", o.Rev, err)
		}
		c.inflight.op = mine
	}
	if c.buffer != nil {
		var mine ot.Op
		if mine, err = ot.Transform(c.buffer, remote, ot.Left); err != nil {
			return fmt.Errorf("transform buffer by rev %d: %w", o.Rev, err)
		}
		if remote, err = ot.Transform(remote, c.buffer, ot.Right); err != nil {
			return fmt.Errorf("transform rev %d by buffer: %w", o.Rev, err)
		}
		c.buffer = mine
	}
	if c.text, err = ot.Apply(c.text, remote); err != nil {
		return fmt.Errorf("apply rev %d: %w", o.Rev, err)
	}
	c.rev = o.Rev
	return nil
}

// Text returns the local text (server state plus pending local edits).
func (c *Client) Text() string { c.mu.Lock(); defer c.mu.Unlock(); return c.text }

// Rev returns the last server revision the client has.
func (c *Client) Rev() int64 { c.mu.Lock(); defer c.mu.Unlock(); return c.rev }

// Connected reports whether the client is connected and welcomed.
func (c *Client) Connected() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.ws != nil && c.welcomed }

// Synced reports that no local edit awaits acknowledgement.
func (c *Client) Synced() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inflight == nil && c.buffer == nil
}

// Acks returns every acknowledgement received, in order.
func (c *Client) Acks() []Ack {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Ack(nil), c.acks...)
}

// Errors returns the error messages received from the server.
func (c *Client) Errors() []protocol.Error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]protocol.Error(nil), c.errs...)
}

// Welcome returns the last welcome message.
func (c *Client) Welcome() protocol.Welcome { c.mu.Lock(); defer c.mu.Unlock(); return c.welcome }

// Others returns the presence of the other connections, by connection id.
func (c *Client) Others() map[string]protocol.Presence {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]protocol.Presence, len(c.others))
	for k, v := range c.others {
		out[k] = v
	}
	return out
}

// CloseError is why the last connection ended (nil while connected).
func (c *Client) CloseError() error { c.mu.Lock(); defer c.mu.Unlock(); return c.closeErr }

// Send writes a raw message on the current connection (for tests that
// speak the protocol directly).
func (c *Client) Send(msg any) error {
	c.mu.Lock()
	ws := c.ws
	c.mu.Unlock()
	if ws == nil {
		return errors.New("client: not connected")
	}
	return c.write(ws, msg)
}

// WaitFor blocks until cond holds, re-checking it after every change of
// the client's state, or until ctx is done. cond may call the client's
// methods.
func (c *Client) WaitFor(ctx context.Context, cond func() bool) error {
	for {
		c.mu.Lock()
		ch := c.changed
		c.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// WaitSynced waits until every local edit is acknowledged and the client
// has seen revision rev (rev < 0: any).
func (c *Client) WaitSynced(ctx context.Context, rev int64) error {
	err := c.WaitFor(ctx, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.inflight == nil && c.buffer == nil && (rev < 0 || c.rev >= rev)
	})
	if err != nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		return fmt.Errorf("wait for sync (rev %d, want %d, in flight %v, connected %v): %w", c.rev, rev, c.inflight != nil, c.ws != nil, err)
	}
	return nil
}
