package ot

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// benchDocs are a short document and a 1 MiB one of mixed-width text. The
// operations are a keystroke-sized edit near the middle, the common case on
// the server's hot path.
func benchDocs() []struct {
	name string
	doc  string
} {
	rng := rand.New(rand.NewPCG(42, 42))
	var big strings.Builder
	for big.Len() < 1<<20 {
		big.WriteString(alphabet[rng.IntN(len(alphabet))])
	}
	return []struct {
		name string
		doc  string
	}{
		{"small", "The quick brown 🦊 jumps over the lazy dog."},
		{"1MiB", big.String()},
	}
}

func BenchmarkApply(b *testing.B) {
	for _, d := range benchDocs() {
		n := cpLen(d.doc)
		op := Op{r(n / 2), ins("x"), del(1)}
		b.Run(d.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(d.doc)))
			for b.Loop() {
				if _, err := Apply(d.doc, op); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkTransform(b *testing.B) {
	for _, d := range benchDocs() {
		n := cpLen(d.doc)
		a := Op{r(n / 2), ins("x")}
		c := Op{r(n / 3), del(2), r(n / 2), ins("yz")}
		b.Run(d.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Transform(a, c, Left); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCompose(b *testing.B) {
	for _, d := range benchDocs() {
		n := cpLen(d.doc)
		a := Op{r(n / 2), ins("x")}
		c := Op{r(n/2 + 1), ins("y")}
		b.Run(d.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Compose(a, c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkTransformCursor(b *testing.B) {
	op := Op{r(500000), ins("x"), del(3)}
	b.ReportAllocs()
	for b.Loop() {
		_ = TransformCursor(700000, op, false)
	}
}

func BenchmarkUnmarshal(b *testing.B) {
	data := []byte(`[524288,"héllo 😀",{"d":3}]`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseOp(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshal(b *testing.B) {
	op := Op{r(524288), ins("héllo 😀"), del(3)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := op.MarshalJSON(); err != nil {
			b.Fatal(err)
		}
	}
}
