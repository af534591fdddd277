// Package client is a Go client of the document protocol in the Jupiter
// model: at most one operation in flight, later local edits composed into a
// buffer, remote operations transformed against both, and the in-flight
// operation resubmitted with the same seq after a reconnect. Tests, the load
// tool (cmd/tandem-bench) and the distributed-mode tests drive documents
// through it.
//
// The local text is a rope: a local edit or a remote operation costs time
// logarithmic in the document's length, and nothing copies the whole text
// except the calls that return it (Text, Snapshot, EditFunc).
//
// Beyond the protocol's minimum the client can resend an operation the
// server refused as retryable (unavailable, rate_limited) after a short
// backoff, or rebased on a newer revision after bad_revision
// (Options.MaxRetries), re-establish a lost connection by itself
// (Options.Reconnects), and report every first send, acknowledgement and
// remote operation with its time (Options.OnSend, OnAck, OnRemote), which is
// what a load generator measures latency with.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/protocol"
	"github.com/tandem-dev/tandem/runtime/rope"
)

// Options configures a Client.
type Options struct {
	// URL is the document's WebSocket endpoint, ws://host/v1/docs/{id}/ws.
	URL string
	// Token is sent in the hello message (may be empty in anonymous mode).
	Token string
	// RefreshToken, optional, returns a fresh token. The client calls it
	// before the connection's token expires (the welcome says when) and
	// hands the result to the server in an auth message, so the connection
	// outlives short-lived tokens; and, when a connection was closed as
	// unauthorized (4001), before re-dialling (Options.Reconnects). It runs
	// on a goroutine of its own, never with the client's lock held.
	RefreshToken func(ctx context.Context) (string, error)
	// ClientID is the stable client id; required.
	ClientID string
	// Header is added to the upgrade request (for example an Origin).
	Header http.Header
	// Dialer defaults to websocket.DefaultDialer. Many connections share
	// one; smaller buffers keep idle connections cheap.
	Dialer *websocket.Dialer

	// Reconnects bounds how many times over the client's life a lost
	// connection is re-established by the client itself: it re-dials with
	// a delay growing to 5 s for up to 5 minutes, resumes from its revision and
	// resubmits the in-flight operation. 0, the default, never: the caller
	// reconnects with Connect. A close that retrying cannot fix
	// (unauthorized, forbidden, protocol violation) is not re-dialled.
	Reconnects int
	// MaxRetries bounds how many times one operation the server refused as
	// retryable (unavailable, rate_limited, and bad_revision, after which it
	// goes on the current revision; see docs/protocol.md) is sent again on
	// the same connection after a short backoff. When they are used
	// up the connection is dropped, as for any other refusal of the
	// in-flight operation; a reconnect then resubmits it. 0 means
	// DefaultMaxRetries; negative means no resending.
	MaxRetries int
	// DiscardAcks stops the client from keeping every acknowledgement for
	// Acks, so that a long-lived client's memory does not grow with every
	// edit (OnAck sees them all the same).
	DiscardAcks bool

	// The callbacks below are optional. They run on the goroutine that
	// caused them (the connection's reader, or the caller of Edit) and
	// never with the client's lock held, so they may call the client's
	// methods, except Close, which waits for the client's goroutines. Keep
	// them short: the connection is not read while one runs.

	// OnSend is called when an operation goes out for the first time (not
	// when it is resent after a refusal or a reconnect), before it is
	// written, with its seq and the time its latency is measured from. So
	// OnSend of a seq runs before its OnAck, unless a reconnection resends
	// the operation while its first send is still being written.
	OnSend func(seq int64, at time.Time)
	// OnAck is called for every acknowledgement of this client's
	// operations (including its own operation found in a resume list), with
	// the revision it was committed as, the time since it was first sent,
	// and the time the acknowledgement arrived.
	OnAck func(seq, rev int64, latency time.Duration, at time.Time)
	// OnRemote is called for every operation of another client that the
	// client applies, live or replayed in a welcome, as the server sent it
	// (before it is transformed against local pending edits), with the time
	// its message arrived.
	OnRemote func(op protocol.Op, at time.Time)
}

// DefaultMaxRetries is Options.MaxRetries when unset.
const DefaultMaxRetries = 20

const (
	// reconnectFor bounds one automatic reconnection: it re-dials until a
	// welcome arrives or this long has passed. A rolling update, a runtime
	// pod rescheduled or a store restarting behind the server can each
	// take a minute or more.
	reconnectFor = 5 * time.Minute
	// reconnectMaxDelay caps the pause between two dials; it grows from
	// 100 ms, doubling, with jitter so that clients cut off together do
	// not all come back together.
	reconnectMaxDelay = 5 * time.Second
	// dialTimeout bounds one automatic dial and handshake.
	dialTimeout = 10 * time.Second
	// writeTimeout bounds one write; a peer that does not read for that
	// long is treated as gone.
	writeTimeout = 10 * time.Second
	// maxErrors bounds the server errors kept for Errors.
	maxErrors = 100
	// maxKeptBuffer is the largest read or write buffer kept between
	// messages: a large welcome must not stay allocated on an idle client.
	maxKeptBuffer = 8 << 10
)

