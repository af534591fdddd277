// Package protocol defines the messages of the document WebSocket (JSON text
// frames) and their validation. docs/protocol.md is the reference for
// people; this package is the reference for code, and both describe the
// same shapes.
package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/store"
)

// Version is the protocol version carried in hello and welcome.
const Version = 1

// Message types.
const (
	TypeHello    = "hello"
	TypeWelcome  = "welcome"
	TypeOp       = "op"
	TypeAck      = "ack"
	TypePresence = "presence"
	TypeLeave    = "leave"
	TypeError    = "error"
	// TypeAuth hands the server a fresh token on an open connection
	// (client), and confirms it (server).
	TypeAuth = "auth"
)

// Error codes: stable strings that clients switch on.
const (
	CodeBadMessage   = "bad_message"  // not JSON, unknown type, missing fields, op before hello
	CodeBadOp        = "bad_op"       // malformed operation or one that does not fit the document
	CodeBadRevision  = "bad_revision" // base revision in the future (or negative)
	CodeTooLarge     = "too_large"    // message, operation or resulting document over a limit
	CodeRateLimited  = "rate_limited" // too many operations per second
	CodeForbidden    = "forbidden"    // token not valid for this document, or read-only submit
	CodeUnauthorized = "unauthorized" // missing, malformed, expired or wrongly signed token
	CodeUnavailable  = "unavailable"  // storage temporarily unreachable or too contended: retry
	CodeInternal     = "internal"     // a bug; the message is logged server side
	CodeNotFound     = "not_found"    // no such revision (after the head)
	CodeGone         = "gone"         // the revision is older than the retained history
)

// WebSocket close codes (4000-4999 are reserved for applications).
const (
	CloseNormal       = 1000 // client went away normally
	CloseTooLarge     = 1009 // a frame exceeded the message size limit (set by the WebSocket library)
	CloseRestart      = 1012 // server restarting: reconnect with backoff and resume
	CloseTryLater     = 1013 // the document could not be loaded right now: reconnect with backoff
	CloseUnauthorized = 4001 // authentication failed; do not retry with the same token
	CloseBadMessage   = 4002 // protocol violation before or during the handshake
	CloseForbidden    = 4003 // token valid but not for this document
	CloseDeleted      = 4004 // the document was deleted (admin API); do not reconnect to it
	CloseRateLimited  = 4008 // kept exceeding the operation rate after being warned
	CloseDocFull      = 4009 // too many connections to this document
	CloseSlowConsumer = 4010 // the client did not read fast enough; reconnect and resume
	CloseTimeout      = 4011 // no hello in time, or pongs stopped
)

// Cursor is a selection in code points.
type Cursor = store.Cursor

// User is who someone is.
type User = store.User

// Hello is the first client message.
type Hello struct {
	Type   string `json:"type"`
	V      int    `json:"v"`
	Token  string `json:"token,omitempty"`
	Client string `json:"client"`
	Rev    *int64 `json:"rev,omitempty"`
	// Name and Color are the display name and colour the person chose; the
	// server honours them in anonymous mode only (auth.Identity.WithProfile)
	// and ignores them when invalid.
	Name  string `json:"name,omitempty"`
	Color string `json:"color,omitempty"`
}

// ClientOp is an operation submitted by a client.
type ClientOp struct {
	Type string `json:"type"`
	Seq  int64  `json:"seq"`
	Rev  int64  `json:"rev"`
	Op   ot.Op  `json:"op"`
}

// ClientPresence is a client's cursor update. A nil cursor means the editor
// has no focus. Rev, when given, is the revision the positions refer to;
// the server transforms them to its head.
type ClientPresence struct {
	Type   string  `json:"type"`
	Cursor *Cursor `json:"cursor"`
	Rev    *int64  `json:"rev,omitempty"`
}

// ClientAuth hands over a fresh token on an open connection.
type ClientAuth struct {
	Type  string `json:"type"`
	Token string `json:"token"`
}

// Auth confirms a ClientAuth: the connection now runs on the new token,
// which stops being accepted in AuthTTLMs milliseconds.
type Auth struct {
	Type      string `json:"type"`
	AuthTTLMs int64  `json:"authTtlMs,omitempty"`
}

