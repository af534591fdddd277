package ot

import (
	"fmt"
	"unicode/utf8"
)

// cursor walks an operation one component at a time and lets the caller
// consume part of the current component. Past the last component the
// operation behaves as an endless retain, which is what an omitted trailing
// retain means.
type cursor struct {
	op  Op
	i   int    // index of the next component to load
	ok  bool   // a component is loaded
	n   int    // remaining count (retain, delete) or code points (insert)
	s   string // remaining insert text
	del bool   // loaded component is a delete
}

func (c *cursor) load() {
	if c.ok || c.i >= len(c.op) {
		return
	}
	x := c.op[c.i]
	c.i++
	c.ok = true
	c.s = x.Insert
	c.del = x.Delete > 0
	switch {
	case x.Retain > 0:
		c.n = x.Retain
	case x.Delete > 0:
		c.n = x.Delete
	default:
		c.n = utf8.RuneCountInString(x.Insert)
	}
}

func (c *cursor) isInsert() bool { return c.ok && c.s != "" }
func (c *cursor) isDelete() bool { return c.ok && c.del }
func (c *cursor) isRetain() bool { return c.ok && c.s == "" && !c.del }

// take consumes n code points of the loaded component.
func (c *cursor) take(n int) {
	c.n -= n
	if c.n == 0 {
		c.ok = false
		c.s = ""
	}
}

// Transform returns a', the version of a that has the same intent when
// applied after b; a and b must apply to the same text. When both insert at
// the same position, side Left puts a's insert first and Right puts it
// after b's. Transform(a, b, Left) and Transform(b, a, Right) converge:
// Apply(Apply(s, a), b') == Apply(Apply(s, b), a').
func Transform(a, b Op, side Side) (Op, error) {
	if err := a.Validate(); err != nil {
		return nil, fmt.Errorf("transform: first operation: %w", err)
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("transform: second operation: %w", err)
	}
	if side != Left && side != Right {
		return nil, fmt.Errorf("%w: transform: unknown side %d", ErrInvalid, int(side))
	}
	// Where an insert and a delete meet, the canonical form puts the insert
	// first and so fixes the position the tie-break compares. Transforming
	// a non-canonical spelling of the same operation must give the same
	// answer, so such input is normalized. Other differences from the
	// canonical form (split or trailing retains) do not change the result
	// and cost no copy.
	if insertAfterDelete(a) {
		a = a.Normalize()
	}
	if insertAfterDelete(b) {
		b = b.Normalize()
	}
	out := builder{ops: make(Op, 0, len(a)+len(b))}
	ca, cb := cursor{op: a}, cursor{op: b}
	for {
		ca.load()
		cb.load()
		switch {
		case !ca.ok && !cb.ok:
			return out.finish(), nil
		case ca.isInsert() && (side == Left || !cb.isInsert()):
			out.insert(ca.s)
			ca.take(ca.n)
		case cb.isInsert():
			out.retain(cb.n)
			cb.take(cb.n)
		case !cb.ok:
			// b has ended: the rest of a applies unchanged.
			if ca.del {
				out.delete(ca.n)
			} else {
				out.retain(ca.n)
			}
			ca.take(ca.n)
		case !ca.ok:
			// a has ended: it retains whatever b kept, implicitly.
			cb.take(cb.n)
		default:
			n := min(ca.n, cb.n)
			switch {
			case ca.isRetain() && cb.isRetain():
				out.retain(n)
			case ca.del && cb.isRetain():
				out.delete(n)
			}
			// a retains what b deleted, or both deleted it: nothing is left
			// for a' to do there.
			ca.take(n)
			cb.take(n)
		}
	}
}

