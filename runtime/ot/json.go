package ot

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// MarshalJSON writes op as a JSON array: a positive integer per retain, a
// string per insert and {"d": n} per delete. A nil op is []. An invalid op
// is an error, so nothing malformed reaches the wire or the store.
func (op Op) MarshalJSON() ([]byte, error) {
	if err := op.Validate(); err != nil {
		return nil, err
	}
	return appendOp(make([]byte, 0, 16*len(op)+2), op), nil
}

func appendOp(buf []byte, op Op) []byte {
	buf = append(buf, '[')
	for i, c := range op {
		if i > 0 {
			buf = append(buf, ',')
		}
		switch {
		case c.Retain > 0:
			buf = strconv.AppendInt(buf, int64(c.Retain), 10)
		case c.Delete > 0:
			buf = append(buf, `{"d":`...)
			buf = strconv.AppendInt(buf, int64(c.Delete), 10)
			buf = append(buf, '}')
		default:
			buf = appendString(buf, c.Insert)
		}
	}
	return append(buf, ']')
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string. Control characters and the two
// line separators that break JavaScript source are escaped; invalid UTF-8
// becomes U+FFFD (Validate rejects it before marshalling anyway).
func appendString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch b {
			case '"', '\\':
				buf = append(buf, '\\', b)
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, w := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && w == 1 {
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
			i += w
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			buf = append(buf, s[start:i]...)
			buf = append(buf, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += w
			start = i
			continue
		}
		i += w
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}

// UnmarshalJSON parses the JSON form written by MarshalJSON. It rejects,
// with an error naming the offending element, anything else: null, counts
// that are zero, negative, fractional, written with an exponent or beyond
// MaxCount, empty inserts, inserts that are not valid UTF-8, delete objects
// with other or extra keys, and elements of any other type. On error *op is
// left unchanged. Size limits are the caller's to check before parsing.
func (op *Op) UnmarshalJSON(data []byte) error {
	p := parser{data: data}
	parsed, err := p.op()
	if err != nil {
		return err
	}
	*op = parsed
	return nil
}

// ParseOp parses an operation from its JSON form; see UnmarshalJSON.
func ParseOp(data []byte) (Op, error) {
	p := parser{data: data}
	return p.op()
}

type parser struct {
	data []byte
	i    int
}

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: json: "+format, append([]any{ErrInvalid}, args...)...)
}

func (p *parser) ws() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// describe names the JSON value starting at the current offset, for errors.
func (p *parser) describe() string {
	if p.i >= len(p.data) {
		return "end of input"
	}
	switch c := p.data[p.i]; {
	case c == 'n':
		return "null"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == '[':
		return "an array"
	case c == '{':
		return "an object"
	case c == '"':
		return "a string"
	case c == '-' || (c >= '0' && c <= '9'):
		return "a number"
	default:
		return strconv.QuoteRune(rune(c))
	}
}

func (p *parser) op() (Op, error) {
	p.ws()
	if p.i >= len(p.data) || p.data[p.i] != '[' {
		return nil, p.errorf("operation must be an array, got %s", p.describe())
	}
	p.i++
	// Every element takes at least two bytes with its separator, so this
	// bounds the allocation by the input size the caller has already limited.
	op := make(Op, 0, min(bytes.Count(p.data, []byte{','})+1, 64))
	p.ws()
	if p.i < len(p.data) && p.data[p.i] == ']' {
		p.i++
		return op, p.end()
	}
	for k := 0; ; k++ {
		p.ws()
		c, err := p.component(k)
		if err != nil {
			return nil, err
		}
		op = append(op, c)
		p.ws()
		if p.i >= len(p.data) {
			return nil, p.errorf("unterminated array after element %d", k)
		}
		switch p.data[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			if err := p.end(); err != nil {
				return nil, err
			}
			if err := op.Validate(); err != nil {
				return nil, err
			}
			return op, nil
		default:
			return nil, p.errorf("element %d: expected ',' or ']', got %s", k, p.describe())
		}
	}
}

func (p *parser) end() error {
	p.ws()
	if p.i != len(p.data) {
		return p.errorf("unexpected data after the operation at byte %d", p.i)
	}
	return nil
}

func (p *parser) component(k int) (Component, error) {
	if p.i >= len(p.data) {
		return Component{}, p.errorf("element %d: unexpected end of input", k)
	}
	switch c := p.data[p.i]; {
	case c == '-' || (c >= '0' && c <= '9'):
		n, err := p.count()
		if err != nil {
			return Component{}, p.errorf("element %d: retain %v", k, err)
		}
		return Component{Retain: n}, nil
	case c == '"':
		s, err := p.str()
		if err != nil {
			return Component{}, p.errorf("element %d: insert %v", k, err)
		}
		if s == "" {
			return Component{}, p.errorf("element %d: insert must not be empty", k)
		}
		return Component{Insert: s}, nil
	case c == '{':
		n, err := p.deleteObject()
		if err != nil {
			return Component{}, p.errorf("element %d: delete %v", k, err)
		}
		return Component{Delete: n}, nil
	default:
		return Component{}, p.errorf("element %d: expected a retain count, an insert string or {\"d\": n}, got %s", k, p.describe())
	}
}

// count parses a JSON number that must be a positive integer.
func (p *parser) count() (int, error) {
	start := p.i
	for p.i < len(p.data) {
		c := p.data[p.i]
		if (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
			p.i++
			continue
		}
		break
	}
	tok := string(p.data[start:p.i])
	for j := 0; j < len(tok); j++ {
		if tok[j] < '0' || tok[j] > '9' {
			switch {
			case tok[0] == '-':
				return 0, fmt.Errorf("count %s is negative", tok)
			default:
				return 0, fmt.Errorf("count %s is not an integer", tok)
			}
		}
	}
	if tok == "0" {
		return 0, fmt.Errorf("count must be positive, got 0")
	}
	if tok[0] == '0' {
		return 0, fmt.Errorf("count %s has a leading zero", tok)
	}
	n, err := strconv.ParseInt(tok, 10, 64)
	if err != nil || n > MaxCount {
		return 0, fmt.Errorf("count %s exceeds %d", tok, MaxCount)
	}
	return int(n), nil
}

// str parses a JSON string.
func (p *parser) str() (string, error) {
	start := p.i
	p.i++ // opening quote
	escaped := false
	for {
		if p.i >= len(p.data) {
			return "", fmt.Errorf("string is unterminated")
		}
		c := p.data[p.i]
		switch {
		case c == '"':
			p.i++
			raw := p.data[start:p.i]
			if !utf8.Valid(raw) {
				return "", fmt.Errorf("string is not valid UTF-8")
			}
			if !escaped {
				return string(raw[1 : len(raw)-1]), nil
			}
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return "", fmt.Errorf("string: %v", err)
			}
			return s, nil
		case c == '\\':
			escaped = true
			p.i += 2
		case c < 0x20:
			return "", fmt.Errorf("string contains an unescaped control character %#02x", c)
		default:
			p.i++
		}
	}
}