// Ack records that operation Seq was committed as revision Rev.
type Ack struct{ Seq, Rev int64 }

// Stats are a client's counters since New.
type Stats struct {
	// Submitted counts operations sent, each seq once however often it was
	// resent.
	Submitted int64
	// Acked counts acknowledgements of this client's operations.
	Acked int64
	// Retries counts resends of an operation refused as retryable.
	Retries int64
	// Reconnects counts automatic reconnections begun.
	Reconnects int64
}

// Client is one editor of one document. Its methods are safe for
// concurrent use.
type Client struct {
	opts       Options
	maxRetries int

	mu      sync.Mutex
	changed chan struct{} // made by a waiter, closed on the next state change
	// callbacks counts handled messages whose callbacks have not run yet.
	callbacks int
	ws        *websocket.Conn
	welcomed  bool
	welcome   protocol.Welcome
	token     string // sent in hello: Options.Token, then the last refreshed one
	// connDone is closed when the current connection ends; authTTL
	// carries the server's confirmations of refreshed tokens to the
	// connection's refresher.
	connDone chan struct{}
	authTTL  chan time.Duration
	userID   string // who the server says this client is (from the welcome)
	// reconnecting is set while an automatic reconnection runs; cancel
	// stops it.
	reconnecting    bool
	cancelReconnect context.CancelFunc
	closed          bool // Close was called (and Connect not since)

	hasRev      bool
	rev         int64
	text        *rope.Rope
	hasInflight bool
	inflight    pending
	buffer      ot.Op // composed local edits waiting for the in-flight ack; nil: none
	nextSeq     int64

	stats    Stats
	acks     []Ack
	errs     []protocol.Error
	closeErr error
	others   map[string]protocol.Presence

	wg sync.WaitGroup // readers and the reconnection

	writeMu sync.Mutex // one writer at a time, as gorilla requires
	wbuf    []byte     // encoding of the op message being written; under writeMu
}

type pending struct {
	seq     int64
	op      ot.Op
	sent    time.Time // first send; zero until then
	retries int       // resends after retryable refusals
	rev     int64     // the revision it was last sent on
}

// New returns a disconnected client with an empty document.
func New(opts Options) *Client {
	if opts.Dialer == nil {
		opts.Dialer = websocket.DefaultDialer
	}
	maxRetries := opts.MaxRetries
	switch {
	case maxRetries == 0:
		maxRetries = DefaultMaxRetries
	case maxRetries < 0:
		maxRetries = 0
	}
	return &Client{opts: opts, maxRetries: maxRetries, token: opts.Token, text: rope.New(""), nextSeq: 1, others: map[string]protocol.Presence{}}
}

// ErrResync means the server sent the full text while local edits were
// pending; they were dropped and the client now mirrors the server.
var ErrResync = errors.New("client: pending edits dropped on full-text resync")

// ErrClosed is Err after Close.
var ErrClosed = errors.New("client: closed")

// notify wakes every waiter; c.mu held. The channel is only made when
// someone waits, so a message nobody waits for costs no allocation.
func (c *Client) notify() {
	if c.changed != nil {
		close(c.changed)
		c.changed = nil
	}
}

// changedLocked returns the channel closed on the next change; c.mu held.
func (c *Client) changedLocked() <-chan struct{} {
	if c.changed == nil {
		c.changed = make(chan struct{})
	}
	return c.changed
}

// Connect dials, says hello with the last known revision, waits for the
// welcome and resubmits the in-flight operation. It fails while an
// automatic reconnection runs.
func (c *Client) Connect(ctx context.Context) error {
	return c.connect(ctx, false)
}

