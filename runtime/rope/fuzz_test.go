package rope

import (
	"testing"
	"unicode/utf8"

	"github.com/tandem-dev/tandem/runtime/ot"
)

var fuzzAlphabet = []string{"a", "é", "\u0301", "中", "😀", "\n"}

// FuzzEdits drives a rope and a string model with edits decoded from the
// fuzzer's bytes: 4 bytes per edit (kind, position, length, character).
// Lengths are scaled up so that leaves split and merge.
func FuzzEdits(f *testing.F) {
	f.Add("", []byte{0, 0, 3, 1})
	f.Add("héllo wörld 😀", []byte{0, 5, 200, 4, 1, 2, 3, 0, 2, 9, 1, 2})
	f.Add("abc", []byte{0, 1, 255, 3, 0, 2, 255, 4, 1, 0, 255, 0, 1, 7, 90, 1})
	f.Fuzz(func(t *testing.T, doc string, edits []byte) {
		if !utf8.ValidString(doc) {
			return
		}
		r := New(doc)
		model := []rune(doc)
		for i := 0; i+3 < len(edits); i += 4 {
			kind, p, n, ch := edits[i]%3, int(edits[i+1]), int(edits[i+2])*37, fuzzAlphabet[int(edits[i+3])%len(fuzzAlphabet)]
			pos := 0
			if len(model) > 0 {
				pos = p * len(model) / 256
			}
			switch kind {
			case 0:
				s := ""
				for range n%3000 + 1 {
					s += ch
				}
				r.Insert(pos, s)
				model = append(model[:pos], append([]rune(s), model[pos:]...)...)
			case 1:
				n = min(n%2000+1, len(model)-pos)
				r.Delete(pos, n)
				model = append(model[:pos], model[pos+n:]...)
			default:
				op := ot.Op{{Retain: pos}, {Delete: min(1, len(model)-pos)}, {Insert: ch}}.Normalize()
				want, err := ot.Apply(string(model), op)
				if err != nil {
					t.Fatalf("model: %v", err)
				}
				if err := r.Apply(op); err != nil {
					t.Fatalf("Apply(%v): %v", op, err)
				}
				model = []rune(want)
			}
			check(t, r)
		}
		if r.String() != string(model) || r.Len() != len(model) {
			t.Fatalf("rope (%d code points) differs from model (%d)", r.Len(), len(model))
		}
	})
}
