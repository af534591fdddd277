package ot

import (
	"fmt"
	"math/bits"
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
	// Code point counting below relies on valid UTF-8; documents only ever
	// hold valid text, so anything else is corruption worth refusing.
	if !utf8.ValidString(text) {
		return "", fmt.Errorf("%w: the text is not valid UTF-8", ErrInvalid)
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
// and false when s ends first; s must be valid UTF-8 and i a code point
// boundary. It counts the bytes that start a code point (all but 10xxxxxx
// continuation bytes) eight at a time: retaining across a large text is the
// bulk of Apply's work.
func advance(s string, i, n int) (int, bool) {
	const hi = 0x8080808080808080
	if n <= 0 {
		return i, true
	}
	for ; i+8 <= len(s); i += 8 {
		w := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		if w&hi == 0 {
			// All ASCII.
			if n < 8 {
				return i + n, true
			}
			n -= 8
			continue
		}
		starts := 8 - bits.OnesCount64(w&hi&^(w<<1))
		if starts >= n {
			break
		}
		n -= starts
	}
	// Consume n more code point starts; the answer is where the next one
	// begins (or the end of s).
	for ; i < len(s); i++ {
		if s[i]&0xC0 != 0x80 {
			if n == 0 {
				return i, true
			}
			n--
		}
	}
	return i, n == 0
}

// prefix returns the first n code points of s; n must not exceed them.
func prefix(s string, n int) (head, tail string) {
	j, _ := advance(s, 0, n)
	return s[:j], s[j:]
}
