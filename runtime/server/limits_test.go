package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tandem-dev/tandem/runtime/protocol"
	"github.com/tandem-dev/tandem/runtime/server"
)

// TestWelcomeCarriesLimits: the welcome says which sizes the server
// accepts; without a document limit that field is absent.
func TestWelcomeCarriesLimits(t *testing.T) {
	tests := []struct {
		name   string
		limits server.Limits
		maxDoc int
		want   string
	}{
		{"configured", server.Limits{MaxMessageBytes: 4096, MaxOpBytes: 1000}, 3000, `{"maxDocBytes":3000,"maxMessageBytes":4096,"maxOpBytes":1000}`},
		{"defaults, no document limit", server.Limits{}, 0, `{"maxMessageBytes":262144,"maxOpBytes":65536}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStack(t, stackOptions{limits: tc.limits, maxDoc: tc.maxDoc})
			r := s.raw("limits", nil)
			r.hello("", "c1")
			w := r.expect("welcome")
			if got := mustJSON(w["limits"]); got != tc.want {
				t.Fatalf("welcome limits %s, want %s", got, tc.want)
			}
		})
	}
}

// TestLimitsAreWhatTheServerChecks walks one real WebSocket connection
// along each limit's edge, as docs/protocol.md states them: an operation
// limit in bytes of inserted UTF-8 and a document limit in bytes of the
// text are refused with too_large and the connection goes on; the message
// limit counts the whole JSON frame, escapes and whitespace included, and
// a frame past it ends the connection with 1009.
func TestLimitsAreWhatTheServerChecks(t *testing.T) {
	const maxMsg, maxOp, maxDoc = 2048, 1000, 3000
	s := newStack(t, stackOptions{limits: server.Limits{MaxMessageBytes: maxMsg, MaxOpBytes: maxOp}, maxDoc: maxDoc})
	r := s.raw("edge", nil)
	r.hello("", "edge-client")
	r.expect("welcome")

	rev := 0
	// op encodes an op message padded with spaces to at least pad bytes.
	op := func(seq int, ops string, pad int) string {
		f := fmt.Sprintf(`{"type":"op","seq":%d,"rev":%d,"op":%s}`, seq, rev, ops)
		if len(f) < pad {
			f = f[:len(f)-1] + strings.Repeat(" ", pad-len(f)) + "}"
		}
		return f
	}
	ins := func(at int, text string) string {
		if at == 0 {
			return mustJSON([]any{text})
		}
		return mustJSON([]any{at, text})
	}
	length := 0 // code points
	steps := []struct {
		name  string
		frame func(seq int) string
		code  string // "" for an ack
		text  string // what the step inserts, when acked
		del   int
	}{
		{"op of exactly maxOpBytes (500 two-byte characters)", func(seq int) string { return op(seq, ins(0, strings.Repeat("é", 500)), 0) }, "", strings.Repeat("é", 500), 0},
		{"op one byte over maxOpBytes, frame well within maxMessageBytes", func(seq int) string { return op(seq, ins(length, strings.Repeat("é", 500)+"x"), 0) }, protocol.CodeTooLarge, "", 0},
		{"frame of exactly maxMessageBytes (1000 quotes escape to 2000 bytes)", func(seq int) string { return op(seq, ins(length, strings.Repeat(`"`, 1000)), maxMsg) }, "", strings.Repeat(`"`, 1000), 0},
		{"document to exactly maxDocBytes", func(seq int) string { return op(seq, ins(length, strings.Repeat("x", 1000)), 0) }, "", strings.Repeat("x", 1000), 0},
		{"document one byte over maxDocBytes", func(seq int) string { return op(seq, ins(length, "y"), 0) }, protocol.CodeTooLarge, "", 0},
		{"an operation that does not grow the document is taken at the limit", func(seq int) string { return op(seq, `["z",{"d":1}]`, 0) }, "", "z", 1},
	}
	for i, st := range steps {
		seq := i + 1
		f := st.frame(seq)
		if len(f) > maxMsg {
			t.Fatalf("%s: frame of %d bytes is over the message limit", st.name, len(f))
		}
		r.sendText(f)
		for {
			typ, m, closed := r.next(10 * time.Second)
			if typ == "" {
				t.Fatalf("%s: connection closed with %d", st.name, closed)
			}
			if typ == "ack" && st.code == "" {
				if got := int(m["seq"].(float64)); got != seq {
					t.Fatalf("%s: ack of %d, want %d", st.name, got, seq)
				}
				rev = int(m["rev"].(float64))
				length += utf8.RuneCountInString(st.text) - st.del
				break
			}
			if typ == "error" {
				if m["code"] != st.code || m["seq"] != float64(seq) {
					t.Fatalf("%s: error %v", st.name, m)
				}
				if !strings.Contains(m["message"].(string), "limits.max") {
					t.Errorf("%s: the message does not name the limit: %q", st.name, m["message"])
				}
				break
			}
			if typ == "ack" {
				t.Fatalf("%s: acked, want %s", st.name, st.code)
			}
		}
	}
	d := s.doc("edge")
	if len(d.Text) != maxDoc-1 || !strings.HasPrefix(d.Text, "zé") {
		t.Fatalf("document of %d bytes, starting %q; want %d", len(d.Text), d.Text[:8], maxDoc-1)
	}

	// One byte over the message limit: the server cannot read the frame,
	// so it closes with 1009; nothing of it is applied.
	r.sendText(op(len(steps)+1, `["w"]`, maxMsg+1))
	for {
		typ, _, closed := r.next(10 * time.Second)
		if typ == "" {
			if closed != protocol.CloseTooLarge {
				t.Fatalf("closed with %d, want %d", closed, protocol.CloseTooLarge)
			}
			break
		}
	}
	if after := s.doc("edge"); after != d {
		t.Fatalf("document changed by the oversized frame: rev %d -> %d", d.Rev, after.Rev)
	}
}
