package rope

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tandem-dev/tandem/runtime/ot"
)

// BenchmarkRopeInsertDelete1MiB measures one single-code-point insert plus
// one single-code-point delete, each at a random position, on a 1 MiB
// document. One iteration is the pair. Budget: 20 µs per edit.
func BenchmarkRopeInsertDelete1MiB(b *testing.B) {
	docs := []struct {
		name string
		text string
	}{
		{"ascii", strings.Repeat("lorem ipsum dolor sit amet\n", 1<<20/27+1)[:1<<20]},
		// Multi-byte text defeats the all-ASCII shortcut inside leaves.
		{"mixed", textOfBytes(rand.New(rand.NewPCG(1, 2)), 1<<20)},
	}
	for _, d := range docs {
		b.Run(d.name, func(b *testing.B) {
			r := New(d.text)
			rng := rand.New(rand.NewPCG(3, 4))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				r.Insert(rng.IntN(r.Len()+1), "é")
				r.Delete(rng.IntN(r.Len()), 1)
			}
		})
	}
}

// BenchmarkRopeApply1MiB applies a typical one-keystroke operation.
func BenchmarkRopeApply1MiB(b *testing.B) {
	r := New(textOfBytes(rand.New(rand.NewPCG(5, 6)), 1<<20))
	rng := rand.New(rand.NewPCG(7, 8))
	b.ReportAllocs()
	for b.Loop() {
		n := r.Len()
		pos := rng.IntN(n)
		if err := r.Apply(opAt(pos, "x")); err != nil {
			b.Fatal(err)
		}
		if err := r.Apply(delAt(rng.IntN(n))); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRopeString1MiB(b *testing.B) {
	r := New(textOfBytes(rand.New(rand.NewPCG(5, 6)), 1<<20))
	b.ReportAllocs()
	for b.Loop() {
		_ = r.String()
	}
}

// textOfBytes returns random mixed-width text of about n bytes.
func textOfBytes(rng *rand.Rand, n int) string {
	var sb strings.Builder
	for sb.Len() < n {
		sb.WriteString(alphabet[rng.IntN(len(alphabet))])
	}
	return sb.String()
}

func opAt(pos int, s string) ot.Op {
	if pos == 0 {
		return ot.Op{{Insert: s}}
	}
	return ot.Op{{Retain: pos}, {Insert: s}}
}

func delAt(pos int) ot.Op {
	if pos == 0 {
		return ot.Op{{Delete: 1}}
	}
	return ot.Op{{Retain: pos}, {Delete: 1}}
}
