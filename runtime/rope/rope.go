// Package rope holds a large text so that edits at any position cost time
// logarithmic in its length instead of linear.
//
// The text lives in leaves of 512 to 2048 bytes of UTF-8 held by a B+-tree:
// every leaf is at the same depth, inner nodes have 4 to 16 children (the
// root may have fewer), and every node records how many code points and
// bytes lie below it. Finding a code point position walks one path from the
// root, O(log n); editing a leaf copies at most 2 KiB. All positions and
// lengths count Unicode code points, like package ot.
package rope

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"strings"
	"unicode/utf8"

	"github.com/tandem-dev/tandem/runtime/ot"
)

const (
	maxLeaf     = 2048 // bytes; a leaf that grows past this is split
	minLeaf     = 512  // bytes; a smaller leaf is merged with a neighbour
	targetLeaf  = 1024 // bytes; the size of leaves built from a long string
	maxChildren = 16
	minChildren = 4 // at most maxChildren/2, so two small nodes always fit in one
)

// Rope is a mutable text. The zero value is an empty text. A Rope is not
// safe for concurrent use.
type Rope struct {
	root *node
}

type node struct {
	chars int    // code points below this node
	bytes int    // bytes below this node
	text  []byte // leaf content, valid UTF-8; nil for inner nodes with kids
	kids  []*node
	leaf  bool
}

// New returns a rope holding s. Invalid UTF-8 in s is replaced by U+FFFD so
// that code point counts stay well defined.
func New(s string) *Rope {
	s = strings.ToValidUTF8(s, "\uFFFD")
	leaves := makeLeaves(nil, s, "", "")
	return &Rope{root: buildUp(leaves)}
}

func (r *Rope) top() *node {
	if r.root == nil {
		r.root = &node{leaf: true}
	}
	return r.root
}

// Len is the length of the text in code points.
func (r *Rope) Len() int {
	if r.root == nil {
		return 0
	}
	return r.root.chars
}

// Bytes is the length of the text in bytes of UTF-8.
func (r *Rope) Bytes() int {
	if r.root == nil {
		return 0
	}
	return r.root.bytes
}

// String returns the whole text.
func (r *Rope) String() string {
	if r.root == nil {
		return ""
	}
	var sb strings.Builder
	sb.Grow(r.root.bytes)
	r.root.appendAll(&sb)
	return sb.String()
}

func (n *node) appendAll(sb *strings.Builder) {
	if n.leaf {
		sb.Write(n.text)
		return
	}
	for _, k := range n.kids {
		k.appendAll(sb)
	}
}

// Slice returns the code points in [start, end), clamped to the text.
func (r *Rope) Slice(start, end int) string {
	start = max(start, 0)
	end = min(end, r.Len())
	if start >= end {
		return ""
	}
	var sb strings.Builder
	r.root.appendRange(&sb, start, end)
	return sb.String()
}

func (n *node) appendRange(sb *strings.Builder, start, end int) {
	if n.leaf {
		b1 := byteOffset(n, start)
		b2 := b1 + advance(n.text[b1:], end-start)
		sb.Write(n.text[b1:b2])
		return
	}
	off := 0
	for _, k := range n.kids {
		if start < off+k.chars && end > off {
			k.appendRange(sb, max(start-off, 0), min(end-off, k.chars))
		}
		off += k.chars
		if off >= end {
			return
		}
	}
}

