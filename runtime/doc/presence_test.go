package doc_test

import (
	"context"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/runtime/doc"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/protocol"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/memory"
)

// presenceOf waits for the next presence message about conn.
func presenceOf(t *testing.T, s *sink, conn string) protocol.Presence {
	t.Helper()
	for {
		if p := next[protocol.Presence](t, s); p.Conn == conn {
			return p
		}
	}
}

// ackOf waits for the ack of seq and returns its revision.
func ackOf(t *testing.T, s *sink, seq int64) int64 {
	t.Helper()
	for {
		if a := next[protocol.Ack](t, s); a.Seq == seq {
			return a.Rev
		}
	}
}

func cursorsIn(w protocol.Welcome) map[string]store.Cursor {
	out := map[string]store.Cursor{}
	for _, p := range w.Presence {
		if p.Cursor != nil {
			out[p.Conn] = *p.Cursor
		}
	}
	return out
}

func caret(n int) *store.Cursor { return &store.Cursor{Anchor: n, Head: n} }

func rev(n int64) *int64 { return &n }

// TestPresenceAfterConcurrentInsertsAtOneSpot is issue 15's two carets at
// the end of "start": C types "a" while D types "b", C's op commits first,
// so the text is "startba". The server's copies put each caret after its
// owner's letter, and C's next update, which says what the server already
// holds, still reaches D: D may have drawn C's caret elsewhere meanwhile.
// The document runs on two replicas sharing one presence store, as in the
// distributed mode, so updates and refreshes cross processes.
func TestPresenceAfterConcurrentInsertsAtOneSpot(t *testing.T) {
	ctx := context.Background()
	l := memory.NewLog(memory.LogOptions{})
	t.Cleanup(func() { _ = l.Close(ctx) })
	p := memory.NewPresence(memory.PresenceOptions{TTL: time.Minute})
	t.Cleanup(p.Close)
	const refresh = 20 * time.Millisecond
	a := newManager(t, doc.Options{Log: l, Presence: p, PresenceRefresh: refresh})
	b := newManager(t, doc.Options{Log: l, Presence: p, PresenceRefresh: refresh})

	cs, ds := newSink(), newSink()
	c, err := a.Join(ctx, "tie", member("conn-c", "c", cs), nil)
	if err != nil {
		t.Fatal(err)
	}
	next[protocol.Welcome](t, cs)
	if err := c.Submit(ctx, 1, 0, ot.Op{{Insert: "start"}}); err != nil {
		t.Fatal(err)
	}
	base := ackOf(t, cs, 1)
	d, err := b.Join(ctx, "tie", member("conn-d", "d", ds), rev(base))
	if err != nil {
		t.Fatal(err)
	}
	next[protocol.Welcome](t, ds)
	if err := c.SetCursor(ctx, caret(5), rev(base)); err != nil {
		t.Fatal(err)
	}
	if got := presenceOf(t, ds, "conn-c").Cursor; *got != *caret(5) {
		t.Fatalf("D sees C at %+v, want 5", got)
	}
	if err := d.SetCursor(ctx, caret(5), rev(base)); err != nil {
		t.Fatal(err)
	}
	presenceOf(t, cs, "conn-d")

	if err := c.Submit(ctx, 2, base, ot.Op{{Retain: 5}, {Insert: "a"}}); err != nil {
		t.Fatal(err)
	}
	cRev := ackOf(t, cs, 2)
	if err := d.Submit(ctx, 1, base, ot.Op{{Retain: 5}, {Insert: "b"}}); err != nil {
		t.Fatal(err)
	}
	dRev := ackOf(t, ds, 1)
	if dRev != cRev+1 {
		t.Fatalf("D's op committed as %d, C's as %d", dRev, cRev)
	}
	waitText(t, a, "tie", "startba")
	waitText(t, b, "tie", "startba")

	// The server moved both carets: C's after "a" (7), D's after "b" (6).
	es := newSink()
	if _, err := a.Join(ctx, "tie", member("conn-e", "e", es), nil); err != nil {
		t.Fatal(err)
	}
	want := map[string]store.Cursor{"conn-c": *caret(7), "conn-d": *caret(6)}
	if got := cursorsIn(next[protocol.Welcome](t, es)); got["conn-c"] != want["conn-c"] || got["conn-d"] != want["conn-d"] {
		t.Fatalf("welcome presence %+v, want %+v", got, want)
	}
	presenceOf(t, cs, "conn-e")
	presenceOf(t, ds, "conn-e")

	// C, acknowledged at cRev and not yet sent D's op, reports 6 at cRev:
	// 7 at the head, which the servers hold already. D is told all the same.
	drain(ds)
	if err := c.SetCursor(ctx, caret(6), rev(cRev)); err != nil {
		t.Fatal(err)
	}
	if got := presenceOf(t, ds, "conn-c").Cursor; *got != *caret(7) {
		t.Fatalf("D sees C at %+v after C's update, want 7", got)
	}
	presenceOf(t, es, "conn-c")

	// Refreshes keep the entries alive without announcing them again.
	time.Sleep(15 * refresh)
	for _, s := range []*sink{cs, ds, es} {
		for _, m := range drain(s) {
			if pr, ok := m.(protocol.Presence); ok {
				t.Errorf("a refresh was announced: %+v", pr)
			}
		}
	}
}