func (c *Client) connect(ctx context.Context, auto bool) error {
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
	switch {
	case c.ws != nil:
		c.mu.Unlock()
		ws.Close()
		return errors.New("client: already connected")
	case auto && c.closed:
		c.mu.Unlock()
		ws.Close()
		return ErrClosed
	case !auto && c.reconnecting:
		c.mu.Unlock()
		ws.Close()
		return errors.New("client: reconnecting by itself (Options.Reconnects)")
	}
	c.closed = false
	c.ws = ws
	c.welcomed = false
	c.closeErr = nil
	c.connDone = make(chan struct{})
	c.authTTL = make(chan time.Duration, 1)
	hello := protocol.Hello{Type: protocol.TypeHello, V: protocol.Version, Token: c.token, Client: c.opts.ClientID}
	if c.hasRev {
		r := c.rev
		hello.Rev = &r
	}
	// The reader is counted while c.mu is held, so Close cannot be between
	// its check of c.closed and its wait.
	c.wg.Add(1)
	c.mu.Unlock()
	if err := c.write(ws, hello); err != nil {
		c.wg.Done()
		c.lost(ws, err)
		return err
	}
	go c.readLoop(ws)
	// Wait for the welcome or the end of the connection.
	for {
		c.mu.Lock()
		welcomed, gone, closeErr := c.welcomed, c.ws != ws, c.closeErr
		ch := c.changedLocked()
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
			c.lost(ws, ctx.Err())
			return fmt.Errorf("wait for welcome from %s: %w", c.opts.URL, ctx.Err())
		}
	}
}

// Disconnect cuts the connection without a close handshake, as a network
// failure would. Pending edits stay and are resubmitted by Connect (or by
// the client itself, with Options.Reconnects).
func (c *Client) Disconnect() {
	c.mu.Lock()
	ws := c.ws
	c.mu.Unlock()
	if ws != nil {
		c.lost(ws, errors.New("disconnected"))
	}
}

// Close ends the connection with a normal close frame, stops an automatic
// reconnection and waits for the client's goroutines: no callback runs
// after it returns (so a callback must not call it). Connect may be called
// again.
func (c *Client) Close() {
	c.mu.Lock()
	c.closed = true
	ws := c.ws
	if c.cancelReconnect != nil {
		c.cancelReconnect()
	}
	c.mu.Unlock()
	if ws != nil {
		c.writeMu.Lock()
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		c.writeMu.Unlock()
		c.lost(ws, ErrClosed)
	}
	c.wg.Wait()
}

// lost ends connection ws (if it is still the current one) because of err,
// and starts an automatic reconnection when one is due.
func (c *Client) lost(ws *websocket.Conn, err error) {
	_ = ws.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ws != ws {
		return
	}
	wasWelcomed := c.welcomed
	c.ws = nil
	c.welcomed = false
	c.closeErr = err
	close(c.connDone)
	c.notify()
	// Only an established connection is re-dialled here: a dial that
	// fails before its welcome is its caller's (or the reconnection
	// loop's) to retry.
	if c.closed || !wasWelcomed || c.reconnecting || c.stats.Reconnects >= int64(c.opts.Reconnects) || c.permanent(err) {
		return
	}
	c.stats.Reconnects++
	c.reconnecting = true
	ctx, cancel := context.WithCancel(context.Background())
	c.cancelReconnect = cancel
	c.wg.Add(1)
	go c.reconnect(ctx, cancel)
}

// reconnect re-dials with a growing delay until a welcome arrives,
// reconnectFor has passed, the server refuses for good or Close cancels it.
func (c *Client) reconnect(ctx context.Context, cancel context.CancelFunc) {
	defer c.wg.Done()
	defer cancel()
	var err error
	// Closed for an expired token: dial with a fresh one.
	needToken := c.opts.RefreshToken != nil && unauthorized(c.CloseError())
	start := time.Now()
	for attempt := 0; ; attempt++ {
		delay := min(100*time.Millisecond<<min(attempt, 6), reconnectMaxDelay)
		delay += time.Duration(rand.Int64N(int64(delay) / 4))
		if attempt > 0 && time.Since(start)+delay > reconnectFor {
			break
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			c.endReconnect(nil)
			return
		}
		dctx, dcancel := context.WithTimeout(ctx, dialTimeout)
		err = nil
		if needToken {
			if err = c.refreshToken(dctx); err == nil {
				needToken = false
			}
		}
		if err == nil {
			err = c.connect(dctx, true)
			needToken = c.opts.RefreshToken != nil && unauthorized(err)
		}
		dcancel()
		if err == nil {
			return // the welcome ended the reconnection
		}
		if ctx.Err() != nil {
			c.endReconnect(nil)
			return
		}
		if c.permanent(err) {
			break
		}
	}
	c.endReconnect(fmt.Errorf("reconnect to %s: %w", c.opts.URL, err))
}

// endReconnect marks a reconnection over without a welcome.
func (c *Client) endReconnect(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reconnecting = false
	c.cancelReconnect = nil
	if err != nil && c.ws == nil {
		c.closeErr = err
	}
	c.notify()
}

// permanent reports a connection end that re-dialling cannot fix. An
// unauthorized close is one unless a fresh token can be had.
func (c *Client) permanent(err error) bool {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		switch ce.Code {
		case protocol.CloseUnauthorized:
			return c.opts.RefreshToken == nil
		case protocol.CloseForbidden, protocol.CloseBadMessage:
			return true
		}
	}
	return errors.Is(err, ErrClosed)
}

