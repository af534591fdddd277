package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tandem-dev/tandem/runtime/client"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/protocol"
	"github.com/tandem-dev/tandem/runtime/server"
)

// In anonymous mode a page on a domain the attacker points at a local
// server is same-origin to the browser; only the Host header gives it away.
func TestHostCheck(t *testing.T) {
	tests := []struct {
		name      string
		checkHost bool
		origins   []string
		hosts     []string
		host      string
		want      int
	}{
		{"loopback ip", true, nil, nil, "127.0.0.1:8080", http.StatusOK},
		{"ipv6 loopback", true, nil, nil, "[::1]:8080", http.StatusOK},
		{"lan ip", true, nil, nil, "192.168.1.20:8080", http.StatusOK},
		{"localhost", true, nil, nil, "localhost:8080", http.StatusOK},
		{"localhost without port", true, nil, nil, "localhost", http.StatusOK},
		{"sub.localhost", true, nil, nil, "notes.localhost:8080", http.StatusOK},
		{"rebound name", true, nil, nil, "attacker.example:8080", http.StatusMisdirectedRequest},
		{"rebound name, trailing dot", true, nil, nil, "attacker.example.:8080", http.StatusMisdirectedRequest},
		{"configured origin's host", true, []string{"https://editor.example"}, nil, "editor.example", http.StatusOK},
		{"other host with origins set", true, []string{"https://editor.example"}, nil, "attacker.example", http.StatusMisdirectedRequest},
		{"any origin", true, []string{"*"}, nil, "attacker.example", http.StatusOK},
		{"check off (jwt mode)", false, nil, nil, "attacker.example", http.StatusOK},
		{"configured host", true, nil, []string{"notes", "notes.team.svc"}, "notes.team.svc:8080", http.StatusOK},
		{"configured host, other case", true, nil, []string{"Notes.Team.Svc"}, "notes.team.svc", http.StatusOK},
		{"unconfigured host", true, nil, []string{"notes"}, "notes.evil.example", http.StatusMisdirectedRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStack(t, stackOptions{checkHost: tc.checkHost, origins: tc.origins, hosts: tc.hosts})
			for _, path := range []string{"/v1/docs/rebind", "/v1/docs/rebind/ops"} {
				req, err := http.NewRequest(http.MethodGet, s.http.URL+path, nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Host = tc.host
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.want {
					t.Fatalf("GET %s with Host %q = %d %s, want %d", path, tc.host, resp.StatusCode, body, tc.want)
				}
			}
		})
	}
}

