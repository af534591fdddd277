package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tandem-dev/tandem/runtime/protocol"
)

// TestIdleConnectionsParkWithoutGoroutines: an idle connection holds no
// goroutine on the server (it waits on the poller), yet it answers pings
// across many ping intervals, stays open, and is served at once when its
// client speaks again.
func TestIdleConnectionsParkWithoutGoroutines(t *testing.T) {
	const n = 40
	// Pings every second: the connections must answer several of them
	// while parked; a loaded machine still gets each pong in within the
	// 2.5 s wait.
	s := newStack(t, stackOptions{ping: time.Second})
	before := runtime.NumGoroutine()
	type peer struct {
		r    *raw
		msgs chan map[string]any
	}
	peers := make([]peer, n)
	for i := range peers {
		r := s.raw(fmt.Sprintf("idle-%d", i%4), nil)
		r.hello("", fmt.Sprintf("idle-client-%d", i))
		r.expect("welcome")
		// One goroutine per client, on the client's side: it reads, which
		// answers the server's pings (the library's default ping handler).
		msgs := make(chan map[string]any, 16)
		go func() {
			defer close(msgs)
			for {
				typ, m, _ := nextQuiet(r.ws)
				if typ == "" {
					return
				}
				msgs <- m
			}
		}()
		peers[i] = peer{r, msgs}
	}
	// Idle for twice the pong wait: without pongs taken while parked,
	// every connection would be closed by now.
	time.Sleep(5 * time.Second)
	grown := runtime.NumGoroutine() - before
	t.Logf("%d idle connections: %d more goroutines in the process (%d of them the clients' readers)", n, grown, n)
	if grown > n+n/2 {
		t.Errorf("%d idle connections grew the goroutines by %d: the server keeps one per connection", n, grown)
	}
	for i, p := range peers {
		// Still open and served: an op is acknowledged.
		p.r.sendText(fmt.Sprintf(`{"type":"op","seq":1,"rev":0,"op":["x%d"]}`, i))
		deadline := time.After(10 * time.Second)
	wait:
		for {
			select {
			case m, ok := <-p.msgs:
				if !ok {
					t.Fatalf("connection %d was closed while idle", i)
				}
				if m["type"] == "ack" {
					break wait
				}
				if m["type"] == "error" && m["code"] != protocol.CodeBadRevision {
					t.Fatalf("connection %d: %v", i, m)
				}
				if m["type"] == "error" {
					break wait // another client of the document got in first
				}
			case <-deadline:
				t.Fatalf("connection %d: no answer to its op", i)
			}
		}
	}
}

