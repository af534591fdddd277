package ot

import (
	"math/rand/v2"
	"strings"
	"unicode/utf8"
)

// alphabet mixes one-byte, two-, three- and four-byte code points, a
// combining mark and an emoji modifier, so that any confusion between bytes,
// UTF-16 units and code points shows up.
var alphabet = []string{"a", "b", "c", " ", "\n", "é", "\u0301", "中", "😀", "𝄞", "\U0001F3FD"}

func randText(rng *rand.Rand, n int) string {
	var sb strings.Builder
	for range n {
		sb.WriteString(alphabet[rng.IntN(len(alphabet))])
	}
	return sb.String()
}

// randOp returns a valid operation on a text of docLen code points. It
// sometimes writes components in non-canonical ways (split retains,
// delete-then-insert, explicit trailing retain) because clients may.
func randOp(rng *rand.Rand, docLen int) Op {
	var op Op
	pos := 0
	for pos < docLen {
		rest := docLen - pos
		switch k := rng.IntN(10); {
		case k < 4:
			n := 1 + rng.IntN(rest)
			op = append(op, Component{Retain: n})
			pos += n
		case k < 7:
			n := 1 + rng.IntN(min(rest, 4))
			op = append(op, Component{Delete: n})
			pos += n
		case k < 9:
			op = append(op, Component{Insert: randText(rng, 1+rng.IntN(4))})
		default:
			// Stop early: the rest is an omitted trailing retain.
			return op
		}
	}
	if rng.IntN(3) == 0 {
		op = append(op, Component{Insert: randText(rng, 1+rng.IntN(3))})
	}
	return op
}

// opFromBytes turns arbitrary bytes into a valid operation on a text of
// docLen code points, so fuzzing explores operations instead of mostly
// producing invalid ones.
func opFromBytes(data []byte, docLen int) Op {
	var op Op
	pos := 0
	for i := 0; i+1 < len(data); i += 2 {
		kind, arg := data[i]%3, int(data[i+1])
		rest := docLen - pos
		switch {
		case kind == 0 && rest > 0:
			n := 1 + arg%rest
			op = append(op, Component{Retain: n})
			pos += n
		case kind == 1 && rest > 0:
			n := 1 + arg%min(rest, 8)
			op = append(op, Component{Delete: n})
			pos += n
		default:
			op = append(op, Component{Insert: alphabet[arg%len(alphabet)]})
		}
	}
	return op
}

func cpLen(s string) int { return utf8.RuneCountInString(s) }

func validUTF8(s string) bool { return utf8.ValidString(s) }
