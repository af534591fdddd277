package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/runtime/store"
)

// RunPresence checks the store.Presence contract. ttl is the entry lifetime
// the factory configured; the suite waits a few multiples of it, so keep it
// short (a second or less).
//
//   - Update inserts or replaces a connection's entry; List returns the live
//     entries of one document only.
//   - Remove deletes an entry and announces a departure.
//   - Subscribe delivers updates and departures, including expiries of
//     entries that were not refreshed within the TTL.
//   - Refreshing an entry keeps it alive past the TTL; Refresh does so
//     for a document's entries at once, announcing nothing, and reports
//     the ones it does not hold.
func RunPresence(t *testing.T, newPresence func(t *testing.T) store.Presence, ttl time.Duration) {
	user := func(id string) store.User { return store.User{ID: id, Name: "Name " + id, Color: "#336699"} }
	entry := func(doc, conn, uid string, c *store.Cursor, rev int64) store.PresenceEntry {
		return store.PresenceEntry{Doc: doc, Conn: conn, User: user(uid), Cursor: c, Rev: rev}
	}
	listed := func(t *testing.T, p store.Presence, doc string) map[string]store.PresenceEntry {
		t.Helper()
		list, err := p.List(testCtx(t), doc)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		out := map[string]store.PresenceEntry{}
		for _, e := range list {
			if e.Doc != doc {
				t.Fatalf("List(%q) returned an entry of %q", doc, e.Doc)
			}
			out[e.Conn] = e
		}
		return out
	}
	// next waits for the next event matching conn, skipping others.
	next := func(t *testing.T, ch <-chan store.PresenceEvent, conn string, within time.Duration) store.PresenceEvent {
		t.Helper()
		timeout := time.After(within)
		for {
			select {
			case ev, ok := <-ch:
				if !ok {
					t.Fatalf("presence subscription closed while waiting for %q", conn)
				}
				if ev.Entry.Conn == conn {
					return ev
				}
			case <-timeout:
				t.Fatalf("no presence event for %q within %v", conn, within)
			}
		}
	}

	t.Run("UpdateAndList", func(t *testing.T) {
		p := newPresence(t)
		ctx := testCtx(t)
		doc, other := DocID(t), DocID(t)
		if err := p.Update(ctx, entry(doc, "conn-1", "alice", nil, 0)); err != nil {
			t.Fatalf("Update: %v", err)
		}
		if err := p.Update(ctx, entry(doc, "conn-2", "bob", &store.Cursor{Anchor: 1, Head: 3}, 2)); err != nil {
			t.Fatalf("Update: %v", err)
		}
		if err := p.Update(ctx, entry(other, "conn-3", "carol", nil, 0)); err != nil {
			t.Fatalf("Update: %v", err)
		}
		// Replacing an entry keeps one entry per connection.
		if err := p.Update(ctx, entry(doc, "conn-1", "alice", &store.Cursor{Anchor: 4, Head: 4}, 5)); err != nil {
			t.Fatalf("Update: %v", err)
		}
		got := listed(t, p, doc)
		if len(got) != 2 {
			t.Fatalf("List = %v, want conn-1 and conn-2", got)
		}
		a := got["conn-1"]
		if a.User != user("alice") || a.Cursor == nil || *a.Cursor != (store.Cursor{Anchor: 4, Head: 4}) || a.Rev != 5 {
			t.Fatalf("conn-1 = %+v, want alice with cursor 4/4 at rev 5", a)
		}
		b := got["conn-2"]
		if b.User != user("bob") || b.Cursor == nil || *b.Cursor != (store.Cursor{Anchor: 1, Head: 3}) || b.Rev != 2 {
			t.Fatalf("conn-2 = %+v, want bob with cursor 1/3 at rev 2", b)
		}
		if o := listed(t, p, other); len(o) != 1 {
			t.Fatalf("other doc List = %v, want only conn-3", o)
		}
	})

	t.Run("SubscribeUpdatesAndRemove", func(t *testing.T) {
		p := newPresence(t)
		ctx := testCtx(t)
		doc := DocID(t)
		subCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		ch, err := p.Subscribe(subCtx, doc)
		if err != nil {
			t.Fatalf("Subscribe: %v", err)
		}
		if err := p.Update(ctx, entry(doc, "conn-1", "alice", &store.Cursor{Anchor: 2, Head: 2}, 1)); err != nil {
			t.Fatalf("Update: %v", err)
		}
		ev := next(t, ch, "conn-1", 10*time.Second)
		if ev.Left || ev.Entry.User.ID != "alice" || ev.Entry.Cursor == nil || ev.Entry.Cursor.Head != 2 {
			t.Fatalf("update event = %+v, want alice's cursor at 2", ev)
		}
		if err := p.Update(ctx, entry(doc, "conn-2", "bob", nil, 1)); err != nil {
			t.Fatalf("Update: %v", err)
		}
		if err := p.Remove(ctx, doc, "conn-1"); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		ev = next(t, ch, "conn-1", 10*time.Second)
		if !ev.Left || ev.Entry.Doc != doc {
			t.Fatalf("event after Remove = %+v, want a departure of conn-1", ev)
		}
		got := listed(t, p, doc)
		if _, ok := got["conn-1"]; ok || len(got) != 1 {
			t.Fatalf("List after Remove = %v, want only conn-2", got)
		}
		// Removing an unknown connection is not an error.
		if err := p.Remove(ctx, doc, "conn-unknown"); err != nil {
			t.Fatalf("Remove unknown: %v", err)
		}
	})

	t.Run("ExpiresWithoutRefresh", func(t *testing.T) {
		p := newPresence(t)
		ctx := testCtx(t)
		doc := DocID(t)
		subCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		ch, err := p.Subscribe(subCtx, doc)
		if err != nil {
			t.Fatalf("Subscribe: %v", err)
		}
		if err := p.Update(ctx, entry(doc, "ghost", "gus", nil, 0)); err != nil {
			t.Fatalf("Update: %v", err)
		}
		if ev := next(t, ch, "ghost", 10*time.Second); ev.Left {
			t.Fatalf("first event is a departure: %+v", ev)
		}
		ev := next(t, ch, "ghost", 4*ttl+5*time.Second)
		if !ev.Left {
			t.Fatalf("event = %+v, want the expiry departure", ev)
		}
		if got := listed(t, p, doc); len(got) != 0 {
			t.Fatalf("List after expiry = %v, want empty", got)
		}
	})

	t.Run("RefreshKeepsAlive", func(t *testing.T) {
		p := newPresence(t)
		ctx := testCtx(t)
		doc := DocID(t)
		stop := time.Now().Add(3 * ttl)
		for time.Now().Before(stop) {
			if err := p.Update(ctx, entry(doc, "alive", "ann", nil, 0)); err != nil {
				t.Fatalf("Update: %v", err)
			}
			time.Sleep(ttl / 4)
		}
		if got := listed(t, p, doc); len(got) != 1 {
			t.Fatalf("List of a refreshed entry after 3 TTLs = %v, want it present", got)
		}
	})

	t.Run("RefreshByDocumentKeepsAliveQuietly", func(t *testing.T) {
		p := newPresence(t)
		ctx := testCtx(t)
		doc, other := DocID(t), DocID(t)
		subCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		ch, err := p.Subscribe(subCtx, doc)
		if err != nil {
			t.Fatalf("Subscribe: %v", err)
		}
		want := entry(doc, "a", "ann", &store.Cursor{Anchor: 2, Head: 3}, 7)
		want.Seq = 4
		for _, e := range []store.PresenceEntry{want, entry(doc, "b", "bob", nil, 0), entry(other, "c", "cy", nil, 0)} {
			if err := p.Update(ctx, e); err != nil {
				t.Fatalf("Update: %v", err)
			}
		}
		next(t, ch, "a", 10*time.Second)
		next(t, ch, "b", 10*time.Second)
		stop := time.Now().Add(3 * ttl)
		for time.Now().Before(stop) {
			// "c" is another document's: not refreshed here, so missing.
			missing, err := p.Refresh(ctx, doc, []string{"a", "b", "c"})
			if err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			if len(missing) != 1 || missing[0] != "c" {
				t.Fatalf("Refresh missing = %v, want [c]", missing)
			}
			time.Sleep(ttl / 4)
		}
		got := listed(t, p, doc)
		if len(got) != 2 || got["a"].Seq != 4 || *got["a"].Cursor != *want.Cursor || got["a"].Rev != 7 {
			t.Fatalf("List after 3 TTLs of refreshes = %+v, want a (unchanged) and b", got)
		}
		// Refreshes announce nothing.
		select {
		case ev := <-ch:
			t.Fatalf("a refresh was announced: %+v", ev)
		default:
		}
		// An expired entry is reported missing, not brought back.
		time.Sleep(ttl + ttl/2)
		if missing, err := p.Refresh(ctx, doc, []string{"a"}); err != nil || len(missing) != 1 {
			t.Fatalf("Refresh of an expired entry = %v, %v; want it missing", missing, err)
		}
	})
}
