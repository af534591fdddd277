// Package ot implements operational transformation for plain text.
//
// An operation is a list of components that walks the whole document from
// start to end: retain n code points, insert a string, or delete n code
// points. All positions and lengths count Unicode code points, never bytes
// or UTF-16 units. The package is pure: no I/O, no goroutines, no globals.
package ot

// Component is one step of an operation. Exactly one field is set.
type Component struct {
	Retain int    // > 0: keep this many code points
	Insert string // non-empty: insert this text
	Delete int    // > 0: remove this many code points
}

// Op is a text operation. The zero value is the identity operation.
type Op []Component
