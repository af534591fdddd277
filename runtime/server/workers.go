package server

import "time"

// workers runs the connections' readers and writers. A connection that is
// busy in bursts (a person typing, a client in a closed loop) would
// otherwise start a fresh reader goroutine for each message it sends
// (its socket wakes the poller) and a fresh writer for each burst it is
// sent, and each new goroutine grows its stack again through the JSON
// decoder and the WebSocket library: in a profile of 20 writers on one
// document that growth was about a tenth of the runtime's CPU. A worker
// that has finished a task waits a moment for the next, with its stack
// already grown, and exits once it has waited idleFor; so an idle server
// keeps none, and the number kept follows the peak of concurrent work.
type workers struct {
	tasks   chan task // unbuffered: a send succeeds only when a worker waits
	idleFor time.Duration
}

// task is one run of a connection's reader or writer.
type task struct {
	c    *conn
	kind taskKind
}

type taskKind uint8

const (
	taskRead      taskKind = iota // readLoop(false)
	taskReadWoken                 // readLoop(true): the poller saw the socket readable
	taskWrite                     // write
)

func (t task) run() {
	switch t.kind {
	case taskRead:
		t.c.readLoop(false)
	case taskReadWoken:
		t.c.readLoop(true)
	case taskWrite:
		t.c.write()
	}
}

// workerIdle is how long a worker waits for its next task: long enough to
// span the pauses of a connection in use (a person typing, an ack's round
// trip), short enough that an idle server soon holds none.
const workerIdle = time.Second

func newWorkers(idleFor time.Duration) *workers {
	return &workers{tasks: make(chan task), idleFor: idleFor}
}

// start runs t on a waiting worker, or on a new one when none waits. It
// never blocks: it is called with a connection's lock held.
func (w *workers) start(t task) {
	select {
	case w.tasks <- t:
	default:
		go w.loop(t)
	}
}

func (w *workers) loop(t task) {
	var idle *time.Timer
	for {
		t.run()
		t = task{} // hold no connection while waiting
		if idle == nil {
			idle = time.NewTimer(w.idleFor)
		} else {
			idle.Reset(w.idleFor)
		}
		select {
		case t = <-w.tasks:
		case <-idle.C:
			return
		}
	}
}
