package ot

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// ErrInvalid is wrapped by every error about a malformed operation or an
// operation that does not fit the text it is applied to.
var ErrInvalid = errors.New("ot: invalid operation")

// MaxCount bounds every count and every total length of an operation. It is
// the largest integer a JavaScript number holds exactly, so an operation the
// server accepts is one the browser client can represent, and sums of counts
// can never overflow an int.
const MaxCount = 1<<53 - 1

// Side breaks the tie when two operations insert at the same position.
type Side int

const (
	// Left: the transformed operation's insert lands before the other's.
	Left Side = iota
	// Right: the transformed operation's insert lands after the other's.
	Right
)

func (s Side) String() string {
	switch s {
	case Left:
		return "left"
	case Right:
		return "right"
	}
	return fmt.Sprintf("Side(%d)", int(s))
}

// Validate reports whether every component is well formed: exactly one of
// Retain, Insert and Delete set, counts positive, inserts non-empty valid
// UTF-8, and lengths within MaxCount. Adjacent components of the same kind
// are allowed (Normalize merges them).
func (op Op) Validate() error {
	base, target := 0, 0
	for i, c := range op {
		set := 0
		if c.Retain != 0 {
			set++
		}
		if c.Insert != "" {
			set++
		}
		if c.Delete != 0 {
			set++
		}
		switch {
		case set == 0:
			return fmt.Errorf("%w: component %d is empty", ErrInvalid, i)
		case set > 1:
			return fmt.Errorf("%w: component %d sets more than one of retain, insert and delete", ErrInvalid, i)
		case c.Retain < 0:
			return fmt.Errorf("%w: component %d: retain count %d is not positive", ErrInvalid, i, c.Retain)
		case c.Delete < 0:
			return fmt.Errorf("%w: component %d: delete count %d is not positive", ErrInvalid, i, c.Delete)
		case c.Retain > MaxCount || c.Delete > MaxCount:
			return fmt.Errorf("%w: component %d: count exceeds %d", ErrInvalid, i, MaxCount)
		}
		switch {
		case c.Retain > 0:
			base += c.Retain
			target += c.Retain
		case c.Delete > 0:
			base += c.Delete
		default:
			if !utf8.ValidString(c.Insert) {
				return fmt.Errorf("%w: component %d: insert is not valid UTF-8", ErrInvalid, i)
			}
			// The byte length bounds the code point count; no string in
			// memory comes near MaxCount bytes, so counting is not needed.
			target += len(c.Insert)
		}
		// Each count is at most MaxCount (2^53), so neither sum can wrap
		// a 64-bit int before this check catches it.
		if base > MaxCount || target > MaxCount {
			return fmt.Errorf("%w: component %d: operation length exceeds %d", ErrInvalid, i, MaxCount)
		}
	}
	return nil
}

// BaseLen is the number of code points the operation consumes (retains
// plus deletes). A text may be longer: the rest is retained implicitly.
func (op Op) BaseLen() int {
	n := 0
	for _, c := range op {
		n += c.Retain + c.Delete
	}
	return n
}

// TargetLen is the number of code points the operation produces from its
// first BaseLen code points (retains plus inserts).
func (op Op) TargetLen() int {
	n := 0
	for _, c := range op {
		n += c.Retain + utf8.RuneCountInString(c.Insert)
	}
	return n
}

// IsNoop reports whether applying op leaves every text unchanged.
func (op Op) IsNoop() bool {
	for _, c := range op {
		if c.Insert != "" || c.Delete > 0 {
			return false
		}
	}
	return true
}

// Normalize returns the canonical form of op: empty components dropped,
// adjacent components of one kind merged, an insert always before a delete
// at the same position, and no trailing retain. Two operations with the
// same effect on every text have the same canonical form. Normalize expects
// a valid operation; components that are not (zero, negative, or more than
// one field set) are dropped. The result never shares its backing array
// with op.
func (op Op) Normalize() Op {
	b := builder{ops: make(Op, 0, len(op))}
	for _, c := range op {
		switch {
		case c.Retain > 0 && c.Insert == "" && c.Delete == 0:
			b.retain(c.Retain)
		case c.Insert != "" && c.Retain == 0 && c.Delete == 0:
			b.insert(c.Insert)
		case c.Delete > 0 && c.Retain == 0 && c.Insert == "":
			b.delete(c.Delete)
		}
	}
	return b.finish()
}

// builder appends components in canonical form. Every operation this
// package returns is built with it, so results compare equal component by
// component with those of the JavaScript port.
type builder struct {
	ops Op
}

func (b *builder) retain(n int) {
	if n <= 0 {
		return
	}
	if l := len(b.ops); l > 0 && b.ops[l-1].Retain > 0 {
		b.ops[l-1].Retain += n
		return
	}
	b.ops = append(b.ops, Component{Retain: n})
}

func (b *builder) insert(s string) {
	if s == "" {
		return
	}
	l := len(b.ops)
	if l > 0 && b.ops[l-1].Insert != "" {
		b.ops[l-1].Insert += s
		return
	}
	if l > 0 && b.ops[l-1].Delete > 0 {
		// Deleting then inserting at one position equals inserting then
		// deleting; keep the insert first so the form is canonical.
		if l > 1 && b.ops[l-2].Insert != "" {
			b.ops[l-2].Insert += s
			return
		}
		b.ops = append(b.ops, b.ops[l-1])
		b.ops[l-1] = Component{Insert: s}
		return
	}
	b.ops = append(b.ops, Component{Insert: s})
}

func (b *builder) delete(n int) {
	if n <= 0 {
		return
	}
	if l := len(b.ops); l > 0 && b.ops[l-1].Delete > 0 {
		b.ops[l-1].Delete += n
		return
	}
	b.ops = append(b.ops, Component{Delete: n})
}

func (b *builder) finish() Op {
	if l := len(b.ops); l > 0 && b.ops[l-1].Retain > 0 {
		b.ops = b.ops[:l-1]
	}
	return b.ops
}

// Equal reports whether a and b have the same components. Nil and empty
// operations are equal. It does not normalize.
func Equal(a, b Op) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// String renders op in its JSON form, for logs and test failures.
func (op Op) String() string {
	return string(appendOp(nil, op))
}
