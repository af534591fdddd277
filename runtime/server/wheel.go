package server

import (
	"sync"
	"time"
)

// wheelSlots is how many groups the connections are spread over: one
// group is visited per tick, so every connection is visited once per ping
// interval while the process wakes wheelSlots times per interval, however
// many connections it holds.
const wheelSlots = 20

// wheel pings every connection once per ping interval and closes the ones
// whose pongs stopped, with one ticker for the whole process instead of a
// timer per connection. The ticker runs only while there are connections.
type wheel struct {
	tick  time.Duration
	visit func(c *conn, now time.Time)

	mu      sync.Mutex
	slots   [wheelSlots]map[*conn]struct{}
	next    int // the slot the next tick visits
	count   int
	running bool
	batch   []*conn // reused by the ticker goroutine
}

func newWheel(interval time.Duration, visit func(c *conn, now time.Time)) *wheel {
	w := &wheel{tick: max(interval/wheelSlots, time.Millisecond), visit: visit}
	for i := range w.slots {
		w.slots[i] = map[*conn]struct{}{}
	}
	return w
}

// add puts c in the slot visited last, so its first visit comes about one
// interval from now.
func (w *wheel) add(c *conn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	slot := (w.next + wheelSlots - 1) % wheelSlots
	w.slots[slot][c] = struct{}{}
	c.slot = slot
	w.count++
	if !w.running {
		w.running = true
		go w.run()
	}
}

func (w *wheel) remove(c *conn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.slots[c.slot][c]; ok {
		delete(w.slots[c.slot], c)
		w.count--
	}
}

func (w *wheel) run() {
	t := time.NewTicker(w.tick)
	defer t.Stop()
	last := time.Now()
	for now := range t.C {
		// A ticker drops ticks when the process is busy: the slots due
		// are counted from the time that passed, so that every
		// connection is still visited once per interval.
		due := min(int(now.Sub(last)/w.tick), wheelSlots)
		if due < 1 {
			continue
		}
		last = last.Add(time.Duration(due) * w.tick)
		if now.Sub(last) > w.tick {
			last = now // more than a whole turn behind: start afresh
		}
		w.mu.Lock()
		if w.count == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		w.batch = w.batch[:0]
		for range due {
			for c := range w.slots[w.next] {
				w.batch = append(w.batch, c)
			}
			w.next = (w.next + 1) % wheelSlots
		}
		batch := w.batch
		w.mu.Unlock()
		for i, c := range batch {
			w.visit(c, now)
			batch[i] = nil
		}
	}
}
