//go:build linux

package server

import (
	"fmt"
	"net"
	"sync"
	"syscall"
	"unsafe"
)

// poller waits, for the whole process, until parked connections have
// something to read (epoll on their sockets), so that an idle connection
// needs no goroutine blocked in a read. A socket is armed one-shot: it
// reports once and stays quiet until its reader parks again. The
// goroutine that waits runs only while connections are parked or armed.
type poller struct {
	mu      sync.Mutex
	epfd    int
	running bool
	conns   map[int32]*conn
}

func newPoller() *poller { return &poller{epfd: -1, conns: map[int32]*conn{}} }

// socketFD returns the descriptor of a TCP connection; false for anything
// else (the connection then reads with a goroutine of its own).
func socketFD(nc net.Conn) (int32, bool) {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return 0, false
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0, false
	}
	fd := int32(-1)
	if err := raw.Control(func(f uintptr) { fd = int32(f) }); err != nil || fd < 0 {
		return 0, false
	}
	return fd, true
}

// arm has c woken (c.wake) once its socket is readable or closed by the
// peer. The caller holds c.mu.
func (p *poller) arm(c *conn) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running {
		fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return fmt.Errorf("epoll_create1: %w", err)
		}
		p.epfd, p.running = fd, true
		go p.run(fd)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: c.fd}
	op := syscall.EPOLL_CTL_MOD
	if !c.armed {
		op = syscall.EPOLL_CTL_ADD
	}
	if err := syscall.EpollCtl(p.epfd, op, int(c.fd), &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	c.armed = true
	p.conns[c.fd] = c
	return nil
}

// disarm forgets c; it must be called before c's socket is closed, so that
// a descriptor the kernel reuses is never mistaken for c's. The caller
// holds c.mu.
func (p *poller) disarm(c *conn) {
	if !c.armed {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	c.armed = false
	if p.conns[c.fd] == c {
		delete(p.conns, c.fd)
	}
	if p.running {
		_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(c.fd), nil)
	}
}

func (p *poller) run(epfd int) {
	events := make([]syscall.EpollEvent, 128)
	for {
		// A timeout, so the goroutine (and its thread, blocked in the
		// system call) ends once no connection is armed.
		n, err := syscall.EpollWait(epfd, events, 1000)
		if err != nil && err != syscall.EINTR {
			n = 0
		}
		p.mu.Lock()
		woken := make([]*conn, 0, max(n, 0))
		for _, ev := range events[:max(n, 0)] {
			if c := p.conns[ev.Fd]; c != nil {
				woken = append(woken, c)
			}
		}
		if n <= 0 && len(p.conns) == 0 {
			p.running = false
			p.epfd = -1
			p.mu.Unlock()
			_ = syscall.Close(epfd)
			return
		}
		p.mu.Unlock()
		for _, c := range woken {
			c.wake()
		}
	}
}

// writeNonblocking writes b to the socket once, without waiting (Go's
// sockets are non-blocking): syscall.EAGAIN when its buffer is full.
func writeNonblocking(fd int32, b []byte) (int, error) {
	n, err := syscall.Write(int(fd), b)
	return max(n, 0), err
}

// readNonblocking consumes up to len(b) bytes the socket holds, without
// waiting.
func readNonblocking(fd int32, b []byte) (int, error) {
	n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		syscall.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