// unauthorized reports a connection closed with 4001.
func unauthorized(err error) bool {
	var ce *websocket.CloseError
	return errors.As(err, &ce) && ce.Code == protocol.CloseUnauthorized
}

// refreshToken gets a fresh token from Options.RefreshToken for the next
// hello and auth message.
func (c *Client) refreshToken(ctx context.Context) error {
	tok, err := c.opts.RefreshToken(ctx)
	if err != nil {
		return fmt.Errorf("refresh token: %w", err)
	}
	c.mu.Lock()
	c.token = tok
	c.mu.Unlock()
	return nil
}

// refreshMargin is how long before its token expires a connection asks for
// a fresh one: a fifth of the token's remaining life, at most a minute.
func refreshMargin(ttl time.Duration) time.Duration { return min(ttl/5, time.Minute) }

// refresher keeps connection ws authorized: shortly before its token
// expires it gets a fresh one and sends it in an auth message; the
// server's confirmation says when that one expires. It ends with the
// connection.
func (c *Client) refresher(ws *websocket.Conn, done <-chan struct{}, confirmed <-chan time.Duration, ttl time.Duration) {
	defer c.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-done:
			cancel()
		case <-ctx.Done():
		}
	}()
	deadline := time.Now().Add(ttl)
	wait := ttl - refreshMargin(ttl)
	for {
		t := time.NewTimer(wait)
		select {
		case <-done:
			t.Stop()
			return
		case <-t.C:
		}
		rctx, rcancel := context.WithTimeout(ctx, dialTimeout)
		err := c.refreshToken(rctx)
		rcancel()
		if err == nil {
			c.mu.Lock()
			tok := c.token
			c.mu.Unlock()
			err = c.write(ws, protocol.ClientAuth{Type: protocol.TypeAuth, Token: tok})
		}
		if err == nil {
			t := time.NewTimer(dialTimeout)
			select {
			case <-done:
				t.Stop()
				return
			case ttl = <-confirmed:
				t.Stop()
				deadline = time.Now().Add(ttl)
				wait = ttl - refreshMargin(ttl)
				continue
			case <-t.C:
				err = errors.New("no confirmation of the refreshed token")
			}
		}
		// Refused or failed: try again soon, while the token lasts.
		c.mu.Lock()
		c.recordError(protocol.Error{Type: protocol.TypeError, Code: "refresh", Message: err.Error()})
		c.mu.Unlock()
		wait = max(min(time.Until(deadline)/2, 5*time.Second), 100*time.Millisecond)
	}
}

func (c *Client) write(ws *websocket.Conn, msg any) error {
	data, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("encode %T: %w", msg, err)
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	_ = ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := ws.WriteMessage(websocket.TextMessage, data); err != nil {
		return fmt.Errorf("send %T: %w", msg, err)
	}
	return nil
}

// outgoing is an operation to write once c.mu is released.
type outgoing struct {
	ws       *websocket.Conn // nil: nothing to send
	seq, rev int64
	op       ot.Op
	first    bool      // its first send: call OnSend
	at       time.Time // of the first send
}

// sendLocked returns the in-flight operation to send, if connected; c.mu
// held. The first send is stamped (and counted) here, under the lock, so
// that a reconnection racing with it counts as a resend.
func (c *Client) sendLocked() outgoing {
	if c.ws == nil || !c.welcomed || !c.hasInflight {
		return outgoing{}
	}
	p := &c.inflight
	p.rev = c.rev
	o := outgoing{ws: c.ws, seq: p.seq, rev: c.rev, op: p.op}
	if p.sent.IsZero() {
		p.sent = time.Now()
		c.stats.Submitted++
		o.first, o.at = true, p.sent
	}
	return o
}

// transmit calls OnSend for a first send and writes the operation; c.mu not
// held. A failed write ends the connection.
func (c *Client) transmit(o outgoing) {
	if o.ws == nil {
		return
	}
	if o.first && c.opts.OnSend != nil {
		c.opts.OnSend(o.seq, o.at)
	}
	if err := c.writeOp(o.ws, o.seq, o.rev, o.op); err != nil {
		c.lost(o.ws, err)
	}
}

// writeOp writes an op message, encoded by hand into a buffer reused
// between operations.
func (c *Client) writeOp(ws *websocket.Conn, seq, rev int64, op ot.Op) error {
	opJSON, err := op.MarshalJSON()
	if err != nil {
		return fmt.Errorf("encode operation %d: %w", seq, err)
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	b := append(c.wbuf[:0], `{"type":"op","seq":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"rev":`...)
	b = strconv.AppendInt(b, rev, 10)
	b = append(b, `,"op":`...)
	b = append(b, opJSON...)
	b = append(b, '}')
	if cap(b) <= maxKeptBuffer {
		c.wbuf = b
	}
	_ = ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
		return fmt.Errorf("send operation %d: %w", seq, err)
	}
	return nil
}

