package server

import (
	"errors"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-dev/tandem/runtime/protocol"
)

// pending accounts for the memory the process holds for clients that have
// not read it yet: frames waiting in (or being written to) WebSocket
// connections, the shared text of documents being sent, and history pages
// being written. A shared encoding counts once, however many clients wait
// for it. Above max, new work for clients that are already behind is
// refused: slow WebSocket clients are disconnected (4010) and HTTP
// requests answered 503, so slow readers as a whole cannot exhaust memory.
type pending struct {
	max     int64
	used    atomic.Int64
	refused *prometheus.CounterVec
}

func newPending(max int64, reg prometheus.Registerer) *pending {
	p := &pending{max: max}
	used := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tandem_pending_write_bytes",
		Help: "Bytes held for clients that have not read them yet (WebSocket frames, document texts and history pages being written); shared encodings count once.",
	}, func() float64 { return float64(p.used.Load()) })
	p.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tandem_pending_write_refusals_total",
		Help: "Work refused because the pending write bytes were above --max-pending-write-bytes, by kind (websocket: a slow connection closed; http: a request answered 503).",
	}, []string{"kind"})
	if reg != nil {
		register(reg, used)
		p.refused = register(reg, p.refused)
	}
	return p
}

// register registers c, or returns the collector already registered under
// its name (several servers sharing one registry in tests).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}

// full reports whether the bound is reached.
func (p *pending) full() bool { return p.used.Load() >= p.max }

// add charges n bytes (negative: releases them).
func (p *pending) add(n int64) { p.used.Add(n) }

// held reports whether holding f would cost nothing: other connections
// hold it, and its shared text, already.
func (p *pending) held(f *protocol.Frame) bool {
	if t := f.SharedText(); t != nil && !t.Holds.Held() {
		return false
	}
	return f.Holds.Held()
}

// holdFrame charges f's bytes unless another connection already holds it.
func (p *pending) holdFrame(f *protocol.Frame, size int) {
	t := f.SharedText()
	own := int64(size)
	if t != nil {
		own -= int64(len(t.JSON))
		p.holdText(t)
	}
	if f.Holds.Hold() {
		p.add(own)
	}
}

// releaseFrame undoes holdFrame.
func (p *pending) releaseFrame(f *protocol.Frame, size int) {
	t := f.SharedText()
	own := int64(size)
	if t != nil {
		own -= int64(len(t.JSON))
		p.releaseText(t)
	}
	if f.Holds.Release() {
		p.add(-own)
	}
}

func (p *pending) holdText(t *protocol.EncodedText) {
	if t.Holds.Hold() {
		p.add(int64(len(t.JSON)))
	}
}

func (p *pending) releaseText(t *protocol.EncodedText) {
	if t.Holds.Release() {
		p.add(-int64(len(t.JSON)))
	}
}