// Insert puts s before code point pos; pos is clamped to [0, Len()].
// Invalid UTF-8 in s is replaced by U+FFFD.
func (r *Rope) Insert(pos int, s string) {
	if s == "" {
		return
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	root := r.top()
	pos = min(max(pos, 0), root.chars)
	out := root.insert(pos, s)
	if out == nil {
		return
	}
	for len(out) > 1 {
		// The root split: grow the tree by one level.
		out = splitInner(&node{kids: out})
	}
	r.root = out[0]
}

// Delete removes n code points starting at pos, clamped to the text.
func (r *Rope) Delete(pos, n int) {
	root := r.top()
	pos = max(pos, 0)
	n = min(n, root.chars-pos)
	if n <= 0 {
		return
	}
	root.delete(pos, n)
	for !root.leaf && len(root.kids) == 1 {
		root = root.kids[0]
	}
	if !root.leaf && len(root.kids) == 0 {
		root = &node{leaf: true}
	}
	r.root = root
}

// Apply applies op to the text, walking the operation once. The operation
// is validated first and must not reach past the end of the text; on error
// the rope is unchanged.
func (r *Rope) Apply(op ot.Op) error {
	if err := op.Validate(); err != nil {
		return err
	}
	if base := op.BaseLen(); base > r.Len() {
		return fmt.Errorf("%w: operation spans %d code points but the text has %d", ot.ErrInvalid, base, r.Len())
	}
	pos := 0
	for _, c := range op {
		switch {
		case c.Retain > 0:
			pos += c.Retain
		case c.Delete > 0:
			r.Delete(pos, c.Delete)
		default:
			r.Insert(pos, c.Insert)
			pos += utf8.RuneCountInString(c.Insert)
		}
	}
	return nil
}

// insert adds s at pos below n. When n overflowed it returns the nodes that
// replace it (n itself first, then new siblings); otherwise nil, so the
// common case allocates nothing.
func (n *node) insert(pos int, s string) []*node {
	if n.leaf {
		b := byteOffset(n, pos)
		if len(n.text)+len(s) <= maxLeaf {
			old := len(n.text)
			if cap(n.text) < old+len(s) {
				grown := make([]byte, old, maxLeaf)
				copy(grown, n.text)
				n.text = grown
			}
			n.text = n.text[:old+len(s)]
			copy(n.text[b+len(s):], n.text[b:old])
			copy(n.text[b:], s)
			n.chars += utf8.RuneCountInString(s)
			n.bytes = len(n.text)
			return nil
		}
		return makeLeaves(n, string(n.text[:b]), s, string(n.text[b:]))
	}
	off := 0
	i := 0
	for ; i < len(n.kids)-1; i++ {
		if pos <= off+n.kids[i].chars {
			break
		}
		off += n.kids[i].chars
	}
	repl := n.kids[i].insert(pos-off, s)
	if len(repl) > 1 {
		kids := make([]*node, 0, len(n.kids)+len(repl)-1)
		kids = append(kids, n.kids[:i]...)
		kids = append(kids, repl...)
		kids = append(kids, n.kids[i+1:]...)
		n.kids = kids
	}
	n.sum()
	if len(n.kids) > maxChildren {
		return splitInner(n)
	}
	return nil
}

// delete removes cnt code points at pos below n; the caller guarantees the
// range lies within n. Children left too small are merged with neighbours.
func (n *node) delete(pos, cnt int) {
	if n.leaf {
		b1 := byteOffset(n, pos)
		b2 := b1 + advance(n.text[b1:], cnt)
		n.text = append(n.text[:b1], n.text[b2:]...)
		n.chars -= cnt
		n.bytes = len(n.text)
		return
	}
	off := 0
	for i := 0; i < len(n.kids) && cnt > 0; {
		k := n.kids[i]
		if pos >= off+k.chars {
			off += k.chars
			i++
			continue
		}
		start := pos - off
		take := min(cnt, k.chars-start)
		cnt -= take
		if start == 0 && take == k.chars {
			n.kids = append(n.kids[:i], n.kids[i+1:]...)
			continue
		}
		k.delete(start, take)
		// The rest of the range, if any, starts at the next child.
		off += k.chars
		i++
	}
	n.rebalance()
	n.sum()
}

func (n *node) underfull() bool {
	if n.leaf {
		return n.bytes < minLeaf
	}
	return len(n.kids) < minChildren
}

// rebalance merges each child that is too small with a neighbour. Merging
// two siblings keeps every leaf at the same depth.
func (n *node) rebalance() {
	for i := 0; i < len(n.kids) && len(n.kids) > 1; {
		if !n.kids[i].underfull() {
			i++
			continue
		}
		lo := i
		if i == len(n.kids)-1 {
			lo = i - 1
		}
		merged := merge(n.kids[lo], n.kids[lo+1])
		kids := n.kids[:lo]
		kids = append(kids, merged...)
		n.kids = append(kids, n.kids[lo+2:]...)
		i = lo
		if len(merged) == 2 {
			// Both halves of a split are at least half full.
			i = lo + 2
		}
	}
}

// merge joins two siblings into one node, or into two balanced ones when
// together they are too big for one.
func merge(a, b *node) []*node {
	if a.leaf {
		if a.bytes+b.bytes <= maxLeaf {
			a.text = append(a.text, b.text...)
			a.chars += b.chars
			a.bytes = len(a.text)
			return []*node{a}
		}
		return makeLeaves(a, string(a.text), string(b.text), "")
	}
	kids := make([]*node, 0, len(a.kids)+len(b.kids))
	kids = append(kids, a.kids...)
	kids = append(kids, b.kids...)
	a.kids = kids
	// The children that met at the seam may both be small.
	a.rebalance()
	a.sum()
	if len(a.kids) > maxChildren {
		return splitInner(a)
	}
	return []*node{a}
}

// sum recomputes an inner node's counts from its children.
func (n *node) sum() {
	n.chars, n.bytes = 0, 0
	for _, k := range n.kids {
		n.chars += k.chars
		n.bytes += k.bytes
	}
}

// splitInner divides an inner node's children evenly among as few nodes as
// hold them, reusing n as the first.
func splitInner(n *node) []*node {
	kids := n.kids
	groups := (len(kids) + maxChildren - 1) / maxChildren
	out := make([]*node, 0, groups)
	for g := range groups {
		lo, hi := g*len(kids)/groups, (g+1)*len(kids)/groups
		part := make([]*node, hi-lo, maxChildren+1)
		copy(part, kids[lo:hi])
		m := n
		if g > 0 {
			m = &node{}
		}
		m.kids = part
		m.sum()
		out = append(out, m)
	}
	return out
}

// makeLeaves cuts a+b+c into leaves of about targetLeaf bytes at code point
// boundaries, reusing first (if not nil) as the first leaf.
func makeLeaves(first *node, a, b, c string) []*node {
	total := len(a) + len(b) + len(c)
	all := make([]byte, 0, total)
	all = append(all, a...)
	all = append(all, b...)
	all = append(all, c...)
	count := max(1, (total+targetLeaf-1)/targetLeaf)
	if total <= maxLeaf {
		count = 1
	}
	out := make([]*node, 0, count)
	start := 0
	for i := range count {
		end := total
		if i < count-1 {
			end = (i + 1) * total / count
			for end < total && !utf8.RuneStart(all[end]) {
				end++
			}
		}
		// Exactly as long as the text: a document that is read far more
		// than it is edited holds no slack, and an empty one no buffer at
		// all. The first insert into a leaf grows it to maxLeaf once.
		text := make([]byte, end-start)
		copy(text, all[start:end])
		leaf := first
		if i > 0 || leaf == nil {
			leaf = &node{}
		}
		*leaf = node{leaf: true, text: text, chars: utf8.RuneCount(text), bytes: len(text)}
		out = append(out, leaf)
		start = end
	}
	return out
}

// buildUp stacks inner levels over a row of leaves until one node is left.
func buildUp(row []*node) *node {
	for len(row) > 1 {
		row = splitInner(&node{kids: row})
	}
	return row[0]
}

// byteOffset returns the byte offset of code point pos in a leaf.
func byteOffset(n *node, pos int) int {
	if n.chars == len(n.text) {
		return pos // all ASCII
	}
	return advance(n.text, pos)
}

// advance returns the byte length of the first cnt code points of b, which
// is valid UTF-8 (or len(b) when b is shorter). It counts the bytes that
// start a code point (all but the 10xxxxxx continuation bytes) eight at a
// time, which keeps a scan of a whole leaf around a microsecond.
func advance(b []byte, cnt int) int {
	const hi = 0x8080808080808080
	i := 0
	for ; i+8 <= len(b); i += 8 {
		w := binary.LittleEndian.Uint64(b[i:])
		// A continuation byte has bit 7 set and bit 6 clear.
		cont := w & hi &^ (w << 1)
		starts := 8 - bits.OnesCount64(cont)
		if starts > cnt {
			break
		}
		cnt -= starts
	}
	for ; i < len(b); i++ {
		if b[i]&0xC0 != 0x80 {
			if cnt == 0 {
				return i
			}
			cnt--
		}
	}
	return len(b)
}