// Edit applies a local operation (made on the current local text) and
// sends it when nothing is in flight.
func (c *Client) Edit(op ot.Op) error {
	c.mu.Lock()
	o, err := c.editLocked(op)
	c.mu.Unlock()
	c.transmit(o)
	return err
}

// EditFunc builds a local operation from the current local text and applies
// it atomically: a remote operation cannot slip in between. It copies the
// whole text for build; EditLen does not.
func (c *Client) EditFunc(build func(text string) ot.Op) error {
	c.mu.Lock()
	o, err := c.editLocked(build(c.text.String()))
	c.mu.Unlock()
	c.transmit(o)
	return err
}

// EditLen is EditFunc for an operation that depends only on the length of
// the local text in code points (typing at the end, an edit at a random
// position); it costs no copy of the text. build runs with the client's
// lock held and must not call the client.
func (c *Client) EditLen(build func(length int) ot.Op) error {
	c.mu.Lock()
	o, err := c.editLocked(build(c.text.Len()))
	c.mu.Unlock()
	c.transmit(o)
	return err
}

func (c *Client) editLocked(op ot.Op) (outgoing, error) {
	if !c.hasRev {
		return outgoing{}, errors.New("client: no document yet (connect first)")
	}
	if err := c.text.Apply(op); err != nil {
		return outgoing{}, fmt.Errorf("local edit: %w", err)
	}
	defer c.notify()
	switch {
	case !c.hasInflight:
		c.inflight = pending{seq: c.nextSeq, op: op}
		c.hasInflight = true
		c.nextSeq++
		return c.sendLocked(), nil
	case c.buffer == nil:
		c.buffer = op
	default:
		composed, err := ot.Compose(c.buffer, op)
		if err != nil {
			return outgoing{}, fmt.Errorf("compose local edits: %w", err)
		}
		c.buffer = composed
	}
	return outgoing{}, nil
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

func (c *Client) readLoop(ws *websocket.Conn) {
	defer c.wg.Done()
	var buf bytes.Buffer
	for {
		_, r, err := ws.NextReader()
		if err != nil {
			c.lost(ws, err)
			return
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			c.lost(ws, err)
			return
		}
		at := time.Now()
		eff, err := c.handle(ws, buf.Bytes(), at)
		if err != nil {
			eff.send = outgoing{} // the connection ends: a reconnect resends
		}
		c.after(eff, at)
		if err != nil {
			c.lost(ws, err)
			return
		}
		if buf.Cap() > maxKeptBuffer {
			buf = bytes.Buffer{}
		}
	}
}

// effects are what handling one message leaves to do once c.mu is released.
type effects struct {
	acked          bool
	ackSeq, ackRev int64
	ackLatency     time.Duration
	remote         protocol.Op // a live remote operation, when hasRemote
	hasRemote      bool
	replayed       []protocol.Op // remote operations applied from a welcome
	send           outgoing
	counted        bool // in c.callbacks until after has run the callbacks
}

// hasCallbacks reports whether after will call one of opts' callbacks.
func (eff *effects) hasCallbacks(opts Options) bool {
	return (eff.acked && opts.OnAck != nil) ||
		(opts.OnRemote != nil && (eff.hasRemote || len(eff.replayed) > 0))
}

// after runs the callbacks and the write left by handle; c.mu not held.
func (c *Client) after(eff effects, at time.Time) {
	if eff.acked && c.opts.OnAck != nil {
		c.opts.OnAck(eff.ackSeq, eff.ackRev, eff.ackLatency, at)
	}
	if c.opts.OnRemote != nil {
		for _, o := range eff.replayed {
			c.opts.OnRemote(o, at)
		}
		if eff.hasRemote {
			c.opts.OnRemote(eff.remote, at)
		}
	}
	if eff.counted {
		c.mu.Lock()
		c.callbacks--
		c.notify()
		c.mu.Unlock()
	}
	c.transmit(eff.send)
}

// serverMessage holds every field of the messages that come once per
// operation (op, ack, error), so each is decoded in one pass; the rare
// ones (welcome, presence, leave) are decoded again into their own types.
type serverMessage struct {
	Type    string    `json:"type"`
	Seq     int64     `json:"seq"` // >= 1 when present
	Rev     int64     `json:"rev"`
	Op      ot.Op     `json:"op"`
	Client  string    `json:"client"`
	User    userField `json:"user"`
	Code    string    `json:"code"`
	Message string    `json:"message"`
}

// userField is the "user" of an op message, a string; the object that
// presence and welcome messages carry there is skipped.
type userField string

func (u *userField) UnmarshalJSON(b []byte) error {
	if len(b) < 2 || b[0] != '"' {
		return nil
	}
	if bytes.IndexByte(b, '\\') < 0 {
		// The decoder has checked the syntax: no escapes, no work.
		*u = userField(b[1 : len(b)-1])
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*u = userField(s)
	return nil
}

func (c *Client) handle(ws *websocket.Conn, data []byte, at time.Time) (eff effects, err error) {
	var m serverMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return eff, fmt.Errorf("undecodable server message %.200q: %w", data, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ws != ws {
		return eff, nil // a message from a connection we already dropped
	}
	defer c.notify()
	defer func() {
		// Counted until after has run them, so WaitSynced returns only
		// once the callbacks of what it waited for have run.
		if eff.hasCallbacks(c.opts) {
			eff.counted = true
			c.callbacks++
		}
	}()
	switch m.Type {
	case protocol.TypeWelcome:
		var w protocol.Welcome
		if err := json.Unmarshal(data, &w); err != nil {
			return eff, fmt.Errorf("decode welcome: %w", err)
		}
		return eff, c.onWelcome(w, at, &eff)
	case protocol.TypeAck:
		return eff, c.onAck(m.Seq, m.Rev, at, &eff)
	case protocol.TypeOp:
		o := protocol.Op{Type: m.Type, Rev: m.Rev, Op: m.Op, Client: m.Client, Seq: m.Seq, User: string(m.User)}
		remote, err := c.onOp(o, at, &eff)
		if remote && c.opts.OnRemote != nil {
			eff.remote, eff.hasRemote = o, true
		}
		return eff, err
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
		return eff, c.onError(ws, m)
	case protocol.TypeAuth:
		var a protocol.Auth
		if err := json.Unmarshal(data, &a); err == nil && a.AuthTTLMs > 0 {
			select {
			case c.authTTL <- time.Duration(a.AuthTTLMs) * time.Millisecond:
			default: // nobody waits for it
			}
		}
	}
	return eff, nil
}

func (c *Client) recordError(e protocol.Error) {
	if len(c.errs) == maxErrors {
		copy(c.errs, c.errs[1:])
		c.errs = c.errs[:maxErrors-1]
	}
	c.errs = append(c.errs, e)
}

// onError records a server error; a refusal of the in-flight operation is
// resent when retryable, else it ends the connection. c.mu held.
func (c *Client) onError(ws *websocket.Conn, m serverMessage) error {
	e := protocol.Error{Type: protocol.TypeError, Code: m.Code, Message: m.Message}
	if m.Seq > 0 {
		seq := m.Seq
		e.Seq = &seq
	}
	c.recordError(e)
	if m.Seq <= 0 || !c.hasInflight || m.Seq != c.inflight.seq {
		return nil // about something else, or an operation already settled
	}
	p := &c.inflight
	switch m.Code {
	case protocol.CodeUnavailable, protocol.CodeRateLimited:
		if p.retries >= c.maxRetries {
			return fmt.Errorf("operation %d refused after %d retries: %s: %s (reconnecting resubmits it)", m.Seq, p.retries, m.Code, m.Message)
		}
		p.retries++
		c.stats.Retries++
		delay := retryDelay(m.Code, p.retries)
		seq := p.seq
		time.AfterFunc(delay, func() { c.resend(ws, seq) })
		return nil
	case protocol.CodeBadRevision:
		// Not committed: its base is outside what the server transforms
		// over (or, after the server lost history, ahead of it). The server
		// sends the operations up to the revision it checked against before
		// the error, and every one of them has rebased the operation, so it
		// goes again at once on the current revision. Without progress
		// since the refused send, wait a little for the operations first.
		if p.retries >= c.maxRetries {
			return fmt.Errorf("operation %d refused after %d retries: %s: %s (reconnecting resyncs)", m.Seq, p.retries, m.Code, m.Message)
		}
		p.retries++
		c.stats.Retries++
		var delay time.Duration
		if c.rev <= p.rev {
			delay = retryDelay(m.Code, p.retries)
		}
		seq := p.seq
		time.AfterFunc(delay, func() { c.resend(ws, seq) })
		return nil
	default:
		return fmt.Errorf("operation %d refused: %s: %s", m.Seq, m.Code, m.Message)
	}
}

// retryDelay grows with the attempt and is jittered so that writers
// refused together do not come back together. A rate limit refills at the
// server's pace (tens of milliseconds per operation at the default rate),
// contention clears faster.
func retryDelay(code string, attempt int) time.Duration {
	unit := time.Duration(1+rand.IntN(10)) * time.Millisecond
	if code == protocol.CodeRateLimited {
		unit *= 10
	}
	return min(time.Duration(attempt)*unit, 2*time.Second)
}

// resend sends the in-flight operation seq again, on the current revision
// in its current (transformed) form, if it is still in flight on ws. Should
// the refused attempt have committed after all, the server acknowledges
// the duplicate without applying it twice.
func (c *Client) resend(ws *websocket.Conn, seq int64) {
	c.mu.Lock()
	if c.ws != ws || !c.welcomed || !c.hasInflight || c.inflight.seq != seq {
		c.mu.Unlock()
		return
	}
	op, rev := c.inflight.op, c.rev
	c.inflight.rev = rev
	c.mu.Unlock()
	if err := c.writeOp(ws, seq, rev, op); err != nil {
		c.lost(ws, err)
	}
}

func (c *Client) onWelcome(w protocol.Welcome, at time.Time, eff *effects) error {
	// Who we are decides which of the operations below are ours.
	c.userID = w.User.ID
	if w.Text != nil {
		if c.hasInflight || c.buffer != nil {
			c.hasInflight, c.inflight, c.buffer = false, pending{}, nil
			c.recordError(protocol.Error{Type: protocol.TypeError, Code: "resync", Message: ErrResync.Error()})
		}
		c.text, c.rev, c.hasRev = rope.New(*w.Text), w.Rev, true
	} else {
		for _, o := range w.Ops {
			remote, err := c.onOp(o, at, eff)
			if err != nil {
				return err
			}
			if remote && c.opts.OnRemote != nil {
				eff.replayed = append(eff.replayed, o)
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
	if w.AuthTTLMs > 0 && c.opts.RefreshToken != nil {
		// Counted while the reader, which runs this, is: Close waits for it.
		c.wg.Add(1)
		go c.refresher(c.ws, c.connDone, c.authTTL, time.Duration(w.AuthTTLMs)*time.Millisecond)
	}
	c.reconnecting = false
	c.cancelReconnect = nil
	eff.send = c.sendLocked()
	return nil
}

// onAck settles the in-flight operation seq, committed as rev, and puts
// the buffer in flight. c.mu held.
func (c *Client) onAck(seq, rev int64, at time.Time, eff *effects) error {
	if !c.hasInflight || c.inflight.seq != seq {
		return nil // a repeated ack for an operation already confirmed
	}
	if rev != c.rev+1 {
		return fmt.Errorf("ack of operation %d as revision %d at revision %d (gap or reorder)", seq, rev, c.rev)
	}
	c.rev = rev
	c.stats.Acked++
	if !c.opts.DiscardAcks {
		c.acks = append(c.acks, Ack{Seq: seq, Rev: rev})
	}
	eff.acked, eff.ackSeq, eff.ackRev = true, seq, rev
	if sent := c.inflight.sent; !sent.IsZero() {
		eff.ackLatency = at.Sub(sent)
	}
	c.hasInflight, c.inflight = false, pending{}
	if c.buffer != nil {
		c.inflight = pending{seq: c.nextSeq, op: c.buffer}
		c.hasInflight = true
		c.nextSeq++
		c.buffer = nil
		eff.send = c.sendLocked()
	}
	return nil
}

// onOp applies a committed operation, live or from a welcome, and reports
// whether it was another client's (and so applied as remote). c.mu held.
func (c *Client) onOp(o protocol.Op, at time.Time, eff *effects) (bool, error) {
	if o.Rev <= c.rev {
		return false, nil // already applied
	}
	if o.Rev != c.rev+1 {
		if c.hasInflight && !c.inflight.sent.IsZero() {
			// The usual cause: the ack of our operation was lost, and its
			// revision is the hole.
			return false, fmt.Errorf("operation for revision %d arrived at revision %d (gap or reorder): our operation seq %d was never acknowledged",
				o.Rev, c.rev, c.inflight.seq)
		}
		return false, fmt.Errorf("operation for revision %d arrived at revision %d (gap or reorder)", o.Rev, c.rev)
	}
	// Ours only when both the client id and the user are: a client id is
	// public, and another user's operation under the same id is theirs.
	if o.Client == c.opts.ClientID && o.User == c.userID {
		if !c.hasInflight || o.Seq != c.inflight.seq {
			return false, fmt.Errorf("server sent our own operation seq %d as revision %d, but it is not in flight", o.Seq, o.Rev)
		}
		// Our own operation in a resume list (or from another connection
		// of ours): its ack.
		return false, c.onAck(o.Seq, o.Rev, at, eff)
	}
	remote := o.Op
	var err error
	if c.hasInflight {
		// The server commits our in-flight operation after this one and
		// transforms it with ot.Left (its inserts first on ties), so this
		// one goes after ours: Right.
		mine := c.inflight.op
		if c.inflight.op, err = ot.Transform(mine, remote, ot.Left); err != nil {
			return false, fmt.Errorf("transform in-flight op by rev %d: %w", o.Rev, err)
		}
		if remote, err = ot.Transform(remote, mine, ot.Right); err != nil {
			return false, fmt.Errorf("transform rev %d by in-flight op: %w", o.Rev, err)
		}
	}
	if c.buffer != nil {
		mine := c.buffer
		if c.buffer, err = ot.Transform(mine, remote, ot.Left); err != nil {
			return false, fmt.Errorf("transform buffer by rev %d: %w", o.Rev, err)
		}
		if remote, err = ot.Transform(remote, mine, ot.Right); err != nil {
			return false, fmt.Errorf("transform rev %d by buffer: %w", o.Rev, err)
		}
	}
	if err := c.text.Apply(remote); err != nil {
		return false, fmt.Errorf("apply rev %d: %w", o.Rev, err)
	}
	c.rev = o.Rev
	return true, nil
}

// Text returns the local text (server state plus pending local edits). It
// copies the whole text.
func (c *Client) Text() string { c.mu.Lock(); defer c.mu.Unlock(); return c.text.String() }

// Len returns the length of the local text in code points.
func (c *Client) Len() int { c.mu.Lock(); defer c.mu.Unlock(); return c.text.Len() }

// Rev returns the last server revision the client has.
func (c *Client) Rev() int64 { c.mu.Lock(); defer c.mu.Unlock(); return c.rev }

// Snapshot returns the local text and the revision it builds on, read
// together.
func (c *Client) Snapshot() (text string, rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.text.String(), c.rev
}

// ClientID returns Options.ClientID.
func (c *Client) ClientID() string { return c.opts.ClientID }

// Connected reports whether the client is connected and welcomed.
func (c *Client) Connected() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.ws != nil && c.welcomed }

// Synced reports that no local edit awaits acknowledgement.
func (c *Client) Synced() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.hasInflight && c.buffer == nil
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats { c.mu.Lock(); defer c.mu.Unlock(); return c.stats }

// Acks returns every acknowledgement received, in order (none with
// Options.DiscardAcks).
func (c *Client) Acks() []Ack {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Ack(nil), c.acks...)
}

// Errors returns the last error messages received from the server (at
// most 100), including refusals that were retried, and a "resync" entry
// for every ErrResync.
func (c *Client) Errors() []protocol.Error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]protocol.Error(nil), c.errs...)
}

// Welcome returns the last welcome message as received.
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

// Err returns why the client stopped: the error that ended its last
// connection (or its automatic reconnection) once it is neither connected
// nor reconnecting by itself, ErrClosed after Close, and nil before the
// first connection, while connected and while reconnecting.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.errLocked()
}