// nextQuiet reads the next message without failing the test: type "" once
// the connection is closed.
func nextQuiet(ws *websocket.Conn) (string, map[string]any, error) {
	_, data, err := ws.ReadMessage()
	if err != nil {
		return "", nil, err
	}
	var m map[string]any
	if err := jsonUnmarshal(data, &m); err != nil {
		return "", nil, err
	}
	typ, _ := m["type"].(string)
	return typ, m, nil
}

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// TestBytesSentWithTheUpgradeAreRead: a client that sends its hello in the
// same packet as the upgrade request has it read by the HTTP server's
// buffer before the WebSocket takes over; the connection reads those bytes
// first, then parks and is woken for the next message, whether pongs come
// alone (the poller takes them), or in front of a message.
func TestBytesSentWithTheUpgradeAreRead(t *testing.T) {
	s := newStack(t, stackOptions{})
	nc, err := net.Dial("tcp", strings.TrimPrefix(s.http.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	frame := func(payload string) []byte { return maskedFrame(0x81, payload) }
	req := "GET /v1/docs/early/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	out := append([]byte(req), frame(`{"type":"hello","v":1,"client":"early-bird"}`)...)
	if _, err := nc.Write(out); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	readFrame := func() map[string]any {
		t.Helper()
		h := make([]byte, 2)
		if _, err := io.ReadFull(br, h); err != nil {
			t.Fatalf("read frame: %v", err)
		}
		n := int(h[1] & 0x7F)
		switch n {
		case 126:
			ext := make([]byte, 2)
			_, _ = io.ReadFull(br, ext)
			n = int(binary.BigEndian.Uint16(ext))
		case 127:
			ext := make([]byte, 8)
			_, _ = io.ReadFull(br, ext)
			n = int(binary.BigEndian.Uint64(ext))
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(br, payload); err != nil {
			t.Fatalf("read payload: %v", err)
		}
		var m map[string]any
		if err := json.Unmarshal(payload, &m); err != nil {
			t.Fatalf("frame %q: %v", payload, err)
		}
		return m
	}
	if m := readFrame(); m["type"] != "welcome" {
		t.Fatalf("first frame %v, want the welcome", m)
	}
	// The connection has parked by now; each step below wakes it with
	// what one write brings: pongs alone (taken by the poller, the
	// connection stays parked), then pongs with a message behind them in
	// the same packet (the reader must start and handle both), then the
	// message alone.
	pong := maskedFrame(0x8A, "")
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	op3 := frame(`{"type":"op","seq":3,"rev":2,"op":[3,"?"]}`)
	// With a pong in front, longer than what the poller reads at once
	// (128 bytes): part of it stays in the socket behind the part the
	// poller hands to the reader.
	long := strings.Repeat("x", 80)
	op4 := frame(`{"type":"op","seq":4,"rev":3,"op":[4,"` + long + `"]}`)
	if len(pong)+len(op4) <= 128 {
		t.Fatalf("pong and op4 are %d bytes, want more than 128", len(pong)+len(op4))
	}
	op5 := frame(`{"type":"op","seq":5,"rev":4,"op":[` + strconv.Itoa(4+len(long)) + `,"."]}`)
	steps := []struct {
		name string
		out  []byte
		rest []byte // written a moment after out, when the connection may have parked again
		text string // the document's text once the step's op is acknowledged ("": no op)
	}{
		{"pongs alone", cat(pong, maskedFrame(0x8A, "beat")), nil, ""},
		{"pongs, then an op", cat(pong, frame(`{"type":"op","seq":1,"rev":0,"op":["hi"]}`)), nil, "hi"},
		{"an op alone", frame(`{"type":"op","seq":2,"rev":1,"op":[2,"!"]}`), nil, "hi!"},
		{"a pong and the start of an op, then its end", cat(pong, op3[:9]), op3[9:], "hi!?"},
		{"a pong and a long op", cat(pong, op4), nil, "hi!?" + long},
		{"part of a pong, then its end and an op", pong[:3], cat(pong[3:], op5), "hi!?" + long + "."},
	}
	for _, st := range steps {
		time.Sleep(100 * time.Millisecond) // parked again
		if _, err := nc.Write(st.out); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if st.rest != nil {
			time.Sleep(100 * time.Millisecond)
			if _, err := nc.Write(st.rest); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
		}
		if st.text == "" {
			continue
		}
		for {
			m := readFrame()
			if m["type"] == "ack" {
				break
			}
			if m["type"] == "error" {
				t.Fatalf("%s: %v", st.name, m)
			}
		}
		if d := s.doc("early"); d.Text != st.text {
			t.Fatalf("%s: document %q, want %q", st.name, d.Text, st.text)
		}
	}
}

// maskedFrame is a client's frame (masked, as clients must) with a
// payload under 126 bytes; first is the FIN bit and opcode.
func maskedFrame(first byte, payload string) []byte {
	mask := []byte{1, 2, 3, 4}
	b := []byte{first, 0x80 | byte(len(payload))}
	b = append(b, mask...)
	for i := range len(payload) {
		b = append(b, payload[i]^mask[i%4])
	}
	return b
}

// TestParkedConnectionSeesItsClientLeave: a client that goes away while
// its connection is parked is noticed at once (the socket turns readable
// at its end), not at the next ping.
func TestParkedConnectionSeesItsClientLeave(t *testing.T) {
	s := newStack(t, stackOptions{}) // pings every 20 s: too late to matter
	ctx := testContext(t)
	watcher := s.client(ctx, "leaving", "watcher")
	r := s.raw("leaving", nil)
	r.hello("", "leaver")
	conn, _ := r.expect("welcome")["conn"].(string)
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := watcher.WaitFor(wctx, func() bool { _, ok := watcher.Others()[conn]; return ok }); err != nil {
		t.Fatalf("watcher never saw the leaver: %v", err)
	}
	time.Sleep(200 * time.Millisecond) // parked by now
	_ = r.ws.NetConn().Close()         // gone, without a close frame
	if err := watcher.WaitFor(wctx, func() bool { _, ok := watcher.Others()[conn]; return !ok }); err != nil {
		t.Fatalf("the leaver is still present: %v", err)
	}
}
