package ot

import (
	"encoding/json"
	"errors"
	"testing"
)

// The fuzz targets build operations from raw bytes with opFromBytes, so
// every input is a valid operation and the properties always get checked.

func FuzzTransform(f *testing.F) {
	f.Add("", []byte{}, []byte{})
	f.Add("ab", []byte{0, 1, 2, 0}, []byte{0, 1, 2, 1})
	f.Add("😀é\u0301中", []byte{1, 0, 2, 8, 0, 9}, []byte{2, 3, 0, 0, 1, 4})
	f.Add("hello world", []byte{0, 5, 1, 3, 2, 7, 2, 8}, []byte{2, 1, 0, 10, 2, 2})
	f.Fuzz(func(t *testing.T, doc string, da, db []byte) {
		if !validUTF8(doc) {
			return
		}
		n := cpLen(doc)
		a, b := opFromBytes(da, n), opFromBytes(db, n)
		checkTP1(t, doc, a, b, Left, Right)
		checkTP1(t, doc, a, b, Right, Left)
		for _, side := range []Side{Left, Right} {
			if x, _ := Transform(a, b, side); !isCanonical(x) {
				t.Fatalf("Transform(%v, %v, %v) = %v is not canonical", a, b, side, x)
			}
		}
		// Cursors move within the transformed text's bounds.
		after, _ := Apply(doc, a)
		// Sample positions: every one would make large inputs quadratic.
		for pos := 0; pos <= n; pos += 1 + n/64 {
			if c := TransformCursor(pos, a, pos%2 == 0); c < 0 || c > cpLen(after) {
				t.Fatalf("TransformCursor(%d, %v) = %d outside [0, %d]", pos, a, c, cpLen(after))
			}
		}
	})
}

func FuzzCompose(f *testing.F) {
	f.Add("", []byte{}, []byte{})
	f.Add("abc", []byte{0, 1, 2, 3}, []byte{1, 1, 2, 4})
	f.Add("𝄞\U0001F3FD", []byte{2, 8, 1, 0}, []byte{0, 0, 1, 1, 2, 2})
	f.Fuzz(func(t *testing.T, doc string, da, db []byte) {
		if !validUTF8(doc) {
			return
		}
		a := opFromBytes(da, cpLen(doc))
		mid, err := Apply(doc, a)
		if err != nil {
			t.Fatalf("generated op does not apply: %v", err)
		}
		b := opFromBytes(db, cpLen(mid))
		checkCompose(t, doc, a, b)
		c, _ := Compose(a, b)
		if !isCanonical(c) {
			t.Fatalf("Compose result %v is not canonical", c)
		}
	})
}

// FuzzUnmarshalApply feeds arbitrary bytes to the JSON parser: it must never
// panic, and whatever it accepts must be a valid operation that round-trips
// and applies (or fails to apply) consistently with its normal form.
func FuzzUnmarshalApply(f *testing.F) {
	f.Add("hello", []byte(`[5,"abc",{"d":3}]`))
	f.Add("héllo😀", []byte(`[1,{"d":1},"\ud83d\ude00",2]`))
	f.Add("", []byte(`[]`))
	f.Add("x", []byte(`[{"d":0}]`))
	f.Add("x", []byte(`[1.5]`))
	f.Add("x", []byte(`null`))
	f.Add("x", []byte(`[{"d":1,"d":2}]`))
	f.Add("x", []byte(`["\u2028", -0]`))
	f.Fuzz(func(t *testing.T, doc string, data []byte) {
		var op Op
		err := json.Unmarshal(data, &op)
		direct, derr := ParseOp(data)
		if err != nil {
			if derr == nil {
				// encoding/json checks the syntax first; it may reject what
				// our parser, given the same bytes, accepts only if the
				// bytes are not JSON at all.
				if json.Valid(data) {
					t.Fatalf("json.Unmarshal rejected valid JSON %q that ParseOp accepted: %v", data, err)
				}
			}
			return
		}
		if derr != nil || !Equal(op, direct) {
			t.Fatalf("ParseOp(%q) = %v, %v; json.Unmarshal gave %v", data, direct, derr, op)
		}
		if err := op.Validate(); err != nil {
			t.Fatalf("parsed op %v is invalid: %v", op, err)
		}
		out, err := json.Marshal(op)
		if err != nil {
			t.Fatalf("Marshal(%v): %v", op, err)
		}
		back, err := ParseOp(out)
		if err != nil || !Equal(back, op) {
			t.Fatalf("round trip %v -> %s -> %v, %v", op, out, back, err)
		}
		got, err := Apply(doc, op)
		norm, nerr := Apply(doc, op.Normalize())
		// Normalizing drops a trailing retain, so an op too long for doc
		// may become applicable; the other way round must never happen.
		if err == nil && (nerr != nil || got != norm) {
			t.Fatalf("Apply(%q, %v) = %q, %v but normalized gives %q, %v", doc, op, got, err, norm, nerr)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("Apply error %v does not wrap ErrInvalid", err)
		}
		if err == nil && validUTF8(doc) && cpLen(got)-cpLen(doc) != op.TargetLen()-op.BaseLen() {
			t.Fatalf("Apply changed the length by %d; op says %d", cpLen(got)-cpLen(doc), op.TargetLen()-op.BaseLen())
		}
	})
}
