//go:build !linux

package server

import (
	"errors"
	"net"
)

// poller is Linux-only (epoll); elsewhere every connection keeps a
// goroutine blocked in its read.
type poller struct{}

func newPoller() *poller { return nil }

func socketFD(net.Conn) (int32, bool) { return 0, false }

func (p *poller) arm(*conn) error { return errNoPoller }

func (p *poller) disarm(*conn) {}

var errNoPoller = errors.New("no poller on this platform")

func writeNonblocking(int32, []byte) (int, error) { return 0, errNoPoller }

func readNonblocking(int32, []byte) (int, error) { return 0, errNoPoller }
