package auth_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/runtime/auth"
	"github.com/tandem-dev/tandem/runtime/store"
)

var key = []byte("0123456789abcdef0123456789abcdef")

func TestJWT(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	v, err := auth.NewJWT(key, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	mint := func(o auth.MintOptions, k []byte) string {
		t.Helper()
		if o.Now.IsZero() {
			o.Now = now
		}
		tok, err := auth.Mint(k, o)
		if err != nil {
			t.Fatalf("Mint: %v", err)
		}
		return tok
	}
	good := auth.MintOptions{Subject: "alice", Name: "Alice", Docs: []string{"notes", "team-*"}, Perm: auth.PermWrite, TTL: time.Hour}
	tests := []struct {
		name     string
		token    string
		doc      string
		wantCode string
		wantPerm auth.Perm
	}{
		{"exact doc", mint(good, key), "notes", "", auth.PermWrite},
		{"prefix doc", mint(good, key), "team-plans", "", auth.PermWrite},
		{"read perm", mint(auth.MintOptions{Subject: "bob", Docs: []string{"*"}, Perm: auth.PermRead, TTL: time.Hour}, key), "x", "", auth.PermRead},
		{"wrong doc", mint(good, key), "secret", auth.CodeForbidden, ""},
		{"prefix is not substring", mint(good, key), "my-team-x", auth.CodeForbidden, ""},
		{"expired", mint(auth.MintOptions{Subject: "a", Docs: []string{"notes"}, Perm: auth.PermWrite, TTL: time.Minute, Now: now.Add(-time.Hour)}, key), "notes", auth.CodeUnauthorized, ""},
		{"bad signature", mint(good, []byte("ffffffffffffffffffffffffffffffff")), "notes", auth.CodeUnauthorized, ""},
		{"missing", "", "notes", auth.CodeUnauthorized, ""},
		{"garbage", "not.a.token", "notes", auth.CodeUnauthorized, ""},
		{"subject with U+0000", mint(auth.MintOptions{Subject: "a\x00b", Docs: []string{"notes"}, Perm: auth.PermWrite, TTL: time.Hour}, key), "notes", auth.CodeUnauthorized, ""},
		{"alg none", "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4IiwiZG9jcyI6WyIqIl0sInBlcm0iOiJ3cml0ZSIsImV4cCI6OTk5OTk5OTk5OX0.", "notes", auth.CodeUnauthorized, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Authenticate(tc.token, tc.doc)
			if tc.wantCode == "" {
				if err != nil {
					t.Fatalf("Authenticate: %v", err)
				}
				if id.Perm != tc.wantPerm || id.User.ID == "" || id.User.Color == "" {
					t.Fatalf("identity = %+v, want perm %s", id, tc.wantPerm)
				}
				return
			}
			var ae *auth.Error
			if !errors.As(err, &ae) || ae.Code != tc.wantCode {
				t.Fatalf("err = %v, want code %s", err, tc.wantCode)
			}
		})
	}
}

func TestMintRefusesBadInput(t *testing.T) {
	tests := []struct {
		name string
		key  []byte
		o    auth.MintOptions
		want string
	}{
		{"short key", []byte("short"), auth.MintOptions{Subject: "a", Docs: []string{"d"}, Perm: auth.PermWrite, TTL: time.Hour}, "at least"},
		{"no subject", key, auth.MintOptions{Docs: []string{"d"}, Perm: auth.PermWrite, TTL: time.Hour}, "subject"},
		{"no docs", key, auth.MintOptions{Subject: "a", Perm: auth.PermWrite, TTL: time.Hour}, "document"},
		{"bad perm", key, auth.MintOptions{Subject: "a", Docs: []string{"d"}, Perm: "owner", TTL: time.Hour}, "permission"},
		{"no ttl", key, auth.MintOptions{Subject: "a", Docs: []string{"d"}, Perm: auth.PermRead}, "ttl"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := auth.Mint(tc.key, tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want mention of %q", err, tc.want)
			}
		})
	}
}

func TestAnonymousGivesDistinctWriters(t *testing.T) {
	a, err := auth.Anonymous{}.Authenticate("", "d")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := auth.Anonymous{}.Authenticate("", "d")
	if a.User.ID == b.User.ID || !a.CanWrite() || a.User.Name == "" || a.User.Color == "" {
		t.Fatalf("anonymous identities %+v and %+v", a, b)
	}
}

