package server

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingConn counts the writes that reach the network.
type countingConn struct {
	net.Conn
	writes, deadlines atomic.Int64
}

func (c *countingConn) SetWriteDeadline(t time.Time) error {
	c.deadlines.Add(1)
	return c.Conn.SetWriteDeadline(t)
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func TestCorkConnGathersABurst(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	received := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			received <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		received <- b
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	counted := &countingConn{Conn: nc}
	pool := &sync.Pool{New: func() any { b := make([]byte, 0, 16); return &b }}
	cc := &corkConn{Conn: counted, pool: pool}

	write := func(s string) {
		t.Helper()
		if n, err := cc.Write([]byte(s)); err != nil || n != len(s) {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	write("a") // uncorked: straight through
	cc.cork()
	for _, s := range []string{"b", "cc", "ddd", "a frame longer than the pooled buffer's capacity"} {
		if err := cc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		write(s)
	}
	if got := counted.deadlines.Load(); got != 0 {
		t.Fatalf("%d deadlines reached the connection while corked, want 0", got)
	}
	if got := counted.writes.Load(); got != 1 {
		t.Fatalf("%d writes reached the network while corked, want only the first", got)
	}
	if err := cc.uncork(); err != nil {
		t.Fatal(err)
	}
	if got := counted.writes.Load(); got != 2 {
		t.Fatalf("%d writes after uncork, want 2 (one for the whole burst)", got)
	}
	if got := counted.deadlines.Load(); got != 1 {
		t.Fatalf("%d deadlines set for the burst, want 1", got)
	}
	if err := cc.uncork(); err != nil { // nothing gathered: no write
		t.Fatal(err)
	}
	write("e")
	nc.Close()
	want := "abccddda frame longer than the pooled buffer's capacitye"
	if got := string(<-received); got != want {
		t.Fatalf("peer received %q, want %q", got, want)
	}
	if counted.writes.Load() != 3 {
		t.Fatalf("writes = %d, want 3", counted.writes.Load())
	}
}