// Compose returns one operation with the effect of a followed by b: b
// applies to the text that a produces.
// Apply(Apply(s, a), b) == Apply(s, Compose(a, b)).
func Compose(a, b Op) (Op, error) {
	if err := a.Validate(); err != nil {
		return nil, fmt.Errorf("compose: first operation: %w", err)
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("compose: second operation: %w", err)
	}
	out := builder{ops: make(Op, 0, len(a)+len(b))}
	ca, cb := cursor{op: a}, cursor{op: b}
	for {
		ca.load()
		cb.load()
		switch {
		case !ca.ok && !cb.ok:
			return out.finish(), nil
		case ca.isDelete():
			// b never sees what a deleted.
			out.delete(ca.n)
			ca.take(ca.n)
		case cb.isInsert():
			out.insert(cb.s)
			cb.take(cb.n)
		case !ca.ok:
			// Past a's end the text is untouched by a.
			if cb.del {
				out.delete(cb.n)
			} else {
				out.retain(cb.n)
			}
			cb.take(cb.n)
		case !cb.ok:
			// Past b's end a's output is kept as is.
			if ca.isInsert() {
				out.insert(ca.s)
			} else {
				out.retain(ca.n)
			}
			ca.take(ca.n)
		default:
			// a retains or inserts; b retains or deletes that output.
			n := min(ca.n, cb.n)
			switch {
			case ca.isRetain() && cb.isRetain():
				out.retain(n)
			case ca.isRetain() && cb.del:
				out.delete(n)
			case ca.isInsert() && cb.isRetain():
				head, tail := prefix(ca.s, n)
				out.insert(head)
				ca.s = tail
			case ca.isInsert() && cb.del:
				// Text a inserted and b deleted vanishes.
				_, ca.s = prefix(ca.s, n)
			}
			ca.take(n)
			cb.take(n)
		}
	}
}

// TransformCursor moves a caret position through op. Positions before an
// edit keep their place; deletions that cover the caret pull it to where
// the deleted text was. An insert exactly at the caret moves it after the
// inserted text only when own is true (the caret belongs to op's author,
// who typed it); other people's carets stay before. Negative positions are
// treated as 0; positions past op's end shift with it.
func TransformCursor(pos int, op Op, own bool) int {
	if pos < 0 {
		pos = 0
	}
	res := pos
	base := 0 // position in the text op applies to
	for _, c := range op {
		if base > pos {
			break
		}
		switch {
		case c.Retain > 0:
			base += c.Retain
		case c.Delete > 0:
			if base+c.Delete >= pos {
				// The deletion reaches the caret: the caret lands at the
				// gap, which spans up to the deletion's end, so an insert
				// right after it is still at the caret.
				res -= pos - base
				pos = base + c.Delete
			} else {
				res -= c.Delete
			}
			base += c.Delete
		case c.Insert != "":
			if base < pos || own {
				res += utf8.RuneCountInString(c.Insert)
			}
		}
	}
	return res
}

// TransformSelection moves a selection (anchor and head, as in
// store.Cursor) through op. A collapsed selection is a caret and moves as
// TransformCursor does. For a range, text another person inserts at either
// boundary stays outside the selection; the author's own insert at the end
// boundary extends it.
func TransformSelection(anchor, head int, op Op, own bool) (int, int) {
	if anchor == head {
		p := TransformCursor(anchor, op, own)
		return p, p
	}
	start, end := min(anchor, head), max(anchor, head)
	s, e := TransformCursor(start, op, true), TransformCursor(end, op, own)
	if s > e {
		// Everything selected was deleted and someone else inserted at the
		// gap: the selection collapses to a caret before their text.
		s = e
	}
	if anchor < head {
		return s, e
	}
	return e, s
}

// insertAfterDelete reports whether an insert directly follows a delete.
func insertAfterDelete(op Op) bool {
	for i := 1; i < len(op); i++ {
		if op[i-1].Delete > 0 && op[i].Insert != "" {
			return true
		}
	}
	return false
}

// canonical reports whether a valid op is already in the form Normalize
// returns.
func canonical(op Op) bool {
	for i := 1; i < len(op); i++ {
		p, c := op[i-1], op[i]
		if (p.Retain > 0 && c.Retain > 0) || (p.Insert != "" && c.Insert != "") ||
			(p.Delete > 0 && c.Delete > 0) || (p.Delete > 0 && c.Insert != "") {
			return false
		}
	}
	return len(op) == 0 || op[len(op)-1].Retain == 0
}
