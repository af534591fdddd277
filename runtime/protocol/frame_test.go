package protocol_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/tandem-dev/tandem/runtime/protocol"
)

// A frame with shared text encodes exactly as the message with its Text
// field set, and keeps the text as one of its parts, uncopied.
func TestTextFrameEncodesLikeTheFullMessage(t *testing.T) {
	for _, text := range []string{"", "hello", "quotes \" and <tags> & \u2028 \U0001F600", string(bytes.Repeat([]byte("x"), 1<<16))} {
		w := protocol.Welcome{Type: protocol.TypeWelcome, V: protocol.Version, Rev: 7, Conn: "k1", Perm: "write", Presence: []protocol.Presence{}}
		enc, err := protocol.EncodeText(7, text)
		if err != nil {
			t.Fatal(err)
		}
		f := protocol.NewTextFrame(w, enc)
		parts, err := f.Parts()
		if err != nil {
			t.Fatal(err)
		}
		if len(parts) != 3 || &parts[1][0] != &enc.JSON[0] {
			t.Fatalf("parts do not share the encoded text")
		}
		full := w
		full.Text = &text
		want, err := json.Marshal(full)
		if err != nil {
			t.Fatal(err)
		}
		got, err := f.Encoded()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(bytes.Join(parts, nil), want) || !bytes.Equal(got, want) {
			t.Fatalf("text frame encodes as\n%.200s\nwant\n%.200s", got, want)
		}
		var back protocol.Welcome
		if err := json.Unmarshal(got, &back); err != nil || back.Text == nil || *back.Text != text {
			t.Fatalf("decoded text %v, %v", back.Text, err)
		}
	}
}
