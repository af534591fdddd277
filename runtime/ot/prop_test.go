package ot

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
)

const propIterations = 5000

// isCanonical reports whether op is valid and in the form Normalize
// produces.
func isCanonical(op Op) bool { return op.Validate() == nil && canonical(op) }

func TestPropertyTP1(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range propIterations {
		doc := randText(rng, rng.IntN(20))
		a := randOp(rng, cpLen(doc))
		b := randOp(rng, cpLen(doc))
		checkTP1(t, doc, a, b, Left, Right)
		checkTP1(t, doc, a, b, Right, Left)
		for _, side := range []Side{Left, Right} {
			x, err := Transform(a, b, side)
			if err != nil || !isCanonical(x) {
				t.Fatalf("iteration %d: Transform(%v, %v, %v) = %v, %v; want canonical", i, a, b, side, x, err)
			}
		}
	}
}

func TestPropertyCompose(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range propIterations {
		doc := randText(rng, rng.IntN(20))
		a := randOp(rng, cpLen(doc))
		mid, err := Apply(doc, a)
		if err != nil {
			t.Fatalf("generated op does not apply: %v", err)
		}
		b := randOp(rng, cpLen(mid))
		checkCompose(t, doc, a, b)
		c, _ := Compose(a, b)
		if !isCanonical(c) {
			t.Fatalf("iteration %d: Compose(%v, %v) = %v is not canonical", i, a, b, c)
		}
		// Composing does not commute exactly with transforming: a composed
		// insert next to a delete loses which side of the deleted text it
		// was typed on, so ties may break differently (see docs/ot.md). The
		// composed op still converges with any concurrent op.
		checkTP1(t, doc, c, randOp(rng, cpLen(doc)), Left, Right)
	}
}

func TestPropertyNormalize(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range propIterations {
		doc := randText(rng, rng.IntN(20))
		op := randOp(rng, cpLen(doc))
		n := op.Normalize()
		if !isCanonical(n) {
			t.Fatalf("Normalize(%v) = %v is not canonical", op, n)
		}
		if again := n.Normalize(); !Equal(again, n) {
			t.Fatalf("Normalize is not idempotent: %v then %v", n, again)
		}
		want, err1 := Apply(doc, op)
		got, err2 := Apply(doc, n)
		if err1 != nil || err2 != nil || got != want {
			t.Fatalf("Apply(doc, %v) = %q, %v but normalized %v gives %q, %v", op, want, err1, n, got, err2)
		}
		if n.TargetLen()-n.BaseLen() != cpLen(want)-cpLen(doc) {
			t.Fatalf("length change of %v does not match the text", n)
		}
	}
}

func TestPropertyJSONRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for range propIterations {
		op := randOp(rng, rng.IntN(30))
		data, err := json.Marshal(op)
		if err != nil {
			t.Fatalf("Marshal(%v): %v", op, err)
		}
		back, err := ParseOp(data)
		if err != nil || !Equal(back, op) {
			t.Fatalf("round trip %v -> %s -> %v, %v", op, data, back, err)
		}
	}
}

// TestPropertyCursor follows individual characters: every code point of the
// document is distinct, so after the operation the characters that were
// just before and just after the caret can be found, and the caret must sit
// between them with only newly inserted text in between.
func TestPropertyCursor(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for i := range propIterations {
		n := rng.IntN(15)
		orig := make([]rune, n)
		for j := range orig {
			orig[j] = rune(0x10000 + j) // distinct astral code points
		}
		op := randOp(rng, n)
		after, err := Apply(string(orig), op)
		if err != nil {
			t.Fatal(err)
		}
		out := []rune(after)
		index := map[rune]int{}
		for j, c := range out {
			if c >= 0x10000 && c < 0x10000+rune(n) {
				index[c] = j
			}
		}
		for pos := 0; pos <= n; pos++ {
			other := TransformCursor(pos, op, false)
			own := TransformCursor(pos, op, true)
			if other < 0 || own > len(out) || own < other {
				t.Fatalf("iteration %d: op %v pos %d: other %d own %d out of order or range (len %d)", i, op, pos, other, own, len(out))
			}
			for _, res := range []int{other, own} {
				// The nearest surviving original before the caret stays before
				// it, and the nearest after stays after.
				for j := pos - 1; j >= 0; j-- {
					if k, ok := index[orig[j]]; ok {
						if k >= res {
							t.Fatalf("iteration %d: op %v pos %d -> %d: %U moved after the caret (at %d)", i, op, pos, res, orig[j], k)
						}
						break
					}
				}
				for j := pos; j < n; j++ {
					if k, ok := index[orig[j]]; ok {
						if k < res {
							t.Fatalf("iteration %d: op %v pos %d -> %d: %U moved before the caret (at %d)", i, op, pos, res, orig[j], k)
						}
						break
					}
				}
			}
			// Between the two results lies only text inserted at the caret.
			for j := other; j < own; j++ {
				if _, old := index[out[j]]; old {
					t.Fatalf("iteration %d: op %v pos %d: own caret skipped original text", i, op, pos)
				}
			}
			// For a selection, transform endpoints stay ordered.
			if pos < n {
				a, h := TransformSelection(pos, n, op, false)
				if a > h {
					t.Fatalf("selection (%d,%d) became (%d,%d) through %v", pos, n, a, h, op)
				}
			}
		}
	}
}
