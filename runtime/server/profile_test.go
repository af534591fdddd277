package server_test

import (
	"strings"
	"testing"

	"github.com/tandem-dev/tandem/runtime/auth"
	"github.com/tandem-dev/tandem/runtime/protocol"
)

// In anonymous mode the name and colour a client chooses in hello are what
// the welcome (and so everyone's presence) shows; invalid ones are ignored
// and a generated name is used. With tokens the token's name stands.
func TestHelloProfile(t *testing.T) {
	tests := []struct {
		name      string
		jwt       bool
		hName     string
		hColor    string
		wantName  string // "" = a generated name (not hName)
		wantColor string // "" = a generated colour (not hColor)
	}{
		{"anonymous chosen", false, "  Ada Lovelace ", "#A1B2C3", "Ada Lovelace", "#a1b2c3"},
		{"anonymous NUL refused", false, "Ada\x00", "#zzzzzz", "", ""},
		{"anonymous bidi override refused", false, "Ada\u202e", "red", "", ""},
		{"anonymous too long refused", false, strings.Repeat("a", auth.MaxNameRunes+1), "#a1b2c", "", ""},
		{"anonymous longest kept", false, strings.Repeat("é", auth.MaxNameRunes), "#000000", strings.Repeat("é", auth.MaxNameRunes), "#000000"},
		{"token name stands", true, "Mallory", "#123456", "SAM", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStack(t, stackOptions{jwt: tc.jwt})
			token := ""
			if tc.jwt {
				token = s.token("sam", auth.PermWrite, "doc")
			}
			r := s.raw("doc", nil)
			b := mustJSON(protocol.Hello{Type: "hello", V: 1, Token: token, Client: "c-profile", Name: tc.hName, Color: tc.hColor})
			r.sendText(b)
			w := r.expect("welcome")
			user, _ := w["user"].(map[string]any)
			gotName, _ := user["name"].(string)
			gotColor, _ := user["color"].(string)
			if tc.wantName != "" && gotName != tc.wantName {
				t.Errorf("name = %q, want %q", gotName, tc.wantName)
			}
			if tc.wantName == "" && (gotName == tc.hName || gotName == "") {
				t.Errorf("name = %q, want a generated one", gotName)
			}
			if tc.wantColor != "" && gotColor != tc.wantColor {
				t.Errorf("color = %q, want %q", gotColor, tc.wantColor)
			}
			if tc.wantColor == "" && (gotColor == tc.hColor || !strings.HasPrefix(gotColor, "#")) {
				t.Errorf("color = %q, want a generated one", gotColor)
			}
		})
	}
}
