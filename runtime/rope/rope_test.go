package rope

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tandem-dev/tandem/runtime/ot"
)

var alphabet = []string{"a", "b", "c", " ", "\n", "é", "\u0301", "中", "😀", "𝄞", "\U0001F3FD"}

func randText(rng *rand.Rand, n int) string {
	var sb strings.Builder
	for range n {
		sb.WriteString(alphabet[rng.IntN(len(alphabet))])
	}
	return sb.String()
}

// check verifies the tree's invariants: counts match contents, leaves hold
// valid UTF-8 within the size bounds, inner nodes have a bounded number of
// children, and every leaf is at the same depth.
func check(t *testing.T, r *Rope) {
	t.Helper()
	if r.root == nil {
		return
	}
	leafDepth := -1
	var walk func(n *node, depth int, root bool)
	walk = func(n *node, depth int, root bool) {
		if n.leaf {
			if leafDepth == -1 {
				leafDepth = depth
			} else if depth != leafDepth {
				t.Fatalf("leaves at depths %d and %d", leafDepth, depth)
			}
			if !utf8.Valid(n.text) || n.chars != utf8.RuneCount(n.text) || n.bytes != len(n.text) {
				t.Fatalf("leaf counts wrong: chars %d bytes %d for %q", n.chars, n.bytes, n.text)
			}
			if len(n.text) > maxLeaf || (!root && len(n.text) < minLeaf) {
				t.Fatalf("leaf of %d bytes outside [%d, %d]", len(n.text), minLeaf, maxLeaf)
			}
			return
		}
		if len(n.kids) > maxChildren || (!root && len(n.kids) < minChildren) || len(n.kids) == 0 {
			t.Fatalf("inner node with %d children", len(n.kids))
		}
		if root && len(n.kids) < 2 {
			t.Fatalf("inner root with %d child", len(n.kids))
		}
		chars, bytes := 0, 0
		for _, k := range n.kids {
			walk(k, depth+1, false)
			chars += k.chars
			bytes += k.bytes
		}
		if chars != n.chars || bytes != n.bytes {
			t.Fatalf("inner counts %d/%d, children sum to %d/%d", n.chars, n.bytes, chars, bytes)
		}
	}
	walk(r.root, 0, true)
}

func depth(r *Rope) int {
	d := 0
	for n := r.root; n != nil && !n.leaf; n = n.kids[0] {
		d++
	}
	return d
}

func TestNew(t *testing.T) {
	tests := []struct {
		name string
		in   string
		len  int
	}{
		{"empty", "", 0},
		{"short", "héllo 😀", 7},
		{"one leaf exactly", strings.Repeat("x", maxLeaf), maxLeaf},
		{"just over one leaf", strings.Repeat("x", maxLeaf+1), maxLeaf + 1},
		{"astral megabyte", strings.Repeat("😀", 1<<18), 1 << 18},
		{"invalid utf-8 replaced", "a\xffb", 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := New(tc.in)
			check(t, r)
			want := strings.ToValidUTF8(tc.in, "\uFFFD")
			if r.String() != want || r.Len() != tc.len || r.Bytes() != len(want) {
				t.Fatalf("New: Len %d Bytes %d, String matches %v; want Len %d", r.Len(), r.Bytes(), r.String() == want, tc.len)
			}
		})
	}
	var zero Rope
	if zero.Len() != 0 || zero.String() != "" || zero.Slice(0, 3) != "" {
		t.Fatal("zero Rope is not empty")
	}
	zero.Insert(5, "ab")
	if zero.String() != "ab" {
		t.Fatalf("insert into zero Rope = %q", zero.String())
	}
}

func TestEdits(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		edit func(r *Rope)
		want string
	}{
		{"insert middle", "ac", func(r *Rope) { r.Insert(1, "b") }, "abc"},
		{"insert astral", "a😀c", func(r *Rope) { r.Insert(2, "𝄞") }, "a😀𝄞c"},
		{"insert before combining mark", "e\u0301", func(r *Rope) { r.Insert(1, "x") }, "ex\u0301"},
		{"insert clamps high", "ab", func(r *Rope) { r.Insert(99, "c") }, "abc"},
		{"insert clamps low", "ab", func(r *Rope) { r.Insert(-5, "c") }, "cab"},
		{"insert invalid utf-8", "ab", func(r *Rope) { r.Insert(1, "\xff") }, "a\uFFFDb"},
		{"delete astral", "a😀c", func(r *Rope) { r.Delete(1, 1) }, "ac"},
		{"delete clamps", "abc", func(r *Rope) { r.Delete(1, 99) }, "a"},
		{"delete negative count", "abc", func(r *Rope) { r.Delete(1, -1) }, "abc"},
		{"delete past end", "abc", func(r *Rope) { r.Delete(7, 1) }, "abc"},
		{"delete everything big", strings.Repeat("x😀", 5000), func(r *Rope) { r.Delete(0, 10000) }, ""},
		{"big insert in the middle", "ab", func(r *Rope) { r.Insert(1, strings.Repeat("中", 3000)) }, "a" + strings.Repeat("中", 3000) + "b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := New(tc.doc)
			tc.edit(r)
			check(t, r)
			if got := r.String(); got != tc.want {
				t.Fatalf("got %d bytes %.40q; want %d bytes %.40q", len(got), got, len(tc.want), tc.want)
			}
		})
	}
}