// TestPresenceSelectionAndOwnership: a range moves as a selection (another
// person's insert at its start stays outside), and only the connection
// that typed an insert at a caret owns it: another tab of the same user
// is someone else there.
func TestPresenceSelectionAndOwnership(t *testing.T) {
	ctx := context.Background()
	l := memory.NewLog(memory.LogOptions{})
	t.Cleanup(func() { _ = l.Close(ctx) })
	p := memory.NewPresence(memory.PresenceOptions{TTL: time.Minute})
	t.Cleanup(p.Close)
	m := newManager(t, doc.Options{Log: l, Presence: p})

	join := func(conn, client, user string) (*doc.Session, *sink) {
		t.Helper()
		s := newSink()
		mem := member(conn, client, s)
		mem.User.ID = user
		sess, err := m.Join(ctx, "sel", mem, nil)
		if err != nil {
			t.Fatal(err)
		}
		next[protocol.Welcome](t, s)
		return sess, s
	}
	tab1, s1 := join("conn-1", "k1", "u")
	tab2, s2 := join("conn-2", "k2", "u")
	other, so := join("conn-o", "ko", "o")
	if err := tab1.Submit(ctx, 1, 0, ot.Op{{Insert: "hello world"}}); err != nil {
		t.Fatal(err)
	}
	base := ackOf(t, s1, 1)
	if err := tab1.SetCursor(ctx, caret(5), rev(base)); err != nil {
		t.Fatal(err)
	}
	if err := other.SetCursor(ctx, &store.Cursor{Anchor: 6, Head: 11}, rev(base)); err != nil {
		t.Fatal(err)
	}
	// Wait for the cursors themselves: the joins are announced too.
	for _, conn := range []string{"conn-1", "conn-o"} {
		for presenceOf(t, s2, conn).Cursor == nil {
		}
	}
	// tab2 inserts at tab1's caret and at the start of the other's selection.
	if err := tab2.Submit(ctx, 1, base, ot.Op{{Retain: 5}, {Insert: "!"}, {Retain: 1}, {Insert: "my "}}); err != nil {
		t.Fatal(err)
	}
	ackOf(t, s2, 1)
	next[protocol.Op](t, so)

	ws := newSink()
	if _, err := m.Join(ctx, "sel", member("conn-w", "w", ws), nil); err != nil {
		t.Fatal(err)
	}
	w := next[protocol.Welcome](t, ws)
	// Clients move these cursors through later operations by the same
	// rule (ot.OwnsCaret), so each one names its client id.
	for _, p := range w.Presence {
		if want := map[string]string{"conn-1": "k1", "conn-2": "k2", "conn-o": "ko"}[p.Conn]; p.Client != want {
			t.Errorf("presence of %s names client %q, want %q", p.Conn, p.Client, want)
		}
	}
	got := cursorsIn(w)
	want := map[string]store.Cursor{"conn-1": *caret(5), "conn-o": {Anchor: 10, Head: 15}}
	for conn, c := range want {
		if got[conn] != c {
			t.Errorf("%s at %+v, want %+v (all %+v)", conn, got[conn], c, got)
		}
	}
}

// drain returns what s holds now.
func drain(s *sink) []any {
	var out []any
	for {
		select {
		case m := <-s.ch:
			out = append(out, m)
		default:
			return out
		}
	}
}

func waitText(t *testing.T, m *doc.Manager, id, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		snap, err := m.Snapshot(context.Background(), id)
		if err == nil && snap.Text == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("text %q, %v; want %q", snap.Text, err, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
