package protocol_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/protocol"
	"github.com/tandem-dev/tandem/runtime/store"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		wantCode string
		check    func(t *testing.T, v any)
	}{
		{"hello", `{"type":"hello","v":1,"token":"t","client":"c1","rev":4,"extra":true}`, "", func(t *testing.T, v any) {
			h := v.(*protocol.Hello)
			if h.Client != "c1" || h.Token != "t" || h.Rev == nil || *h.Rev != 4 {
				t.Fatalf("hello = %+v", h)
			}
		}},
		{"hello without rev", `{"type":"hello","v":1,"client":"c1"}`, "", func(t *testing.T, v any) {
			if v.(*protocol.Hello).Rev != nil {
				t.Fatal("rev set")
			}
		}},
		{"op", `{"type":"op","seq":3,"rev":2,"op":[1,"😀",{"d":2}]}`, "", func(t *testing.T, v any) {
			o := v.(*protocol.ClientOp)
			want := ot.Op{{Retain: 1}, {Insert: "😀"}, {Delete: 2}}
			if o.Seq != 3 || o.Rev != 2 || !ot.Equal(o.Op, want) {
				t.Fatalf("op = %+v", o)
			}
		}},
		{"presence", `{"type":"presence","cursor":{"anchor":1,"head":3}}`, "", func(t *testing.T, v any) {
			p := v.(*protocol.ClientPresence)
			if p.Cursor == nil || p.Cursor.Head != 3 {
				t.Fatalf("presence = %+v", p)
			}
		}},
		{"presence without focus", `{"type":"presence","cursor":null,"rev":3}`, "", func(t *testing.T, v any) {
			p := v.(*protocol.ClientPresence)
			if p.Cursor != nil || p.Rev == nil || *p.Rev != 3 {
				t.Fatalf("presence = %+v", p)
			}
		}},
		{"hello ignores fields of other types", `{"type":"hello","v":1,"client":"c","cursor":5,"op":"x"}`, "", func(t *testing.T, v any) {
			if v.(*protocol.Hello).Client != "c" {
				t.Fatal("client lost")
			}
		}},
		{"not JSON", `{"type":`, protocol.CodeBadMessage, nil},
		{"type is a number", `{"type":1}`, protocol.CodeBadMessage, nil},
		{"op rev is a string", `{"type":"op","seq":2,"rev":"1","op":["x"]}`, protocol.CodeBadMessage, nil},
		{"presence cursor is a string", `{"type":"presence","cursor":"a"}`, protocol.CodeBadMessage, nil},
		{"auth", `{"type":"auth","token":"t0k"}`, "", func(t *testing.T, v any) {
			if a, ok := v.(*protocol.ClientAuth); !ok || a.Token != "t0k" {
				t.Fatalf("auth = %#v", v)
			}
		}},
		{"auth without token", `{"type":"auth"}`, protocol.CodeBadMessage, nil},
		{"auth token not a string", `{"type":"auth","token":7}`, protocol.CodeBadMessage, nil},
		{"not UTF-8", "{\"type\":\"hello\xff\"}", protocol.CodeBadMessage, nil},
		{"array", `[1]`, protocol.CodeBadMessage, nil},
		{"no type", `{"v":1}`, protocol.CodeBadMessage, nil},
		{"unknown type", `{"type":"nope"}`, protocol.CodeBadMessage, nil},
		{"wrong version", `{"type":"hello","v":2,"client":"c"}`, protocol.CodeBadMessage, nil},
		{"no client", `{"type":"hello","v":1}`, protocol.CodeBadMessage, nil},
		{"long client", `{"type":"hello","v":1,"client":"` + strings.Repeat("c", 200) + `"}`, protocol.CodeBadMessage, nil},
		{"negative hello rev", `{"type":"hello","v":1,"client":"c","rev":-1}`, protocol.CodeBadRevision, nil},
		{"op without seq", `{"type":"op","rev":0,"op":["x"]}`, protocol.CodeBadMessage, nil},
		{"op seq zero", `{"type":"op","seq":0,"rev":0,"op":["x"]}`, protocol.CodeBadMessage, nil},
		{"op without rev", `{"type":"op","seq":1,"op":["x"]}`, protocol.CodeBadMessage, nil},
		{"op negative rev", `{"type":"op","seq":1,"rev":-2,"op":["x"]}`, protocol.CodeBadRevision, nil},
		{"op missing", `{"type":"op","seq":1,"rev":0}`, protocol.CodeBadOp, nil},
		{"op null", `{"type":"op","seq":1,"rev":0,"op":null}`, protocol.CodeBadOp, nil},
		{"op zero retain", `{"type":"op","seq":1,"rev":0,"op":[0]}`, protocol.CodeBadOp, nil},
		{"op fractional", `{"type":"op","seq":1,"rev":0,"op":[1.5]}`, protocol.CodeBadOp, nil},
		{"op empty insert", `{"type":"op","seq":1,"rev":0,"op":[""]}`, protocol.CodeBadOp, nil},
		{"op bad delete", `{"type":"op","seq":1,"rev":0,"op":[{"d":-1}]}`, protocol.CodeBadOp, nil},
		{"op object", `{"type":"op","seq":1,"rev":0,"op":{"retain":1}}`, protocol.CodeBadOp, nil},
		{"seq is a string", `{"type":"op","seq":"1","rev":0,"op":["x"]}`, protocol.CodeBadMessage, nil},
		{"negative cursor", `{"type":"presence","cursor":{"anchor":-1,"head":0}}`, protocol.CodeBadMessage, nil},
		// What a document may contain: anything but U+0000, escaped or not.
		{"op inserting escaped U+0000", `{"type":"op","seq":2,"rev":1,"op":[7,"A\u0000B"]}`, protocol.CodeBadOp, nil},
		{"op inserting only U+0000", `{"type":"op","seq":2,"rev":1,"op":["\u0000"]}`, protocol.CodeBadOp, nil},
		{"hello with U+0000 in the client id", `{"type":"hello","v":1,"client":"c\u0000"}`, protocol.CodeBadMessage, nil},
		{"op with other control characters", `{"type":"op","seq":1,"rev":0,"op":["\u0001\u001f\u007f\t"]}`, "", func(t *testing.T, v any) {
			if o := v.(*protocol.ClientOp); o.Op[0].Insert != "\x01\x1f\x7f\t" {
				t.Fatalf("insert = %q", o.Op[0].Insert)
			}
		}},
		{"op with noncharacters and the last code point", `{"type":"op","seq":1,"rev":0,"op":["\uffff\ufffe\udbff\udfff"]}`, "", func(t *testing.T, v any) {
			if o := v.(*protocol.ClientOp); o.Op[0].Insert != "\uffff\ufffe\U0010ffff" {
				t.Fatalf("insert = %q", o.Op[0].Insert)
			}
		}},
		{"op with an escaped lone surrogate", `{"type":"op","seq":1,"rev":0,"op":["a\ud800b"]}`, "", func(t *testing.T, v any) {
			// encoding/json turns a lone surrogate into U+FFFD: valid text.
			if o := v.(*protocol.ClientOp); o.Op[0].Insert != "a\ufffdb" {
				t.Fatalf("insert = %q", o.Op[0].Insert)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, p := protocol.Decode([]byte(tc.in))
			if tc.wantCode != "" {
				if p == nil || p.Code != tc.wantCode {
					t.Fatalf("Decode(%s) = %+v, %v; want code %s", tc.in, v, p, tc.wantCode)
				}
				if p.Message == "" {
					t.Fatal("problem without a message")
				}
				return
			}
			if p != nil {
				t.Fatalf("Decode(%s): %v", tc.in, p)
			}
			tc.check(t, v)
		})
	}
}

