package server_test

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tandem-dev/tandem/runtime/auth"
	"github.com/tandem-dev/tandem/runtime/client"
	"github.com/tandem-dev/tandem/runtime/metrics"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/protocol"
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// commitInserts makes c insert n single letters at the end, one revision
// each.
func commitInserts(t *testing.T, ctx context.Context, c *client.Client, n int) {
	t.Helper()
	for i := range n {
		err := c.EditFunc(func(text string) ot.Op {
			l := len([]rune(text))
			if l == 0 {
				return ot.Op{{Insert: string(rune('a' + i%26))}}
			}
			return ot.Op{{Retain: l}, {Insert: string(rune('a' + i%26))}}
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.WaitSynced(ctx, -1); err != nil {
			t.Fatal(err)
		}
	}
}

func TestResume(t *testing.T) {
	tests := []struct {
		name     string
		missed   int
		wantText bool
	}{
		{"few missed: exact operations", 5, false},
		{"none missed: empty list", 0, false},
		{"too far behind: full text", 25, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStack(t, stackOptions{window: 10, limits: highLimits()})
			ctx := testContext(t)
			docID := "resume"
			writer := s.client(ctx, docID, "writer")
			commitInserts(t, ctx, writer, 3)
			reader := s.client(ctx, docID, "reader")
			if err := reader.WaitSynced(ctx, 3); err != nil {
				t.Fatal(err)
			}
			reader.Disconnect()
			commitInserts(t, ctx, writer, tc.missed)
			if err := reader.Connect(ctx); err != nil {
				t.Fatal(err)
			}
			w := reader.Welcome()
			if tc.wantText {
				if w.Text == nil || w.Ops != nil {
					t.Fatalf("welcome after %d missed: text=%v ops=%d, want the full text", tc.missed, w.Text != nil, len(w.Ops))
				}
			} else {
				if w.Text != nil {
					t.Fatalf("welcome after %d missed carries the full text, want operations", tc.missed)
				}
				if len(w.Ops) != tc.missed {
					t.Fatalf("welcome has %d operations, want exactly the %d missed", len(w.Ops), tc.missed)
				}
				for i, o := range w.Ops {
					if o.Rev != int64(3+i+1) || o.Client != "writer" {
						t.Fatalf("op %d = rev %d from %q, want rev %d from writer", i, o.Rev, o.Client, 3+i+1)
					}
				}
			}
			if w.Rev != int64(3+tc.missed) || reader.Text() != writer.Text() {
				t.Fatalf("after resume: rev %d text %q, want rev %d text %q", w.Rev, reader.Text(), 3+tc.missed, writer.Text())
			}
		})
	}
}

// TestResubmissionIsAckedNotReapplied sends the same seq twice, the second
// time after the document moved on, as a client does after a reconnect.
func TestResubmissionIsAckedNotReapplied(t *testing.T) {
	s := newStack(t, stackOptions{limits: highLimits()})
	ctx := testContext(t)
	docID := "resubmit"
	r := s.raw(docID, nil)
	r.hello("", "dup-client")
	r.expect("welcome")
	r.sendText(`{"type":"op","seq":1,"rev":0,"op":["hello"]}`)
	if ack := r.expect("ack"); ack["rev"] != 1.0 || ack["seq"] != 1.0 {
		t.Fatalf("first ack = %v", ack)
	}
	other := s.client(ctx, docID, "other")
	commitInserts(t, ctx, other, 2)
	// Resubmit seq 1 on a second connection with the old base, as after a
	// lost ack.
	r2 := s.raw(docID, nil)
	r2.hello("", "dup-client")
	r2.expect("welcome")
	r2.sendText(`{"type":"op","seq":1,"rev":0,"op":["hello"]}`)
	if ack := r2.expect("ack"); ack["rev"] != 1.0 || ack["seq"] != 1.0 {
		t.Fatalf("ack of the resubmission = %v, want rev 1 again", ack)
	}
	d := s.doc(docID)
	if d.Rev != 3 || strings.Count(d.Text, "hello") != 1 {
		t.Fatalf("document = rev %d %q, want rev 3 with hello once", d.Rev, d.Text)
	}
}

func TestBadInput(t *testing.T) {
	s := newStack(t, stackOptions{jwt: true, limits: strictLimits(), maxDoc: 64})
	ctx := testContext(t)
	docID := "bad-input"
	good := s.client(ctx, docID, "good")
	if err := good.Edit(ot.Op{{Insert: "hello"}}); err != nil {
		t.Fatal(err)
	}
	if err := good.WaitSynced(ctx, 1); err != nil {
		t.Fatal(err)
	}
	write := s.token("mallory", auth.PermWrite, docID)
	expired, err := auth.Mint(testKey, auth.MintOptions{Subject: "old", Docs: []string{docID}, Perm: auth.PermWrite, TTL: time.Minute, Now: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	opAt := func(rev int, op string) string { return fmt.Sprintf(`{"type":"op","seq":1,"rev":%d,"op":%s}`, rev, op) }

	tests := []struct {
		name      string
		token     string // hello token; "-" sends no hello
		frames    []string
		wantCode  string // error code expected
		wantClose int    // close code expected (0: connection stays open)
	}{
		{"malformed JSON", write, []string{`{"type":"op",`}, protocol.CodeBadMessage, 0},
		{"not an object", write, []string{`[1,2]`}, protocol.CodeBadMessage, 0},
		{"unknown message type", write, []string{`{"type":"teleport"}`}, protocol.CodeBadMessage, 0},
		{"op beyond the document length", write, []string{opAt(1, `[10,"x"]`)}, protocol.CodeBadOp, 0},
		{"delete beyond the document length", write, []string{opAt(1, `[3,{"d":5}]`)}, protocol.CodeBadOp, 0},
		{"negative retain", write, []string{opAt(1, `[-1,"x"]`)}, protocol.CodeBadOp, 0},
		{"zero retain", write, []string{opAt(1, `[0,"x"]`)}, protocol.CodeBadOp, 0},
		{"zero delete", write, []string{opAt(1, `[{"d":0}]`)}, protocol.CodeBadOp, 0},
		{"empty insert", write, []string{opAt(1, `[""]`)}, protocol.CodeBadOp, 0},
		{"op is not a list", write, []string{opAt(1, `"hello"`)}, protocol.CodeBadOp, 0},
		{"insert containing U+0000", write, []string{opAt(1, `[5,"A\u0000B"]`)}, protocol.CodeBadOp, 0},
		{"base revision in the future", write, []string{opAt(9, `["x"]`)}, protocol.CodeBadRevision, 0},
		{"negative revision", write, []string{opAt(-1, `["x"]`)}, protocol.CodeBadRevision, 0},
		{"missing seq", write, []string{`{"type":"op","rev":1,"op":["x"]}`}, protocol.CodeBadMessage, 0},
		{"document too large", write, []string{opAt(1, `["`+strings.Repeat("x", 100)+`"]`)}, protocol.CodeTooLarge, 0},
		{"operation too large", write, []string{opAt(1, `["`+strings.Repeat("y", 300)+`"]`)}, protocol.CodeTooLarge, 0},
		{"oversized message", write, []string{`{"type":"presence","pad":"` + strings.Repeat("z", 5000) + `"}`}, "", protocol.CloseTooLarge},
		{"op before hello", "-", []string{opAt(1, `["x"]`)}, protocol.CodeBadMessage, 0},
		{"invalid token", "garbage.token.here", nil, protocol.CodeUnauthorized, protocol.CloseUnauthorized},
		{"missing token", "", nil, protocol.CodeUnauthorized, protocol.CloseUnauthorized},
		{"expired token", expired, nil, protocol.CodeUnauthorized, protocol.CloseUnauthorized},
		{"token for another document", s.token("mallory", auth.PermWrite, "other-doc"), nil, protocol.CodeForbidden, protocol.CloseForbidden},
		{"token signed with another key", mintWith(t, []byte("another-key-another-key-another-key"), docID), nil, protocol.CodeUnauthorized, protocol.CloseUnauthorized},
		{"read-only submit", s.token("reader", auth.PermRead, docID), []string{opAt(1, `["x"]`)}, protocol.CodeForbidden, 0},
		{"rate-limit excess", write, repeat(opAt(1, `[99,"x"]`), 12), protocol.CodeRateLimited, 0},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := s.doc(docID)
			r := s.raw(docID, nil)
			r.t = t
			if tc.token != "-" {
				r.hello(tc.token, fmt.Sprintf("bad-%d", i))
				if tc.wantClose == 0 {
					r.expect("welcome")
				}
			}
			for _, f := range tc.frames {
				r.sendText(f)
			}
			gotCode, gotClose := "", 0
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) && gotClose == 0 && (gotCode != tc.wantCode || tc.wantClose != 0) {
				typ, m, closeCode := r.next(time.Until(deadline))
				switch typ {
				case "":
					gotClose = closeCode
				case "error":
					if code, _ := m["code"].(string); gotCode == "" || code == tc.wantCode {
						gotCode = code
					}
				}
			}
			if tc.wantCode != "" && gotCode != tc.wantCode {
				t.Errorf("error code = %q, want %q", gotCode, tc.wantCode)
			}
			if gotClose != tc.wantClose {
				t.Errorf("close code = %d, want %d", gotClose, tc.wantClose)
			}
			if tc.wantClose == 0 {
				// The connection still works: a presence update goes through
				// without an error and hello is refused as a repeat.
				if tc.token == "-" {
					r.hello(write, "late-hello")
					r.expect("welcome")
				}
				r.sendText(`{"type":"hello","v":1,"client":"again"}`)
				for {
					if m := r.expect("error"); m["code"] == protocol.CodeBadMessage {
						break
					}
				}
			}
			// Nothing was applied, and others are still served.
			after := s.doc(docID)
			if after != before {
				t.Fatalf("document changed: %+v -> %+v", before, after)
			}
			if !good.Connected() {
				t.Fatalf("the good client was disconnected: %v", good.CloseError())
			}
		})
	}
	// The good client can still edit after all that.
	if err := good.Edit(ot.Op{{Retain: 5}, {Insert: "!"}}); err != nil {
		t.Fatal(err)
	}
	if err := good.WaitSynced(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if d := s.doc(docID); d.Text != "hello!" || d.Rev != 2 {
		t.Fatalf("document = %+v, want hello! at rev 2", d)
	}
}

func strictLimits() serverLimits {
	return serverLimits{MaxMessageBytes: 4096, MaxOpBytes: 200, OpsPerSecond: 2, OpsBurst: 3}
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func mintWith(t *testing.T, key []byte, docID string) string {
	t.Helper()
	tok, err := auth.Mint(key, auth.MintOptions{Subject: "x", Docs: []string{docID}, Perm: auth.PermWrite, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestRateLimitCloseAfterPersistentExcess(t *testing.T) {
	s := newStack(t, stackOptions{limits: strictLimits()})
	r := s.raw("flood", nil)
	r.hello("", "flooder")
	r.expect("welcome")
	for range 40 {
		r.sendText(`{"type":"op","seq":1,"rev":0,"op":[5,"x"]}`)
	}
	for {
		typ, _, code := r.next(10 * time.Second)
		if typ == "" {
			if code != protocol.CloseRateLimited {
				t.Fatalf("close code %d, want %d", code, protocol.CloseRateLimited)
			}
			return
		}
	}
}

func TestPresence(t *testing.T) {
	s := newStack(t, stackOptions{limits: highLimits()})
	ctx := testContext(t)
	docID := "presence"
	a := s.client(ctx, docID, "a")
	if err := a.Edit(ot.Op{{Insert: "0123456789"}}); err != nil {
		t.Fatal(err)
	}
	if err := a.WaitSynced(ctx, 1); err != nil {
		t.Fatal(err)
	}
	b := s.client(ctx, docID, "b")
	if len(b.Welcome().Presence) != 1 {
		t.Fatalf("b's welcome presence = %+v, want a", b.Welcome().Presence)
	}
	if err := a.SetCursor(protocol.Cursor{Anchor: 2, Head: 5}); err != nil {
		t.Fatal(err)
	}
	aConn := a.Welcome().Conn
	cursorIs := func(c *client.Client, conn string, want protocol.Cursor) func() bool {
		return func() bool {
			p, ok := c.Others()[conn]
			return ok && p.Cursor != nil && *p.Cursor == want
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := b.WaitFor(wctx, cursorIs(b, aConn, protocol.Cursor{Anchor: 2, Head: 5})); err != nil {
		t.Fatalf("b never saw a's cursor: %v (others %+v)", err, b.Others())
	}
	// b inserts before a's selection: a new joiner sees it shifted.
	if err := b.Edit(ot.Op{{Insert: "ab"}}); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitSynced(ctx, 2); err != nil {
		t.Fatal(err)
	}
	c := s.client(ctx, docID, "c")
	var got *protocol.Cursor
	for _, p := range c.Welcome().Presence {
		if p.Conn == aConn {
			got = p.Cursor
		}
	}
	if got == nil || *got != (protocol.Cursor{Anchor: 4, Head: 7}) {
		t.Fatalf("c sees a's cursor %+v, want 4..7 after b's insert", got)
	}
	// a leaves: the others are told.
	a.Close()
	if err := b.WaitFor(wctx, func() bool { _, ok := b.Others()[aConn]; return !ok }); err != nil {
		t.Fatalf("b still sees a after it left: %v", err)
	}
}

func TestHTTPEndpoints(t *testing.T) {
	s := newStack(t, stackOptions{jwt: true, limits: highLimits()})
	ctx := testContext(t)
	docID := "http-doc"
	c := s.client(ctx, docID, "writer")
	commitInserts(t, ctx, c, 4)
	read := s.token("r", auth.PermRead, docID)
	tests := []struct {
		name  string
		path  string
		token string
		want  int
	}{
		{"doc", "/v1/docs/" + docID, read, http.StatusOK},
		{"ops", "/v1/docs/" + docID + "/ops?from=1&to=3", read, http.StatusOK},
		{"doc without token", "/v1/docs/" + docID, "", http.StatusUnauthorized},
		{"doc with another doc's token", "/v1/docs/" + docID, s.token("r", auth.PermRead, "x"), http.StatusForbidden},
		{"bad range", "/v1/docs/" + docID + "/ops?from=-4", read, http.StatusBadRequest},
		{"bad doc id", "/v1/docs/bad%20id", read, http.StatusBadRequest},
		{"healthz", "/healthz", "", http.StatusOK},
		{"readyz", "/readyz", "", http.StatusOK},
		{"metrics", "/metrics", "", http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := s.get(tc.path, tc.token, nil); got != tc.want {
				t.Fatalf("GET %s = %d, want %d", tc.path, got, tc.want)
			}
		})
	}
	var ops []protocol.Op
	s.get("/v1/docs/"+docID+"/ops?from=1&to=3", read, &ops)
	if len(ops) != 2 || ops[0].Rev != 2 || ops[1].Rev != 3 || ops[0].Client != "writer" || ops[0].Type != "op" {
		t.Fatalf("ops 1..3 = %+v, want revs 2 and 3", ops)
	}
	resp, err := http.Get(s.http.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body := new(strings.Builder)
	_, _ = fmt.Fprint(body, readAll(t, resp))
	for _, name := range []string{"tandem_connections 1", "tandem_documents_loaded 1", "tandem_operations_committed_total 4", "tandem_transform_seconds_bucket", "tandem_commit_seconds_bucket", `tandem_errors_total{code="unauthorized"}`, "go_goroutines", "process_"} {
		if !strings.Contains(body.String(), name) {
			t.Errorf("metrics lack %q", name)
		}
	}
}

func TestOriginCheck(t *testing.T) {
	s := newStack(t, stackOptions{origins: []string{"https://editor.example"}})
	tests := []struct {
		origin string
		ok     bool
	}{
		{"https://editor.example", true},
		{"", true}, // not a browser
		{"https://evil.example", false},
	}
	for _, tc := range tests {
		t.Run(tc.origin, func(t *testing.T) {
			h := http.Header{}
			if tc.origin != "" {
				h.Set("Origin", tc.origin)
			}
			ws, resp, err := wsDial(s.wsURL("origin"), h)
			if tc.ok {
				if err != nil {
					t.Fatalf("dial from %q: %v", tc.origin, err)
				}
				ws.Close()
				return
			}
			if err == nil {
				ws.Close()
				t.Fatalf("dial from %q succeeded, want refusal", tc.origin)
			}
			if resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Fatalf("dial from %q: %v, want HTTP 403", tc.origin, err)
			}
		})
	}
}

func TestShutdownTellsClientsToReconnect(t *testing.T) {
	s := newStack(t, stackOptions{})
	r := s.raw("bye", nil)
	r.hello("", "c")
	r.expect("welcome")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.srv.Shutdown(ctx) }()
	for {
		typ, _, code := r.next(5 * time.Second)
		if typ == "" {
			if code != protocol.CloseRestart {
				t.Fatalf("close code %d, want %d", code, protocol.CloseRestart)
			}
			break
		}
	}
	r.ws.Close()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if got := s.get("/readyz", "", nil); got != http.StatusServiceUnavailable {
		t.Fatalf("readyz while draining = %d, want 503", got)
	}
}

func TestConnectionsPerDocLimit(t *testing.T) {
	s := newStack(t, stackOptions{limits: serverLimits{MaxConnsPerDoc: 2}})
	ctx := testContext(t)
	s.client(ctx, "crowded", "one")
	s.client(ctx, "crowded", "two")
	r := s.raw("crowded", nil)
	for {
		typ, _, code := r.next(5 * time.Second)
		if typ == "" {
			if code != protocol.CloseDocFull {
				t.Fatalf("close code %d, want %d", code, protocol.CloseDocFull)
			}
			break
		}
	}
	// Another document is unaffected.
	s.client(ctx, "roomy", "three")
}

func TestSilentConnectionIsClosed(t *testing.T) {
	s := newStack(t, stackOptions{hello: 200 * time.Millisecond})
	r := s.raw("silent", nil)
	typ, _, code := r.next(5 * time.Second)
	if typ != "" || code != protocol.CloseTimeout {
		t.Fatalf("got %q / close %d, want close %d", typ, code, protocol.CloseTimeout)
	}
}

// TestUnresponsiveClientLeaves: a connection that stops answering pings is
// closed and its presence removed for the others.
func TestUnresponsiveClientLeaves(t *testing.T) {
	s := newStack(t, stackOptions{ping: 100 * time.Millisecond})
	ctx := testContext(t)
	watcher := s.client(ctx, "liveness", "watcher")
	r := s.raw("liveness", nil)
	r.hello("", "frozen")
	w := r.expect("welcome")
	conn, _ := w["conn"].(string)
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := watcher.WaitFor(wctx, func() bool { _, ok := watcher.Others()[conn]; return ok }); err != nil {
		t.Fatalf("watcher never saw the frozen client: %v", err)
	}
	// r now stops reading, so it answers no pings.
	start := time.Now()
	if err := watcher.WaitFor(wctx, func() bool { _, ok := watcher.Others()[conn]; return !ok }); err != nil {
		t.Fatalf("frozen client still present: %v", err)
	}
	t.Logf("frozen client removed after %v", time.Since(start).Round(time.Millisecond))
}

// TestSlowConsumerDoesNotBlockTheDocument: a connection that stops reading
// is dropped once its queue fills; the writer keeps committing meanwhile.
func TestSlowConsumerDoesNotBlockTheDocument(t *testing.T) {
	s := newStack(t, stackOptions{queue: 240 << 10, wtime: 300 * time.Millisecond, limits: highLimits()})
	ctx := testContext(t)
	r := s.raw("slow", nil)
	r.hello("", "sleepy")
	r.expect("welcome")
	// r reads nothing from now on. Large operations fill the socket
	// buffers quickly, then the connection's queue.
	writer := s.client(ctx, "slow", "writer")
	big := strings.Repeat("x", 60<<10)
	start := time.Now()
	for range 120 {
		if err := writer.EditFunc(func(string) ot.Op { return ot.Op{{Insert: big}} }); err != nil {
			t.Fatal(err)
		}
		if err := writer.WaitSynced(ctx, -1); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("120 large operations committed in %v with a stalled reader", time.Since(start).Round(time.Millisecond))
	if writer.Rev() != 120 {
		t.Fatalf("writer at rev %d, want 120", writer.Rev())
	}
	// The stalled connection was cut: reading what was buffered ends in an
	// error, not in an endless stream.
	deadline := time.Now().Add(20 * time.Second)
	for {
		_ = r.ws.SetReadDeadline(deadline)
		if _, _, err := r.ws.ReadMessage(); err != nil {
			if time.Now().After(deadline) {
				t.Fatal("stalled connection was never closed")
			}
			break
		}
	}
	// Only the writer is still counted.
	for {
		resp, err := http.Get(s.http.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp)
		resp.Body.Close()
		if strings.Contains(body, "\ntandem_connections 1\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stalled connection is still counted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Counted once, as a slow consumer the server cut: by its queue bound
	// (4010) or by the write timeout (1006), whichever came first.
	byQueue := testutil.ToFloat64(s.metrics.SlowConsumers.WithLabelValues(metrics.BoundConnection))
	byTimeout := testutil.ToFloat64(s.metrics.SlowConsumers.WithLabelValues(metrics.BoundWriteTimeout))
	if byQueue+byTimeout != 1 {
		t.Errorf("tandem_slow_consumer_disconnects_total: connection %v + write_timeout %v, want 1", byQueue, byTimeout)
	}
	closed := testutil.ToFloat64(s.metrics.Closes.WithLabelValues("4010", metrics.ClosedByServer)) +
		testutil.ToFloat64(s.metrics.Closes.WithLabelValues("1006", metrics.ClosedByServer))
	if closed != 1 {
		t.Errorf("tandem_websocket_closes_total{by=server, code 4010 or 1006} = %v, want 1", closed)
	}
}

// TestBearerHeaderInsteadOfHelloToken: non-browser clients authenticate on
// the upgrade request.
func TestBearerHeaderInsteadOfHelloToken(t *testing.T) {
	s := newStack(t, stackOptions{jwt: true})
	tests := []struct {
		name      string
		header    string
		wantUser  string
		wantClose int
	}{
		{"valid header", "Bearer " + s.token("svc", auth.PermRead, "hdr"), "svc", 0},
		{"header for another doc", "Bearer " + s.token("svc", auth.PermRead, "other"), "", protocol.CloseForbidden},
		{"no header, no token", "", "", protocol.CloseUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.header != "" {
				h.Set("Authorization", tc.header)
			}
			r := s.raw("hdr", h)
			r.t = t
			r.hello("", "svc-client")
			typ, m, code := r.next(5 * time.Second)
			for typ == "error" {
				typ, m, code = r.next(5 * time.Second)
			}
			if tc.wantClose != 0 {
				if typ != "" || code != tc.wantClose {
					t.Fatalf("got %q / close %d, want close %d", typ, code, tc.wantClose)
				}
				return
			}
			user, _ := m["user"].(map[string]any)
			if typ != "welcome" || user["id"] != tc.wantUser || m["perm"] != "read" {
				t.Fatalf("got %q %v, want a read-only welcome for %s", typ, m, tc.wantUser)
			}
		})
	}
}

// TestTieBreakIncomingInsertFirst: two inserts at the same position on the
// same base; the one committed later lands first, on the server and in
// every client.
func TestTieBreakIncomingInsertFirst(t *testing.T) {
	s := newStack(t, stackOptions{limits: highLimits()})
	ctx := testContext(t)
	watcher := s.client(ctx, "tie", "watcher")
	a := s.raw("tie", nil)
	a.hello("", "a")
	a.expect("welcome")
	b := s.raw("tie", nil)
	b.hello("", "b")
	b.expect("welcome")
	a.sendText(`{"type":"op","seq":1,"rev":0,"op":["a"]}`)
	if ack := a.expect("ack"); ack["rev"] != 1.0 {
		t.Fatalf("a's ack %v", ack)
	}
	b.sendText(`{"type":"op","seq":1,"rev":0,"op":["b"]}`) // still on revision 0
	if ack := b.expect("ack"); ack["rev"] != 2.0 {
		t.Fatalf("b's ack %v", ack)
	}
	if op := a.expect("op"); mustJSON(op["op"]) != `["b"]` {
		t.Fatalf("a received %v, want [\"b\"] (insert before its own)", op["op"])
	}
	if err := watcher.WaitSynced(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if d := s.doc("tie"); d.Text != "ba" || watcher.Text() != "ba" {
		t.Fatalf("server %q, watcher %q; want \"ba\"", d.Text, watcher.Text())
	}
}

// TestIdleConnectionsHoldOneGoroutine: once its welcome is written, an idle
// connection keeps only its reader; the writer exists while there is
// something to write.
func TestIdleConnectionsHoldOneGoroutine(t *testing.T) {
	s := newStack(t, stackOptions{})
	const n = 40
	// Warm the document (its actor and subscriptions) before counting.
	first := s.raw("idle", nil)
	first.hello("", "c-first")
	first.expect("welcome")
	settle := func() int {
		// Workers that ran a writer or a handshake's reader wait a second
		// for their next task before they exit, and goroutines that are
		// ending need a moment: wait that out, then take the lowest of a
		// few readings.
		time.Sleep(1100 * time.Millisecond) // workers wait a second (workerIdle)
		low := runtime.NumGoroutine()
		for range 20 {
			time.Sleep(25 * time.Millisecond)
			low = min(low, runtime.NumGoroutine())
		}
		return low
	}
	before := settle()
	for i := range n {
		r := s.raw("idle", nil)
		r.hello("", fmt.Sprintf("c%d", i))
		r.expect("welcome")
	}
	after := settle()
	if per := float64(after-before) / n; per > 1.1 {
		t.Fatalf("%d idle connections added %d goroutines (%.2f each), want about 1 each", n, after-before, per)
	}
}