// bigDoc makes a document of n bytes through a client.
func bigDoc(t *testing.T, s *stack, docID string, n int) {
	t.Helper()
	ctx := testContext(t)
	c := s.client(ctx, docID, "seed")
	if err := c.Edit(ot.Op{{Insert: strings.Repeat("x", n)}}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitSynced(ctx, -1); err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func bigLimits() server.Limits {
	return server.Limits{OpsPerSecond: 10000, OpsBurst: 10000, MaxMessageBytes: 64 << 20, MaxOpBytes: 64 << 20}
}

// dialNonReader opens a TCP connection with a tiny receive buffer, sends
// one GET and never reads the answer.
func dialNonReader(t *testing.T, s *stack, path string) net.Conn {
	t.Helper()
	d := smallBufferDialer()
	nc, err := d.Dial("tcp", strings.TrimPrefix(s.http.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if _, err := io.WriteString(nc, "GET "+path+" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	return nc
}

// A client that stops reading an HTTP response is cut after the write
// timeout instead of holding the handler and its memory forever.
func TestHTTPResponseWriteDeadline(t *testing.T) {
	s := newStack(t, stackOptions{limits: bigLimits(), maxDoc: 64 << 20, wtime: 300 * time.Millisecond})
	const size = 16 << 20 // more than the kernel buffers on both ends
	bigDoc(t, s, "big", size)
	for _, path := range []string{"/v1/docs/big", "/v1/docs/big/ops?from=0"} {
		t.Run(path, func(t *testing.T) {
			nc := dialNonReader(t, s, path)
			// Wait for the answer to start (preparing it may take a while
			// on a slow machine), then stall well past the write timeout.
			_ = nc.SetReadDeadline(time.Now().Add(60 * time.Second))
			first := make([]byte, 1)
			if _, err := io.ReadFull(nc, first); err != nil {
				t.Fatalf("no answer at all: %v", err)
			}
			time.Sleep(3 * time.Second)
			resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(bytes.NewReader(first), nc)), nil)
			if err != nil {
				t.Fatalf("no answer at all: %v", err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil {
				t.Fatalf("read the whole answer (%d bytes) after stalling past the write timeout; the server should have cut it", n)
			}
			if n >= size {
				t.Fatalf("read %d bytes, want the answer cut short", n)
			}
		})
	}
}

// getPage fetches one page of history and returns its operations and the
// next page's path ("" on the last page).
func getPage(t *testing.T, s *stack, path string) (int, []protocol.Op, string) {
	t.Helper()
	resp, err := http.Get(s.http.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ops []protocol.Op
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&ops); err != nil {
			t.Fatalf("GET %s: decode: %v", path, err)
		}
	}
	next := ""
	if l := resp.Header.Get("Link"); l != "" {
		m := regexp.MustCompile(`^<([^>]+)>; rel="next"$`).FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("GET %s: Link %q", path, l)
		}
		next = m[1]
	}
	return resp.StatusCode, ops, next
}

func TestHistoryPaging(t *testing.T) {
	s := newStack(t, stackOptions{limits: bigLimits(), maxDoc: 64 << 20})
	ctx := testContext(t)
	c := s.client(ctx, "paged", "writer")
	commitInserts(t, ctx, c, 25)
	tests := []struct {
		name  string
		path  string
		pages []int // operations on each page, following the Link headers
		first int64 // first revision returned
	}{
		{"default limit", "/v1/docs/paged/ops", []int{25}, 1},
		{"limit 10", "/v1/docs/paged/ops?limit=10", []int{10, 10, 5}, 1},
		{"limit 5 of 25", "/v1/docs/paged/ops?limit=5", []int{5, 5, 5, 5, 5, 0}, 1},
		{"from and to", "/v1/docs/paged/ops?from=5&to=12&limit=5", []int{5, 2}, 6},
		{"limit above the maximum", "/v1/docs/paged/ops?limit=100000", []int{25}, 1},
		{"from at the head", "/v1/docs/paged/ops?from=25", []int{0}, 0},
		{"from beyond any revision", "/v1/docs/paged/ops?from=9223372036854775800", []int{0}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []int
			want := tc.first
			for path := tc.path; path != ""; {
				code, ops, next := getPage(t, s, path)
				if code != http.StatusOK {
					t.Fatalf("GET %s = %d", path, code)
				}
				for _, op := range ops {
					if op.Rev != want {
						t.Fatalf("GET %s: revision %d, want %d", path, op.Rev, want)
					}
					want++
				}
				got = append(got, len(ops))
				path = next
				if len(got) > 10 {
					t.Fatal("pages never end")
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.pages) {
				t.Fatalf("pages %v, want %v", got, tc.pages)
			}
		})
	}
	for _, bad := range []string{"limit=0", "limit=-1", "limit=x"} {
		if code, _, _ := getPage(t, s, "/v1/docs/paged/ops?"+bad); code != http.StatusBadRequest {
			t.Errorf("%s: HTTP %d, want 400", bad, code)
		}
	}

	// Large operations: a page stops at about 1 MiB, whatever the limit.
	big := s.client(ctx, "large-ops", "writer")
	for i := range 12 {
		err := big.EditLen(func(n int) ot.Op {
			return appendText(n, strings.Repeat(string(rune('a'+i)), 300<<10))
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := big.WaitSynced(ctx, -1); err != nil { // one revision each
			t.Fatal(err)
		}
	}
	if err := big.WaitSynced(ctx, -1); err != nil {
		t.Fatal(err)
	}
	var sizes []int
	total := 0
	for path := "/v1/docs/large-ops/ops?limit=100"; path != ""; {
		_, ops, next := getPage(t, s, path)
		sizes = append(sizes, len(ops))
		total += len(ops)
		path = next
	}
	if total != 12 || sizes[0] > 4 {
		t.Fatalf("pages of 300 KiB operations: %v, want 12 in all and at most 4 per page", sizes)
	}
}

// heapAfterGC is the live heap.
func heapAfterGC() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// Clients that ask for the whole history and never read must not pin
// copies of it: the issue measured 2.6 GB for 40 of them.
func TestHistoryNonReadersHoldLittle(t *testing.T) {
	s := newStack(t, stackOptions{limits: bigLimits(), maxDoc: 64 << 20, wtime: 30 * time.Second})
	ctx := testContext(t)
	c := s.client(ctx, "hist", "writer")
	const ops, opSize, readers = 200, 60 << 10, 40
	replaceText(t, ctx, c, ops, opSize)
	before := heapAfterGC()
	for range readers {
		dialNonReader(t, s, "/v1/docs/hist/ops?from=0&limit=10000")
	}
	time.Sleep(2 * time.Second) // every handler is stuck writing by now
	grown := int64(heapAfterGC()) - int64(before)
	t.Logf("%d non-reading history requests over %d operations of %d KiB: heap grew %.1f MiB", readers, ops, opSize>>10, float64(grown)/(1<<20))
	// Whole copies would be readers × 12 MiB; allow 1 MiB per request.
	if grown > readers<<20 {
		t.Fatalf("heap grew %.1f MiB for %d non-reading clients", float64(grown)/(1<<20), readers)
	}
}

// appendText inserts text at the end of a document of n characters.
func appendText(n int, text string) ot.Op {
	if n == 0 {
		return ot.Op{{Insert: text}}
	}
	return ot.Op{{Retain: n}, {Insert: text}}
}

// smallBufferDialer dials with a tiny receive buffer, so that a client
// that does not read leaves almost everything on the server's side.
func smallBufferDialer() *net.Dialer {
	return &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
}

// A large document is encoded once per revision and shared by every
// reader: clients that fetch it, or join it, and never read must not each
// pin a copy (the issue measured 2.2 GB for 150 GETs of 8 MB).
func TestLargeTextSharedByNonReaders(t *testing.T) {
	const size, readers = 8 << 20, 40
	for _, mode := range []string{"get", "join"} {
		t.Run(mode, func(t *testing.T) {
			s := newStack(t, stackOptions{limits: bigLimits(), maxDoc: 64 << 20, wtime: 30 * time.Second})
			bigDoc(t, s, "big", size)
			_ = s.doc("big") // load and encode once before measuring
			before := heapAfterGC()
			for i := range readers {
				if mode == "get" {
					dialNonReader(t, s, "/v1/docs/big")
					continue
				}
				d := websocket.Dialer{NetDial: smallBufferDialer().Dial}
				ws, _, err := d.Dial(s.wsURL("big"), nil)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { ws.Close() })
				if err := ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"type":"hello","v":1,"client":"r%d"}`, i))); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(2 * time.Second) // every answer is stuck by now
			grown := int64(heapAfterGC()) - int64(before)
			t.Logf("%d non-reading %s of an %d MiB document: heap grew %.1f MiB", readers, mode, size>>20, float64(grown)/(1<<20))
			// One copy per reader would be readers × 8 MiB or more.
			if grown > 2*size+readers<<18 {
				t.Fatalf("heap grew %.1f MiB", float64(grown)/(1<<20))
			}
		})
	}
}

// metric returns the value of a gauge or counter (summed over labels
// matching label=value, when given).
func metric(t *testing.T, s *stack, name, label, value string) float64 {
	t.Helper()
	mfs, err := s.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			ok := label == ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					ok = true
				}
			}
			if !ok {
				continue
			}
			if g := m.GetGauge(); g != nil {
				sum += g.GetValue()
			}
			if c := m.GetCounter(); c != nil {
				sum += c.GetValue()
			}
		}
	}
	return sum
}

// waitMetric polls until cond holds for the metric's value.
func waitMetric(t *testing.T, s *stack, name, label, value string, cond func(float64) bool) float64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		v := metric(t, s, name, label, value)
		if cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s{%s=%q} = %v, never reached the expected value", name, label, value, v)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The process as a whole holds at most about --max-pending-write-bytes for
// clients that do not read: beyond it, HTTP reads get 503 and slow
// WebSocket clients are disconnected; what they held is given back.
func TestPendingWriteBound(t *testing.T) {
	const bound = 2 << 20
	t.Run("http", func(t *testing.T) {
		s := newStack(t, stackOptions{limits: bigLimits(), maxDoc: 64 << 20, pending: bound, wtime: time.Second})
		bigDoc(t, s, "big", 8<<20)
		bigDoc(t, s, "other", 3<<20)
		// A client that never reads an 8 MiB document holds its text, which
		// the kernel buffers cannot absorb: the process is above the bound.
		dialNonReader(t, s, "/v1/docs/big")
		held := waitMetric(t, s, "tandem_pending_write_bytes", "", "", func(v float64) bool { return v >= 8<<20 })
		if held > 9<<20 {
			t.Fatalf("%.1f MiB pending for one 8 MiB text", held/(1<<20))
		}
		for _, tc := range []struct {
			path string
			want int
		}{
			{"/v1/docs/other", http.StatusServiceUnavailable},
			{"/v1/docs/other/ops?from=0", http.StatusServiceUnavailable},
			{"/v1/docs/big", http.StatusOK}, // already held: costs nothing more
		} {
			resp, err := http.Get(s.http.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("GET %s above the bound = %d %.100s, want %d", tc.path, resp.StatusCode, body, tc.want)
			}
			if tc.want == http.StatusServiceUnavailable && (resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), `"unavailable"`)) {
				t.Fatalf("GET %s: 503 without Retry-After or code: %s", tc.path, body)
			}
		}
		if got := metric(t, s, "tandem_pending_write_refusals_total", "kind", "http"); got != 2 {
			t.Fatalf("http refusals = %v, want 2", got)
		}
		// The stalled client is cut by the write timeout and gives back
		// what it held; requests are served again.
		waitMetric(t, s, "tandem_pending_write_bytes", "", "", func(v float64) bool { return v == 0 })
		if d := s.doc("other"); len(d.Text) != 3<<20 {
			t.Fatalf("after the slow reader left: %d bytes", len(d.Text))
		}
	})

	t.Run("websocket members", func(t *testing.T) {
		// The write timeout outlasts the test's writes: slow members are
		// closed by the bound, not by the timeout.
		s := newStack(t, stackOptions{limits: bigLimits(), maxDoc: 64 << 20, pending: bound, wtime: 10 * time.Second, queue: 64 << 20})
		ctx := testContext(t)
		w := s.client(ctx, "ws", "writer")
		var slow []*websocket.Conn
		for i := range 5 {
			d := websocket.Dialer{NetDial: smallBufferDialer().Dial}
			ws, _, err := d.Dial(s.wsURL("ws"), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ws.Close() })
			if err := ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"type":"hello","v":1,"client":"slow%d"}`, i))); err != nil {
				t.Fatal(err)
			}
			slow = append(slow, ws)
		}
		waitMetric(t, s, "tandem_connections", "", "", func(v float64) bool { return v == 6 })
		peak := 0.0
		for i := range 30 {
			if err := w.EditLen(func(n int) ot.Op { return appendText(n, strings.Repeat(string(rune('a'+i%26)), 200<<10)) }); err != nil {
				t.Fatal(err)
			}
			if err := w.WaitSynced(ctx, -1); err != nil {
				t.Fatal(err)
			}
			peak = max(peak, metric(t, s, "tandem_pending_write_bytes", "", ""))
		}
		t.Logf("5 non-reading members, 30 operations of 200 KiB: peak %.1f MiB pending", peak/(1<<20))
		// The bound plus one 200 KiB frame (and its encoding overhead).
		if peak > bound+(300<<10) {
			t.Fatalf("peak %.0f bytes pending, bound %d", peak, bound)
		}
		if got := metric(t, s, "tandem_pending_write_refusals_total", "kind", "websocket"); got == 0 {
			t.Fatal("no slow connection was refused above the bound")
		}
		if !w.Connected() {
			t.Fatal("the reading writer was disconnected")
		}
		waitMetric(t, s, "tandem_connections", "", "", func(v float64) bool { return v == 1 })
		waitMetric(t, s, "tandem_pending_write_bytes", "", "", func(v float64) bool { return v == 0 })
	})
}

// A welcome that resumes over many large operations is encoded for one
// client alone; above the bound it is refused even to a new connection.
func TestPendingBoundRefusesLargeResumes(t *testing.T) {
	const bound = 2 << 20
	s := newStack(t, stackOptions{limits: bigLimits(), maxDoc: 64 << 20, pending: bound, wtime: 10 * time.Second})
	ctx := testContext(t)
	w := s.client(ctx, "resume", "writer")
	// 40 operations of 300 KiB: a resume from revision 0 is 12 MiB, more
	// than the kernel's socket buffers take from a client that never reads.
	replaceText(t, ctx, w, 40, 300<<10)
	for i := range 6 {
		d := websocket.Dialer{NetDial: smallBufferDialer().Dial}
		ws, _, err := d.Dial(s.wsURL("resume"), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.Close() })
		// rev 0: resume over all 40 operations, never read.
		if err := ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"type":"hello","v":1,"client":"late%d","rev":0}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	// Sample the gauge until a resume is refused.
	peak := 0.0
	deadline := time.Now().Add(60 * time.Second)
	for metric(t, s, "tandem_pending_write_refusals_total", "kind", "websocket") == 0 {
		peak = max(peak, metric(t, s, "tandem_pending_write_bytes", "", ""))
		if time.Now().After(deadline) {
			t.Fatalf("no resume was refused above the bound (peak %.1f MiB pending)", peak/(1<<20))
		}
		time.Sleep(10 * time.Millisecond)
	}
	for range 50 {
		peak = max(peak, metric(t, s, "tandem_pending_write_bytes", "", ""))
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("6 non-reading joins resuming over 12 MiB each: peak %.1f MiB pending", peak/(1<<20))
	if peak > bound+(13<<20) { // the bound plus one welcome
		t.Fatalf("%.1f MiB pending, bound %d MiB", peak/(1<<20), bound>>20)
	}
}

// replaceText commits n revisions through c, each replacing the whole text
// with size bytes: a long history of large operations on a small document
// (cheap for the client, which keeps the text as one string).
func replaceText(t *testing.T, ctx context.Context, c *client.Client, n, size int) {
	t.Helper()
	for i := range n {
		err := c.EditLen(func(l int) ot.Op {
			ins := strings.Repeat(string(rune('a'+i%26)), size)
			if l == 0 {
				return ot.Op{{Insert: ins}}
			}
			return ot.Op{{Delete: l}, {Insert: ins}}
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.WaitSynced(ctx, -1); err != nil { // one revision each
			t.Fatal(err)
		}
	}
}
