package ot

import (
	"fmt"
	"math"
	"unicode/utf8"
)

// kind is what a component does.
type kind uint8

const (
	retains kind = iota
	inserts
	deletes
)

// endless is the length of the retain an operation reads as past its end.
const endless = math.MaxInt

// opIter walks an operation one component at a time and hands out pieces
// of the current component, splitting it where the other operation's
// component ends. Past the last component the operation reads as an endless
// retain, which is what an omitted trailing retain means, so the walks
// below need no separate cases for one operation ending before the other.
// Each step is load, then peek, then take; load is a step of its own so
// that it inlines into the walk, which loads at every component boundary.
// It expects a valid operation.
type opIter struct {
	op   Op
	i    int    // index of the next component to load
	kind kind   // what the current component does
	n    int    // code points left in the current component; 0 or less past the end
	s    string // what is left of the current insert
}

// load makes the next component current once the current one is used up,
// and reports whether one is: false past the end.
func (it *opIter) load() bool {
	if it.n <= 0 && it.i < len(it.op) {
		c := it.op[it.i]
		it.i++
		it.kind, it.n, it.s = retains, c.Retain, c.Insert
		if c.Delete > 0 {
			it.kind, it.n = deletes, c.Delete
		} else if c.Insert != "" {
			it.kind, it.n = inserts, utf8.RuneCountInString(c.Insert)
		}
	}
	return it.n > 0
}

// peek returns what the loaded component does and its length in code
// points, without consuming it; past the end, an endless retain.
func (it *opIter) peek() (kind, int) {
	if it.n <= 0 {
		// Taking from the endless retain only counts n further down.
		it.kind = retains
		return retains, endless
	}
	return it.kind, it.n
}

// take consumes n code points of the component peek returned, at most the
// length it returned; when that is an insert, it returns the text taken.
func (it *opIter) take(n int) (inserted string) {
	it.n -= n
	if it.kind != inserts {
		return ""
	}
	if it.n > 0 {
		return it.splitInsert(n)
	}
	// The whole rest of the insert: no need to find the split.
	return it.s
}

// splitInsert takes the first n code points of the current insert, short
// of all of it. It is kept apart so that take can inline.
func (it *opIter) splitInsert(n int) (head string) {
	head, it.s = prefix(it.s, n)
	return head
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
	ia, ib := opIter{op: a}, opIter{op: b}
	// Once a has ended, a' only retains over the rest of b's text, and the
	// canonical form drops a trailing retain: the rest of b needs no walk.
	for ia.load() {
		ib.load()
		ka, na := ia.peek()
		kb, nb := ib.peek()
		switch {
		case ka == inserts && (side == Left || kb != inserts):
			out.insert(ia.take(na))
		case kb == inserts:
			ib.take(nb)
			out.retain(nb)
		default:
			n := min(na, nb)
			ia.take(n)
			ib.take(n)
			switch {
			case ka == retains && kb == retains:
				out.retain(n)
			case ka == deletes && kb == retains:
				out.delete(n)
			}
			// a retains what b deleted, or both deleted it: nothing is
			// left for a' to do there.
		}
	}
	return out.finish(), nil
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
	ia, ib := opIter{op: a}, opIter{op: b}
	for {
		if moreA, moreB := ia.load(), ib.load(); !moreA && !moreB {
			break
		}
		ka, na := ia.peek()
		kb, nb := ib.peek()
		switch {
		case ka == deletes:
			// b never sees what a deleted.
			ia.take(na)
			out.delete(na)
		case kb == inserts:
			out.insert(ib.take(nb))
		default:
			// a retains or inserts; b retains or deletes that output.
			n := min(na, nb)
			inserted := ia.take(n)
			ib.take(n)
			switch {
			case ka == retains && kb == retains:
				out.retain(n)
			case ka == retains && kb == deletes:
				out.delete(n)
			case kb == retains:
				out.insert(inserted)
			}
			// Text a inserted and b deleted vanishes.
		}
	}
	return out.finish(), nil
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

// OwnsCaret reports whether an operation moves a caret as its owner's (the
// own argument of TransformCursor and TransformSelection): the operation's
// author is the caret's user and, when the caret's client id is known, the
// same client. One person with two tabs is two carets; text typed in one
// tab pushes the other tab's caret like anyone else's text does. The
// server and every client decide with this one rule, so that all of them
// put a caret in the same place.
func OwnsCaret(caretUser, caretClient, opUser, opClient string) bool {
	return caretUser == opUser && (caretClient == "" || caretClient == opClient)
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