func TestForClient(t *testing.T) {
	anon := func() auth.Identity {
		id, err := auth.Anonymous{}.Authenticate("", "d")
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	// Anonymous: one client id, one user, whatever the connection.
	a1, a2, b := anon().ForClient("tab-1"), anon().ForClient("tab-1"), anon().ForClient("tab-2")
	if a1.User.ID != a2.User.ID || a1.User.Color != a2.User.Color || !strings.HasPrefix(a1.User.ID, "anon-") {
		t.Fatalf("reconnects of one anonymous client: %+v and %+v, want the same anon- user", a1.User, a2.User)
	}
	if b.User.ID == a1.User.ID {
		t.Fatalf("two anonymous clients share user %q", b.User.ID)
	}
	// Authenticated: the token decides, never the client id.
	j, err := auth.NewJWT(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := auth.Mint(key, auth.MintOptions{Subject: "alice", Docs: []string{"d"}, Perm: auth.PermWrite, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	id, err := j.Authenticate(tok, "d")
	if err != nil {
		t.Fatal(err)
	}
	if got := id.ForClient("tab-1"); got.User.ID != "alice" || got.Anonymous {
		t.Fatalf("authenticated identity for a client: %+v, want alice unchanged", got)
	}
}

func TestWithProfile(t *testing.T) {
	anon, err := auth.Anonymous{}.Authenticate("", "doc")
	if err != nil {
		t.Fatal(err)
	}
	anon = anon.ForClient("c-1")
	named := auth.Identity{User: store.User{ID: "u1", Name: "Sam", Color: "#111111"}, Perm: auth.PermWrite}
	tests := []struct {
		name         string
		id           auth.Identity
		pName, color string
		wantName     string
		wantColor    string
	}{
		{"chosen", anon, " Ada ", "#ABCDEF", "Ada", "#abcdef"},
		{"empty keeps generated", anon, "  ", "", anon.User.Name, anon.User.Color},
		{"NUL refused", anon, "A\x00da", "#abcdef", anon.User.Name, "#abcdef"},
		{"newline refused", anon, "A\nda", "", anon.User.Name, anon.User.Color},
		{"bidi override refused", anon, "A\u202eda", "", anon.User.Name, anon.User.Color},
		{"invalid UTF-8 refused", anon, "A\xffda", "", anon.User.Name, anon.User.Color},
		{"too long refused", anon, strings.Repeat("x", auth.MaxNameRunes+1), "", anon.User.Name, anon.User.Color},
		{"longest kept", anon, strings.Repeat("ü", auth.MaxNameRunes), "", strings.Repeat("ü", auth.MaxNameRunes), anon.User.Color},
		{"bad colours refused", anon, "", "red", anon.User.Name, anon.User.Color},
		{"short colour refused", anon, "", "#abc", anon.User.Name, anon.User.Color},
		{"authenticated unchanged", named, "Mallory", "#222222", "Sam", "#111111"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.id.WithProfile(tc.pName, tc.color)
			if got.User.Name != tc.wantName || got.User.Color != tc.wantColor {
				t.Errorf("got %q %q, want %q %q", got.User.Name, got.User.Color, tc.wantName, tc.wantColor)
			}
			if got.User.ID != tc.id.User.ID {
				t.Errorf("user id changed: %q -> %q", tc.id.User.ID, got.User.ID)
			}
		})
	}
}

// Admin tokens open the admin API on the documents their patterns grant,
// and edit those documents; other tokens are refused with forbidden.
func TestAuthenticateAdmin(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	j, err := auth.NewJWT(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	mint := func(perm auth.Perm) string {
		tok, err := auth.Mint(key, auth.MintOptions{Subject: "ops", Docs: []string{"team-*"}, Perm: perm, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	adm, err := j.AuthenticateAdmin(mint(auth.PermAdmin))
	if err != nil {
		t.Fatalf("AuthenticateAdmin: %v", err)
	}
	if !adm.Allows("team-1") || adm.Allows("other") || adm.User.ID != "ops" {
		t.Fatalf("admin = %+v: wrong scope", adm)
	}
	id, err := j.Authenticate(mint(auth.PermAdmin), "team-1")
	if err != nil || !id.CanWrite() {
		t.Fatalf("admin token on a granted document: %+v, %v; want write access", id, err)
	}
	for _, perm := range []auth.Perm{auth.PermRead, auth.PermWrite} {
		_, err := j.AuthenticateAdmin(mint(perm))
		var ae *auth.Error
		if !errors.As(err, &ae) || ae.Code != auth.CodeForbidden {
			t.Fatalf("AuthenticateAdmin with a %s token: %v, want forbidden", perm, err)
		}
	}
	if _, err := j.AuthenticateAdmin("garbage"); err == nil {
		t.Fatal("AuthenticateAdmin accepted garbage")
	}
}
