package ot

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json from the Go implementation")

const vectorsPath = "testdata/vectors.json"

// vectorSection is one named list of cases in vectors.json.
type vectorSection struct {
	name  string
	cases []any
}

// buildVectors returns the sections of vectors.json: the hand-written cases
// (checked against hand-computed results by the table tests) followed by
// cases from a fixed-seed generator whose results come from this package.
func buildVectors(t *testing.T) []vectorSection {
	t.Helper()
	rng := rand.New(rand.NewPCG(2024, 11))
	var apply, transform, compose, normalize, cursor, selection, owns, invalid []any
	for _, c := range applyCases {
		apply = append(apply, c)
	}
	for _, c := range transformCases {
		transform = append(transform, c)
	}
	for _, c := range composeCases {
		compose = append(compose, c)
	}
	for _, c := range normalizeCases {
		normalize = append(normalize, c)
	}
	for _, c := range cursorCases {
		cursor = append(cursor, c)
	}
	for _, c := range selectionCases {
		selection = append(selection, c)
	}
	for _, c := range ownsCaretCases {
		owns = append(owns, c)
	}
	for _, c := range invalidCases {
		invalid = append(invalid, c)
	}

	for i := range 60 {
		doc := randText(rng, rng.IntN(12))
		n := cpLen(doc)
		if i%6 == 5 {
			// An op written for a longer text must be rejected.
			n += 1 + rng.IntN(3)
		}
		op := randOp(rng, n)
		res, err := Apply(doc, op)
		apply = append(apply, applyCase{Name: fmt.Sprintf("generated %d", i), Doc: doc, Op: op, Result: res, Error: err != nil})
	}
	for i := range 80 {
		doc := randText(rng, rng.IntN(12))
		a, b := randOp(rng, cpLen(doc)), randOp(rng, cpLen(doc))
		for _, side := range []Side{Left, Right} {
			res, err := Transform(a, b, side)
			if err != nil {
				t.Fatal(err)
			}
			transform = append(transform, transformCase{Name: fmt.Sprintf("generated %d %v", i, side), Doc: doc, A: a, B: b, Side: side.String(), Result: res})
		}
	}
	for i := range 60 {
		doc := randText(rng, rng.IntN(12))
		a := randOp(rng, cpLen(doc))
		mid, err := Apply(doc, a)
		if err != nil {
			t.Fatal(err)
		}
		b := randOp(rng, cpLen(mid))
		res, err := Compose(a, b)
		if err != nil {
			t.Fatal(err)
		}
		compose = append(compose, composeCase{Name: fmt.Sprintf("generated %d", i), Doc: doc, A: a, B: b, Result: res})
	}
	for i := range 40 {
		op := randOp(rng, rng.IntN(12))
		normalize = append(normalize, normalizeCase{Name: fmt.Sprintf("generated %d", i), Op: op, Result: op.Normalize()})
	}
	for i := range 60 {
		n := rng.IntN(12)
		op := randOp(rng, n)
		pos := rng.IntN(n + 1)
		own := rng.IntN(2) == 0
		cursor = append(cursor, cursorCase{Name: fmt.Sprintf("generated %d", i), Op: op, Pos: pos, Own: own, Result: TransformCursor(pos, op, own)})
	}
	for i := range 30 {
		n := rng.IntN(12)
		op := randOp(rng, n)
		anchor, head := rng.IntN(n+1), rng.IntN(n+1)
		own := rng.IntN(2) == 0
		a, h := TransformSelection(anchor, head, op, own)
		selection = append(selection, selectionCase{Name: fmt.Sprintf("generated %d", i), Op: op, Anchor: anchor, Head: head, Own: own, Result: [2]int{a, h}})
	}
	return []vectorSection{
		{"apply", apply},
		{"transform", transform},
		{"compose", compose},
		{"normalize", normalize},
		{"transformCursor", cursor},
		{"transformSelection", selection},
		{"ownsCaret", owns},
		{"invalid", invalid},
	}
}