func TestSlice(t *testing.T) {
	doc := strings.Repeat("ab😀中", 2000) // 8000 code points over several leaves
	runes := []rune(doc)
	r := New(doc)
	tests := []struct{ start, end int }{
		{0, 0}, {0, 1}, {2, 3}, {0, 8000}, {1000, 5000}, {-3, 2}, {7990, 9000}, {5, 2},
	}
	for _, tc := range tests {
		s, e := max(tc.start, 0), min(tc.end, len(runes))
		want := ""
		if s < e {
			want = string(runes[s:e])
		}
		if got := r.Slice(tc.start, tc.end); got != want {
			t.Errorf("Slice(%d, %d) = %d bytes; want %d", tc.start, tc.end, len(got), len(want))
		}
	}
}

// TestRandomAgainstModel edits a rope and a []rune side by side with random
// inserts, deletes and operations, large and small, and compares them.
func TestRandomAgainstModel(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 99))
			model := []rune(randText(rng, rng.IntN(5000)))
			r := New(string(model))
			for step := range 1500 {
				switch k := rng.IntN(10); {
				case k < 4:
					pos := rng.IntN(len(model) + 1)
					n := 1 + rng.IntN(4)
					if rng.IntN(40) == 0 {
						n = 1 + rng.IntN(6000)
					}
					s := randText(rng, n)
					r.Insert(pos, s)
					model = append(model[:pos], append([]rune(s), model[pos:]...)...)
				case k < 8:
					if len(model) == 0 {
						continue
					}
					pos := rng.IntN(len(model))
					n := 1 + rng.IntN(min(8, len(model)-pos))
					if rng.IntN(40) == 0 {
						n = 1 + rng.IntN(len(model)-pos)
					}
					r.Delete(pos, n)
					model = append(model[:pos], model[pos+n:]...)
				default:
					op := randOp(rng, len(model))
					want, err := ot.Apply(string(model), op)
					if err != nil {
						t.Fatalf("model apply: %v", err)
					}
					if err := r.Apply(op); err != nil {
						t.Fatalf("step %d: Apply(%v): %v", step, op, err)
					}
					model = []rune(want)
				}
				check(t, r)
				if r.Len() != len(model) {
					t.Fatalf("step %d: Len %d, model %d", step, r.Len(), len(model))
				}
				if step%50 == 0 {
					if r.String() != string(model) {
						t.Fatalf("step %d: text differs from the model", step)
					}
					if len(model) > 0 {
						a := rng.IntN(len(model))
						b := a + rng.IntN(len(model)-a+1)
						if r.Slice(a, b) != string(model[a:b]) {
							t.Fatalf("step %d: Slice(%d, %d) differs", step, a, b)
						}
					}
				}
			}
			if r.String() != string(model) {
				t.Fatal("final text differs from the model")
			}
		})
	}
}

func randOp(rng *rand.Rand, docLen int) ot.Op {
	var op ot.Op
	for pos := 0; pos < docLen; {
		switch k := rng.IntN(10); {
		case k < 5:
			n := 1 + rng.IntN(docLen-pos)
			op = append(op, ot.Component{Retain: n})
			pos += n
		case k < 7:
			n := 1 + rng.IntN(min(docLen-pos, 20))
			op = append(op, ot.Component{Delete: n})
			pos += n
		case k < 9:
			op = append(op, ot.Component{Insert: randText(rng, 1+rng.IntN(10))})
		default:
			return op
		}
	}
	return op
}

func TestApplyErrorLeavesRopeUnchanged(t *testing.T) {
	tests := []struct {
		name string
		op   ot.Op
	}{
		{"past end", ot.Op{{Retain: 2}, {Insert: "x"}, {Delete: 5}}},
		{"invalid component", ot.Op{{Insert: "x"}, {Retain: -1}}},
		{"empty component", ot.Op{{Delete: 1}, {}}},
		{"invalid utf-8", ot.Op{{Delete: 1}, {Insert: "\xff"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := New("héllo")
			if err := r.Apply(tc.op); !errors.Is(err, ot.ErrInvalid) {
				t.Fatalf("Apply(%v) = %v; want ErrInvalid", tc.op, err)
			}
			if r.String() != "héllo" {
				t.Fatalf("rope changed to %q", r.String())
			}
		})
	}
}

func TestDepthStaysLogarithmic(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	r := New(strings.Repeat("x", 4<<20))
	for range 20000 {
		r.Insert(rng.IntN(r.Len()+1), "yy")
		r.Delete(rng.IntN(r.Len()), 1)
	}
	check(t, r)
	// 4 MiB in leaves of at least 512 bytes with at least 4 children per
	// inner node: at most log4(8192)+1 = 8 levels.
	if d := depth(r); d > 8 {
		t.Fatalf("depth %d after random edits on 4 MiB", d)
	}
	r.Delete(10, r.Len()-20)
	check(t, r)
	if r.Len() != 20 || depth(r) != 0 {
		t.Fatalf("after deleting almost everything: Len %d depth %d", r.Len(), depth(r))
	}
}
