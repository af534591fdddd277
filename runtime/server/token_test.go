package server_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tandem-dev/tandem/runtime/auth"
	"github.com/tandem-dev/tandem/runtime/client"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/protocol"
)

// shortTokens is a JWT stack whose verifier clock runs just under the
// leeway ahead: a token minted now with a TTL of 2 s has about 1.5-2.5 s
// of acceptance left, so expiry is quick to test while the tokens are real.
func shortTokens(t *testing.T) *stack {
	skew := auth.Leeway - 500*time.Millisecond
	return newStack(t, stackOptions{jwt: true, jwtNow: func() time.Time { return time.Now().Add(skew) }, limits: highLimits()})
}

func mint(t *testing.T, sub string, perm auth.Perm, ttl time.Duration, now time.Time, docs ...string) string {
	t.Helper()
	tok, err := auth.Mint(testKey, auth.MintOptions{Subject: sub, Docs: docs, Perm: perm, TTL: ttl, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// closeAfter reads until the connection closes and returns the close code
// and the codes of the errors received before it.
func (r *raw) closeAfter(within time.Duration) (int, []string) {
	r.t.Helper()
	deadline := time.Now().Add(within)
	var codes []string
	for {
		if time.Now().After(deadline) {
			r.t.Fatalf("connection still open after %s (errors %v)", within, codes)
		}
		typ, m, code := r.next(time.Until(deadline))
		if typ == "" {
			return code, codes
		}
		if typ == "error" {
			codes = append(codes, fmt.Sprint(m["code"]))
		}
	}
}

// TestExpiredTokenClosesTheConnection: the token's expiry ends the open
// connection with unauthorized and 4001; an operation sent after it is not
// committed.
func TestExpiredTokenClosesTheConnection(t *testing.T) {
	s := shortTokens(t)
	docID := "expiry"
	r := s.raw(docID, nil)
	r.hello(mint(t, "alice", auth.PermWrite, 2*time.Second, time.Time{}, docID), "c1")
	w := r.expect("welcome")
	ttl := time.Duration(num(w, "authTtlMs")) * time.Millisecond
	if ttl < time.Second || ttl > 2600*time.Millisecond {
		t.Fatalf("welcome authTtlMs %v, want the token's remaining 1.5-2.5 s", w["authTtlMs"])
	}
	r.sendText(`{"type":"op","seq":1,"rev":0,"op":["before"]}`)
	r.expect("ack")
	time.Sleep(ttl + 500*time.Millisecond)
	// Sent on an expired token: refused by the close (the write itself may
	// fail once the server has closed).
	_ = r.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"op","seq":2,"rev":1,"op":["after"]}`))
	code, errs := r.closeAfter(5 * time.Second)
	if code != protocol.CloseUnauthorized || len(errs) == 0 || errs[0] != protocol.CodeUnauthorized {
		t.Fatalf("close %d after errors %v, want unauthorized then 4001", code, errs)
	}
	if d := s.doc(docID); d.Rev != 1 || d.Text != "before" {
		t.Fatalf("document %q at %d, want only the operation sent before expiry", d.Text, d.Rev)
	}
}

// TestAuthRefresh hands tokens over on an open connection: a fresh one of
// the same user, document and permission extends it past the old expiry;
// any other is refused and changes nothing (the connection still ends when
// its token expires).
func TestAuthRefresh(t *testing.T) {
	s := shortTokens(t)
	tests := []struct {
		name     string
		token    func(docID string) string
		wantCode string // "" means accepted
	}{
		{"fresh token", func(d string) string { return mint(t, "alice", auth.PermWrite, time.Hour, time.Time{}, d) }, ""},
		{"another user", func(d string) string { return mint(t, "mallory", auth.PermWrite, time.Hour, time.Time{}, d) }, protocol.CodeForbidden},
		{"another document", func(d string) string { return mint(t, "alice", auth.PermWrite, time.Hour, time.Time{}, "other") }, protocol.CodeForbidden},
		{"other permission", func(d string) string { return mint(t, "alice", auth.PermRead, time.Hour, time.Time{}, d) }, protocol.CodeForbidden},
		{"expired", func(d string) string {
			return mint(t, "alice", auth.PermWrite, time.Hour, time.Now().Add(-3*time.Hour), d)
		}, protocol.CodeUnauthorized},
		{"forged", func(d string) string {
			tok, _ := auth.Mint([]byte("another-key-another-key-another-key"), auth.MintOptions{Subject: "alice", Docs: []string{d}, Perm: auth.PermWrite, TTL: time.Hour})
			return tok
		}, protocol.CodeUnauthorized},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			docID := fmt.Sprintf("refresh-%d", i)
			r := s.raw(docID, nil)
			r.hello(mint(t, "alice", auth.PermWrite, 2*time.Second, time.Time{}, docID), "c1")
			w := r.expect("welcome")
			expires := time.Now().Add(time.Duration(num(w, "authTtlMs")) * time.Millisecond)
			r.sendText(mustJSON(protocol.ClientAuth{Type: protocol.TypeAuth, Token: tc.token(docID)}))
			if tc.wantCode == "" {
				a := r.expect("auth")
				if ttl := time.Duration(num(a, "authTtlMs")) * time.Millisecond; ttl < 59*time.Minute {
					t.Fatalf("auth reply %v, want the new token's hour", a)
				}
				time.Sleep(time.Until(expires) + 500*time.Millisecond)
				r.sendText(`{"type":"op","seq":1,"rev":0,"op":["x"]}`)
				if ack := r.expect("ack"); num(ack, "rev") != 1 {
					t.Fatalf("after the old token's expiry: %v, want an ack", ack)
				}
				return
			}
			if e := r.expect("error"); e["code"] != tc.wantCode {
				t.Fatalf("auth refused with %v, want %s", e, tc.wantCode)
			}
			// Still open on the old token...
			r.sendText(`{"type":"op","seq":1,"rev":0,"op":["x"]}`)
			r.expect("ack")
			// ...until it expires.
			code, errs := r.closeAfter(time.Until(expires) + 3*time.Second)
			// expires was estimated from the welcome's arrival, a little
			// after the server started the token's clock.
			if code != protocol.CloseUnauthorized || time.Now().Before(expires.Add(-300*time.Millisecond)) {
				t.Fatalf("close %d at %s before the old expiry (errors %v), want 4001 at it", code, time.Until(expires), errs)
			}
		})
	}
}

// TestClientRefreshesItsToken: a Go client with a RefreshToken callback
// keeps one connection across several expiries of short-lived tokens.
func TestClientRefreshesItsToken(t *testing.T) {
	s := shortTokens(t)
	ctx := testContext(t)
	docID := "long-session"
	var refreshed atomic.Int32
	c := client.New(client.Options{URL: s.wsURL(docID), ClientID: "c1",
		Token: mint(t, "alice", auth.PermWrite, 2*time.Second, time.Time{}, docID),
		RefreshToken: func(context.Context) (string, error) {
			refreshed.Add(1)
			return mint(t, "alice", auth.PermWrite, 2*time.Second, time.Time{}, docID), nil
		}})
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	end := time.Now().Add(5 * time.Second) // two to three token lifetimes
	n := 0
	for time.Now().Before(end) {
		if err := c.EditLen(func(int) ot.Op { return ot.Op{{Insert: "k"}} }); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitSynced(ctx, -1); err != nil {
			t.Fatalf("edit %d after %d refreshes: %v", n, refreshed.Load(), err)
		}
		n++
		time.Sleep(100 * time.Millisecond)
	}
	if refreshed.Load() < 2 || !c.Connected() || c.Stats().Reconnects != 0 {
		t.Fatalf("after 5 s: %d refreshes, connected %v, %d reconnects; want >= 2 refreshes on one connection",
			refreshed.Load(), c.Connected(), c.Stats().Reconnects)
	}
	if d := s.doc(docID); d.Rev != int64(n) {
		t.Fatalf("document at %d, want all %d edits", d.Rev, n)
	}
}

// TestClientReconnectsWithAFreshToken: a connection closed for an expired
// token (no refresh in time) is re-dialled with a fresh one when the client
// can get it, and the edit in flight is resubmitted.
func TestClientReconnectsWithAFreshToken(t *testing.T) {
	s := shortTokens(t)
	ctx := testContext(t)
	docID := "redial"
	var fresh atomic.Bool // refuse to refresh until the first expiry
	c := client.New(client.Options{URL: s.wsURL(docID), ClientID: "c1", Reconnects: 3,
		Token: mint(t, "alice", auth.PermWrite, 2*time.Second, time.Time{}, docID),
		RefreshToken: func(context.Context) (string, error) {
			if !fresh.Load() {
				return "", fmt.Errorf("identity provider down")
			}
			return mint(t, "alice", auth.PermWrite, time.Hour, time.Time{}, docID), nil
		}})
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ttl := time.Duration(c.Welcome().AuthTTLMs) * time.Millisecond
	time.Sleep(ttl + 300*time.Millisecond)
	fresh.Store(true)
	if err := c.EditLen(func(int) ot.Op { return ot.Op{{Insert: "after"}} }); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitSynced(ctx, -1); err != nil {
		t.Fatalf("%v; stats %+v, errors %+v", err, c.Stats(), c.Errors())
	}
	if c.Stats().Reconnects != 1 || s.doc(docID).Text != "after" {
		t.Fatalf("%d reconnects, text %q; want one reconnect and the edit", c.Stats().Reconnects, s.doc(docID).Text)
	}
}