func (c *Client) errLocked() error {
	switch {
	case c.closed:
		return ErrClosed
	case c.ws != nil || c.reconnecting:
		return nil
	default:
		return c.closeErr
	}
}

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
		ch := c.changedLocked()
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
// has seen revision rev (rev < 0: any). It returns at once with Err when
// the client has stopped (no connection, no automatic reconnection), since
// nothing can be acknowledged then; a caller that reconnects by itself
// calls it again after Connect. When ctx ends first, the error names the
// operation that was never acknowledged.
func (c *Client) WaitSynced(ctx context.Context, rev int64) error {
	for {
		c.mu.Lock()
		if !c.hasInflight && c.buffer == nil && (rev < 0 || c.rev >= rev) && c.callbacks == 0 {
			c.mu.Unlock()
			return nil
		}
		if err := c.errLocked(); err != nil {
			defer c.mu.Unlock()
			return fmt.Errorf("client %s not synced (%s): %w", c.opts.ClientID, c.syncStateLocked(rev), err)
		}
		ch := c.changedLocked()
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.hasInflight && !c.inflight.sent.IsZero() {
				return fmt.Errorf("client %s: operation seq %d (sent %s ago) was never acknowledged (%s): %w",
					c.opts.ClientID, c.inflight.seq, time.Since(c.inflight.sent).Round(time.Millisecond), c.syncStateLocked(rev), ctx.Err())
			}
			return fmt.Errorf("client %s: wait for sync (%s): %w", c.opts.ClientID, c.syncStateLocked(rev), ctx.Err())
		}
	}
}

// syncStateLocked describes how far the client is from synced; c.mu held.
func (c *Client) syncStateLocked(rev int64) string {
	s := fmt.Sprintf("at revision %d", c.rev)
	if rev >= 0 {
		s += fmt.Sprintf(", want %d", rev)
	}
	return s + fmt.Sprintf(", pending %v, connected %v", c.hasInflight || c.buffer != nil, c.ws != nil && c.welcomed)
}