// encodeVectors writes one case per line so that diffs of the file stay
// readable.
func encodeVectors(t *testing.T, sections []vectorSection) []byte {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteString("{\n  \"format\": 1,\n  \"about\": \"Shared OT test vectors for the Go and JavaScript implementations; see docs/ot.md. Regenerate with: go test ./runtime/ot -run TestVectors -update\"")
	for _, s := range sections {
		fmt.Fprintf(&buf, ",\n  %q: [", s.name)
		for i, c := range s.cases {
			line, err := json.Marshal(c)
			if err != nil {
				t.Fatalf("encode %s case %d: %v", s.name, i, err)
			}
			if i > 0 {
				buf.WriteByte(',')
			}
			buf.WriteString("\n    ")
			buf.Write(line)
		}
		buf.WriteString("\n  ]")
	}
	buf.WriteString("\n}\n")
	return buf.Bytes()
}

func TestVectors(t *testing.T) {
	want := encodeVectors(t, buildVectors(t))
	if *update {
		if err := os.MkdirAll(filepath.Dir(vectorsPath), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorsPath, want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatalf("read vectors (regenerate with -update): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s does not match the Go implementation; regenerate with: go test ./runtime/ot -run TestVectors -update", vectorsPath)
	}
}

// TestVectorsFileCases reads vectors.json the way the JavaScript port does
// and runs every case, so a hand edit of the file that the generator would
// not catch is still checked.
func TestVectorsFileCases(t *testing.T) {
	data, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Format    int             `json:"format"`
		Apply     []applyCase     `json:"apply"`
		Transform []transformCase `json:"transform"`
		Compose   []composeCase   `json:"compose"`
		Normalize []normalizeCase `json:"normalize"`
		Cursor    []cursorCase    `json:"transformCursor"`
		Selection []selectionCase `json:"transformSelection"`
		OwnsCaret []ownsCaretCase `json:"ownsCaret"`
		Invalid   []invalidCase   `json:"invalid"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	if v.Format != 1 || len(v.Apply) == 0 || len(v.Transform) == 0 || len(v.Compose) == 0 || len(v.Normalize) == 0 || len(v.Cursor) == 0 || len(v.Selection) == 0 || len(v.OwnsCaret) == 0 || len(v.Invalid) == 0 {
		t.Fatalf("vectors file is missing sections: %+v", v.Format)
	}
	for _, c := range v.Apply {
		got, err := Apply(c.Doc, c.Op)
		if (err != nil) != c.Error || got != c.Result {
			t.Errorf("apply %q: got %q, %v", c.Name, got, err)
		}
	}
	for _, c := range v.Transform {
		side := Left
		if c.Side == "right" {
			side = Right
		}
		got, err := Transform(c.A, c.B, side)
		if err != nil || !Equal(got, c.Result) {
			t.Errorf("transform %q: got %v, %v", c.Name, got, err)
		}
	}
	for _, c := range v.Compose {
		got, err := Compose(c.A, c.B)
		if err != nil || !Equal(got, c.Result) {
			t.Errorf("compose %q: got %v, %v", c.Name, got, err)
		}
	}
	for _, c := range v.Normalize {
		if got := c.Op.Normalize(); !Equal(got, c.Result) {
			t.Errorf("normalize %q: got %v", c.Name, got)
		}
	}
	for _, c := range v.Cursor {
		if got := TransformCursor(c.Pos, c.Op, c.Own); got != c.Result {
			t.Errorf("transformCursor %q: got %d", c.Name, got)
		}
	}
	for _, c := range v.Selection {
		if a, h := TransformSelection(c.Anchor, c.Head, c.Op, c.Own); [2]int{a, h} != c.Result {
			t.Errorf("transformSelection %q: got %d, %d", c.Name, a, h)
		}
	}
	for _, c := range v.OwnsCaret {
		if got := OwnsCaret(c.CaretUser, c.CaretClient, c.OpUser, c.OpClient); got != c.Result {
			t.Errorf("ownsCaret %q: got %v", c.Name, got)
		}
	}
	for _, c := range v.Invalid {
		if _, err := ParseOp([]byte(c.JSON)); err == nil {
			t.Errorf("invalid %q: %s was accepted", c.Name, c.JSON)
		}
	}
}