// Welcome answers hello. Exactly one of Ops and Text is set: Ops when the
// server still has every operation after the client's revision, Text (the
// full text at Rev) otherwise. AuthTTLMs, when the token expires, is how
// many milliseconds it is still accepted: the connection is closed (4001)
// then unless the client sends an auth message with a fresh one.
type Welcome struct {
	Type      string     `json:"type"`
	V         int        `json:"v"`
	Rev       int64      `json:"rev"`
	User      User       `json:"user"`
	Conn      string     `json:"conn"`
	Perm      string     `json:"perm"`
	Presence  []Presence `json:"presence"`
	Ops       []Op       `json:"ops,omitempty"`
	Text      *string    `json:"text,omitempty"`
	AuthTTLMs int64      `json:"authTtlMs,omitempty"`
	Limits    *Limits    `json:"limits,omitempty"`
}

// Limits are the sizes the server accepts, sent in the welcome so that a
// client splits large edits to fit instead of finding out by refusal. A
// zero field is omitted: no such limit.
type Limits struct {
	// MaxMessageBytes: the largest message the server reads, in bytes of
	// its UTF-8 JSON encoding (the WebSocket payload). A larger one closes
	// the connection with 1009.
	MaxMessageBytes int64 `json:"maxMessageBytes,omitempty"`
	// MaxOpBytes: the most text one op message may insert, in bytes of
	// UTF-8, summed over its inserts as sent. More is refused (too_large).
	MaxOpBytes int `json:"maxOpBytes,omitempty"`
	// MaxDocBytes: the largest document text, in bytes of UTF-8. An
	// operation that would grow the text past it is refused (too_large).
	MaxDocBytes int `json:"maxDocBytes,omitempty"`
}

// Ack confirms that the client's operation Seq was committed as Rev.
type Ack struct {
	Type string `json:"type"`
	Seq  int64  `json:"seq"`
	Rev  int64  `json:"rev"`
}

// Op is a committed operation as the server sends it.
type Op struct {
	Type   string `json:"type"`
	Rev    int64  `json:"rev"`
	Op     ot.Op  `json:"op"`
	Client string `json:"client"`
	Seq    int64  `json:"seq"`
	User   string `json:"user"`
}

// OpFromEntry converts a committed entry to its wire form.
func OpFromEntry(e store.Entry) Op {
	return Op{Type: TypeOp, Rev: e.Rev, Op: e.Op, Client: e.Client, Seq: e.Seq, User: e.User}
}

// Presence is another connection's cursor. Conn tells apart two tabs of the
// same user.
type Presence struct {
	Type string `json:"type"`
	User User   `json:"user"`
	Conn string `json:"conn"`
	// Client is the connection's client id (public: every op carries it):
	// with User it tells which committed operations move the cursor as its
	// owner's (ot.OwnsCaret).
	Client string  `json:"client,omitempty"`
	Cursor *Cursor `json:"cursor"`
}

// Leave announces that a connection left the document.
type Leave struct {
	Type string `json:"type"`
	User string `json:"user"`
	Conn string `json:"conn"`
}

// Error reports a refused message. Seq is set when it concerns an operation.
type Error struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Seq     *int64 `json:"seq,omitempty"`
}

// Problem is a refused client message: the code and text for the error
// message sent back.
type Problem struct {
	Code    string
	Message string
	Seq     *int64
}

func (p *Problem) Error() string { return p.Code + ": " + p.Message }

// Message returns the wire form of the problem.
func (p *Problem) Wire() Error {
	return Error{Type: TypeError, Code: p.Code, Message: p.Message, Seq: p.Seq}
}

func problem(code, format string, args ...any) *Problem {
	return &Problem{Code: code, Message: fmt.Sprintf(format, args...)}
}

// MaxClientIDLen bounds client ids so they cannot bloat every stored entry.
const MaxClientIDLen = 128

// What a document may contain, in every mode: any Unicode text except the
// code point U+0000. The rule follows what every store can hold faithfully:
// PostgreSQL refuses U+0000 in text ("invalid byte sequence") and in jsonb
// ("unsupported Unicode escape sequence"), and a row it refuses can never be
// flushed, so an operation carrying one must be refused before it is
// acknowledged, not discovered later by the flusher. Everything else
// PostgreSQL stores as given: the other control characters, noncharacters
// such as U+FFFF, and every code point up to U+10FFFF. Invalid UTF-8 and
// surrogate code points are not Unicode text at all; frames carrying them
// are refused as not UTF-8, and JSON escapes of lone surrogates decode to
// U+FFFD.

// CheckText reports whether s may be stored in a document, client id or
// user id: an error naming the first forbidden code point, or nil.
func CheckText(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("text is not valid UTF-8")
	}
	if i := strings.IndexByte(s, 0); i >= 0 {
		return fmt.Errorf("text contains U+0000 at code point %d; documents may hold any Unicode text except U+0000", utf8.RuneCountInString(s[:i]))
	}
	return nil
}