func TestProblemCarriesSeqForOps(t *testing.T) {
	_, p := protocol.Decode([]byte(`{"type":"op","seq":7,"rev":0,"op":[0]}`))
	if p == nil || p.Seq == nil || *p.Seq != 7 {
		t.Fatalf("problem = %+v, want seq 7", p)
	}
	b, _ := json.Marshal(p.Wire())
	if !strings.Contains(string(b), `"seq":7`) || !strings.Contains(string(b), `"type":"error"`) {
		t.Fatalf("wire form %s", b)
	}
}

func TestFrameEncodesOnce(t *testing.T) {
	f := protocol.NewFrame(protocol.Ack{Type: protocol.TypeAck, Seq: 1, Rev: 2})
	a, err := f.Encoded()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := f.Encoded()
	if string(a) != `{"type":"ack","seq":1,"rev":2}` || &a[0] != &b[0] {
		t.Fatalf("Encoded = %s, %s: want one shared encoding", a, b)
	}
	if _, err := protocol.NewFrame(func() {}).Encoded(); err == nil {
		t.Fatal("encoding a func succeeded")
	}
}

func TestServerMessageShapes(t *testing.T) {
	text := "hi"
	tests := []struct {
		name string
		msg  any
		want string
	}{
		{"ack", protocol.Ack{Type: protocol.TypeAck, Seq: 2, Rev: 9}, `{"type":"ack","seq":2,"rev":9}`},
		{"op", protocol.OpFromEntry(store.Entry{Rev: 3, Op: ot.Op{{Retain: 2}, {Insert: "x"}}, Client: "c", Seq: 4, User: "u"}),
			`{"type":"op","rev":3,"op":[2,"x"],"client":"c","seq":4,"user":"u"}`},
		{"leave", protocol.Leave{Type: protocol.TypeLeave, User: "u", Conn: "k"}, `{"type":"leave","user":"u","conn":"k"}`},
		{"welcome with text", protocol.Welcome{Type: protocol.TypeWelcome, V: 1, Rev: 5, User: store.User{ID: "u", Name: "U", Color: "#fff"}, Conn: "k", Perm: "write", Presence: []protocol.Presence{}, Text: &text},
			`{"type":"welcome","v":1,"rev":5,"user":{"id":"u","name":"U","color":"#fff"},"conn":"k","perm":"write","presence":[],"text":"hi"}`},
		{"error without seq", protocol.Error{Type: protocol.TypeError, Code: "bad_message", Message: "m"}, `{"type":"error","code":"bad_message","message":"m"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Fatalf("got  %s\nwant %s", b, tc.want)
			}
		})
	}
}
