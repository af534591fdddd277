package ot

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Apply returns text with op applied. The operation may end before the text
// does (the rest is retained); an operation that reaches past the end of the
// text is an error, and so is any invalid operation.
func Apply(text string, op Op) (string, error) {
	if err := op.Validate(); err != nil {
		return "", err
	}
	grow := len(text)
	for _, c := range op {
		grow += len(c.Insert)
	}
	var sb strings.Builder
	sb.Grow(grow)
	i := 0 // byte offset into text
	for _, c := range op {
		switch {
		case c.Retain > 0:
			j, ok := advance(text, i, c.Retain)
			if !ok {
				return "", tooLong(text, op)
			}
			sb.WriteString(text[i:j])
			i = j
		case c.Delete > 0:
			j, ok := advance(text, i, c.Delete)
			if !ok {
				return "", tooLong(text, op)
			}
			i = j
		default:
			sb.WriteString(c.Insert)
		}
	}
	sb.WriteString(text[i:])
	return sb.String(), nil
}

func tooLong(text string, op Op) error {
	return fmt.Errorf("%w: operation spans %d code points but the text has %d",
		ErrInvalid, op.BaseLen(), utf8.RuneCountInString(text))
}

// advance returns the byte offset n code points after byte offset i in s,
// and false when s ends first.
func advance(s string, i, n int) (int, bool) {
	for n > 0 {
		if i >= len(s) {
			return i, false
		}
		if s[i] < utf8.RuneSelf {
			i++
		} else {
			_, w := utf8.DecodeRuneInString(s[i:])
			i += w
		}
		n--
	}
	return i, true
}

// prefix returns the first n code points of s; n must not exceed them.
func prefix(s string, n int) (head, tail string) {
	j, _ := advance(s, 0, n)
	return s[:j], s[j:]
}