// CheckOpText applies CheckText to every insert of op.
func CheckOpText(op ot.Op) error {
	for i, c := range op {
		if c.Insert == "" {
			continue
		}
		if err := CheckText(c.Insert); err != nil {
			return fmt.Errorf("component %d: %w", i, err)
		}
	}
	return nil
}

// clientMessage is every field a client message may carry, so a frame is
// parsed once whatever its type. Op and Cursor stay raw: a malformed
// operation is a bad_op rather than a bad_message, and a hello carrying an
// odd cursor is not refused for it.
type clientMessage struct {
	Type   *string         `json:"type"`
	V      int             `json:"v"`
	Token  string          `json:"token"`
	Client string          `json:"client"`
	Rev    *int64          `json:"rev"`
	Seq    *int64          `json:"seq"`
	Op     json.RawMessage `json:"op"`
	Cursor json.RawMessage `json:"cursor"`
	Name   string          `json:"name"`
	Color  string          `json:"color"`
}

// Decode parses one client frame into *Hello, *ClientOp, *ClientPresence or
// *ClientAuth.
// Any other input yields a *Problem with code bad_message or bad_op.
// Unknown fields are ignored; a known field of the wrong JSON type is a
// bad_message.
func Decode(data []byte) (any, *Problem) {
	if !utf8.Valid(data) {
		return nil, problem(CodeBadMessage, "message is not valid UTF-8")
	}
	var m clientMessage
	err := json.Unmarshal(data, &m)
	var typeErr *json.UnmarshalTypeError
	if err != nil && !errors.As(err, &typeErr) {
		return nil, problem(CodeBadMessage, "message is not a JSON object: %v", err)
	}
	// On a type error Unmarshal still fills the other fields, so the type
	// (and an op's seq) are known for the answer.
	if m.Type == nil {
		if typeErr != nil {
			return nil, problem(CodeBadMessage, "message is not a JSON object: %v", err)
		}
		return nil, problem(CodeBadMessage, `message has no "type"`)
	}
	switch *m.Type {
	case TypeHello:
		if typeErr != nil {
			return nil, problem(CodeBadMessage, "bad hello: %v", err)
		}
		if m.V != Version {
			return nil, problem(CodeBadMessage, "unsupported protocol version %d (this server speaks %d)", m.V, Version)
		}
		if m.Client == "" || len(m.Client) > MaxClientIDLen {
			return nil, problem(CodeBadMessage, `hello needs a "client" id of 1 to %d bytes`, MaxClientIDLen)
		}
		if err := CheckText(m.Client); err != nil {
			// The client id is stored with every operation.
			return nil, problem(CodeBadMessage, "client id: %v", err)
		}
		if m.Rev != nil && *m.Rev < 0 {
			return nil, problem(CodeBadRevision, "revision %d is negative", *m.Rev)
		}
		return &Hello{Type: TypeHello, V: m.V, Token: m.Token, Client: m.Client, Rev: m.Rev, Name: m.Name, Color: m.Color}, nil
	case TypeOp:
		if m.Seq == nil || *m.Seq < 1 {
			if typeErr != nil {
				return nil, problem(CodeBadMessage, "bad op message: %v", err)
			}
			return nil, problem(CodeBadMessage, `op message needs "seq" >= 1`)
		}
		p := func(code, format string, args ...any) *Problem {
			pr := problem(code, format, args...)
			pr.Seq = m.Seq
			return pr
		}
		if typeErr != nil {
			return nil, p(CodeBadMessage, "bad op message: %v", err)
		}
		if m.Rev == nil {
			return nil, p(CodeBadMessage, `op message needs "rev"`)
		}
		if *m.Rev < 0 {
			return nil, p(CodeBadRevision, "revision %d is negative", *m.Rev)
		}
		if len(m.Op) == 0 || bytes.Equal(m.Op, []byte("null")) {
			return nil, p(CodeBadOp, `op message needs "op"`)
		}
		var op ot.Op
		if err := json.Unmarshal(m.Op, &op); err != nil {
			return nil, p(CodeBadOp, "%v", err)
		}
		if err := op.Validate(); err != nil {
			return nil, p(CodeBadOp, "%v", err)
		}
		if err := CheckOpText(op); err != nil {
			return nil, p(CodeBadOp, "%v", err)
		}
		return &ClientOp{Type: TypeOp, Seq: *m.Seq, Rev: *m.Rev, Op: op}, nil
	case TypePresence:
		if typeErr != nil {
			return nil, problem(CodeBadMessage, "bad presence: %v", err)
		}
		cp := ClientPresence{Type: TypePresence, Rev: m.Rev}
		if len(m.Cursor) > 0 && !bytes.Equal(m.Cursor, []byte("null")) {
			var c Cursor
			if err := json.Unmarshal(m.Cursor, &c); err != nil {
				return nil, problem(CodeBadMessage, "bad presence cursor: %v", err)
			}
			if c.Anchor < 0 || c.Head < 0 {
				return nil, problem(CodeBadMessage, "cursor positions must not be negative")
			}
			cp.Cursor = &c
		}
		return &cp, nil
	case TypeAuth:
		if typeErr != nil || m.Token == "" {
			return nil, problem(CodeBadMessage, `auth message needs a "token" string`)
		}
		return &ClientAuth{Type: TypeAuth, Token: m.Token}, nil
	default:
		return nil, problem(CodeBadMessage, "unknown message type %q", *m.Type)
	}
}

