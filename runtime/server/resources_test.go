package server_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/server"
)

// In anonymous mode a page on a domain the attacker points at a local
// server is same-origin to the browser; only the Host header gives it away.
func TestHostCheck(t *testing.T) {
	tests := []struct {
		name      string
		checkHost bool
		origins   []string
		host      string
		want      int
	}{
		{"loopback ip", true, nil, "127.0.0.1:8080", http.StatusOK},
		{"ipv6 loopback", true, nil, "[::1]:8080", http.StatusOK},
		{"lan ip", true, nil, "192.168.1.20:8080", http.StatusOK},
		{"localhost", true, nil, "localhost:8080", http.StatusOK},
		{"localhost without port", true, nil, "localhost", http.StatusOK},
		{"sub.localhost", true, nil, "notes.localhost:8080", http.StatusOK},
		{"rebound name", true, nil, "attacker.example:8080", http.StatusMisdirectedRequest},
		{"rebound name, trailing dot", true, nil, "attacker.example.:8080", http.StatusMisdirectedRequest},
		{"configured origin's host", true, []string{"https://editor.example"}, "editor.example", http.StatusOK},
		{"other host with origins set", true, []string{"https://editor.example"}, "attacker.example", http.StatusMisdirectedRequest},
		{"any origin", true, []string{"*"}, "attacker.example", http.StatusOK},
		{"check off (jwt mode)", false, nil, "attacker.example", http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStack(t, stackOptions{checkHost: tc.checkHost, origins: tc.origins})
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
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
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
			time.Sleep(3 * time.Second) // well past the write timeout
			_ = nc.SetReadDeadline(time.Now().Add(30 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
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