// deleteObject parses {"d": n} with n a positive integer and no other key.
func (p *parser) deleteObject() (int, error) {
	p.i++ // '{'
	p.ws()
	if p.i >= len(p.data) || p.data[p.i] != '"' {
		if p.i < len(p.data) && p.data[p.i] == '}' {
			return 0, fmt.Errorf("object is empty, want {\"d\": n}")
		}
		return 0, fmt.Errorf("object: expected key \"d\", got %s", p.describe())
	}
	key, err := p.str()
	if err != nil {
		return 0, fmt.Errorf("object key: %v", err)
	}
	if key != "d" {
		return 0, fmt.Errorf("object has unknown key %q, want {\"d\": n}", key)
	}
	p.ws()
	if p.i >= len(p.data) || p.data[p.i] != ':' {
		return 0, fmt.Errorf("object: expected ':' after \"d\", got %s", p.describe())
	}
	p.i++
	p.ws()
	if p.i >= len(p.data) || !(p.data[p.i] == '-' || (p.data[p.i] >= '0' && p.data[p.i] <= '9')) {
		return 0, fmt.Errorf("\"d\" must be a positive integer, got %s", p.describe())
	}
	n, err := p.count()
	if err != nil {
		return 0, err
	}
	p.ws()
	if p.i >= len(p.data) {
		return 0, fmt.Errorf("object is unterminated")
	}
	switch p.data[p.i] {
	case '}':
		p.i++
		return n, nil
	case ',':
		return 0, fmt.Errorf("object has keys other than \"d\"")
	default:
		return 0, fmt.Errorf("object: expected '}', got %s", p.describe())
	}
}