// Frame is a server message together with its encoding. The encoding is
// made once, on first use, however many connections the frame goes to: a
// committed operation is encoded once for all members of a document.
type Frame struct {
	Msg  any
	once sync.Once
	data []byte
	err  error
	// text, when set, is appended as the message's "text" field without
	// being copied into data (NewTextFrame).
	text *EncodedText
	all  []byte // data and text joined, made only if Encoded is called
	join sync.Once
	// Holds counts the connections holding the frame unwritten.
	Holds Holds
}

// Holds counts who holds a shared encoding not yet written, so that a
// server can account for its memory once however many clients wait for
// it.
type Holds struct{ n atomic.Int64 }

// Hold adds a holder; true if it is the only one.
func (h *Holds) Hold() bool { return h.n.Add(1) == 1 }

// Held reports whether anyone holds it.
func (h *Holds) Held() bool { return h.n.Load() > 0 }

// Release removes a holder; true if it was the last one.
func (h *Holds) Release() bool { return h.n.Add(-1) == 0 }

// NewFrame wraps msg for sending.
func NewFrame(msg any) *Frame { return &Frame{Msg: msg} }

// EncodedText is a document's text at revision Rev encoded once as a JSON
// string. A large document's text is the biggest thing the server sends;
// one encoding per revision is shared by every welcome and every GET of the
// document instead of a copy per client.
type EncodedText struct {
	Rev  int64
	JSON []byte // a JSON string literal, quotes included; never modified
	// Holds counts the responses and connections holding it unwritten.
	Holds Holds
}

// EncodeText encodes text for sharing.
func EncodeText(rev int64, text string) (*EncodedText, error) {
	b, err := json.Marshal(text)
	if err != nil {
		return nil, fmt.Errorf("encode text: %w", err)
	}
	return &EncodedText{Rev: rev, JSON: b}, nil
}

// NewTextFrame wraps msg, a struct whose encoding is a JSON object and
// that has no "text" field set, and gives it the field "text" with value
// text, shared rather than copied (see Parts).
func NewTextFrame(msg any, text *EncodedText) *Frame { return &Frame{Msg: msg, text: text} }

// Parts returns the encoding as pieces to be sent one after the other as
// one message; the shared text is one of them. Safe for concurrent use;
// callers must not modify the result.
func (f *Frame) Parts() ([][]byte, error) {
	f.once.Do(func() {
		f.data, f.err = json.Marshal(f.Msg)
		if f.err != nil {
			f.err = fmt.Errorf("encode %T: %w", f.Msg, f.err)
			return
		}
		if f.text != nil {
			n := len(f.data)
			if n < 2 || f.data[n-1] != '}' {
				f.err = fmt.Errorf("encode %T: not a JSON object", f.Msg)
				return
			}
			sep := ","
			if n == 2 {
				sep = ""
			}
			f.data = append(f.data[:n-1], sep+`"text":`...)
		}
	})
	if f.err != nil {
		return nil, f.err
	}
	if f.text == nil {
		return [][]byte{f.data}, nil
	}
	return [][]byte{f.data, f.text.JSON, closeBrace}, nil
}

var closeBrace = []byte("}")

// SharedText returns the shared text part of a frame made by
// NewTextFrame, nil for other frames.
func (f *Frame) SharedText() *EncodedText { return f.text }

// Encoded returns the JSON encoding of the message in one piece (for a
// frame with shared text, a copy; senders use Parts). It is safe for
// concurrent use; callers must not modify the result.
func (f *Frame) Encoded() ([]byte, error) {
	parts, err := f.Parts()
	if err != nil || len(parts) == 1 {
		if err != nil {
			return nil, err
		}
		return parts[0], nil
	}
	f.join.Do(func() { f.all = bytes.Join(parts, nil) })
	return f.all, nil
}
