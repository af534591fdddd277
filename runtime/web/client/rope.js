// A document text the client can edit without copying it: the text is a
// list of chunks of a few thousand UTF-16 units, each knowing its length in
// code points (the protocol's unit) and in UTF-8 bytes (the server's size
// limits). An edit rebuilds the chunks it touches and copies the list of
// the others (references, not text), and positions convert between code
// points and UTF-16 units (the DOM's and CodeMirror's) by a binary search
// and a scan of one chunk. A keystroke in a 1 MiB document costs
// microseconds instead of a copy of the whole text, which is what kept
// typing in large documents over a frame (docs/benchmarks.md).
//
// Ropes are immutable: every edit returns a new Rope that shares the
// untouched chunks with the old one, so the client can keep the server's
// text and its own side by side for free.
//
// Invariant: no chunk boundary falls between the halves of a surrogate
// pair, so the code points of the text are the sum of its chunks'.

import { OTError, baseLength, cpLength, cpToUtf16, utf16ToCp, validate } from './ot.js';
import { utf8Length } from './utf8.js';

const TARGET = 4096; // UTF-16 units of a chunk cut from a long string
const MAX = 8192; // a chunk grown by edits beyond this is cut again
const MIN = 1024; // a piece shorter than this is merged with its neighbour

const isHigh = (u) => u >= 0xd800 && u <= 0xdbff;
const isLow = (u) => u >= 0xdc00 && u <= 0xdfff;

function chunk(s) {
  return { s, cp: cpLength(s), b: utf8Length(s) };
}

/** Cuts s into chunks of about TARGET units, never inside a surrogate pair. */
function pieces(s, out) {
  let i = 0;
  while (s.length - i > MAX) {
    let j = i + TARGET;
    if (isLow(s.charCodeAt(j)) && isHigh(s.charCodeAt(j - 1))) j--;
    out.push(chunk(s.slice(i, j)));
    i = j;
  }
  if (i < s.length) out.push(chunk(i === 0 ? s : s.slice(i)));
}

/** Whether a ends with a high surrogate and b starts with a low one (together: one code point). */
function pairAcross(a, b) {
  return a.length > 0 && b.length > 0 && isHigh(a.charCodeAt(a.length - 1)) && isLow(b.charCodeAt(0));
}

export class Rope {
  /** Use Rope.from; chunks must keep the invariant above. */
  constructor(chunks) {
    this.chunks = chunks;
    let n = 0;
    let cp = 0;
    let b = 0;
    for (const c of chunks) {
      n += c.s.length;
      cp += c.cp;
      b += c.b;
    }
    /** UTF-16 units. */
    this.length = n;
    /** Code points. */
    this.cpLength = cp;
    /** UTF-8 bytes, as the server counts them (a lone surrogate is 3). */
    this.byteLength = b;
    this.flat = chunks.length === 1 ? chunks[0].s : chunks.length === 0 ? '' : null;
    this.starts = null; // [units, code points] where each chunk starts, built on first use
  }

  /** A rope holding s. */
  static from(s) {
    const out = [];
    pieces(String(s), out);
    return new Rope(out);
  }

  /** The whole text as one string (built once per rope). */
  toString() {
    if (this.flat === null) this.flat = this.chunks.map((c) => c.s).join('');
    return this.flat;
  }

  index() {
    if (this.starts) return this.starts;
    const u = new Array(this.chunks.length + 1);
    const c = new Array(this.chunks.length + 1);
    u[0] = 0;
    c[0] = 0;
    for (let i = 0; i < this.chunks.length; i++) {
      u[i + 1] = u[i] + this.chunks[i].s.length;
      c[i + 1] = c[i] + this.chunks[i].cp;
    }
    this.starts = { u, c };
    return this.starts;
  }

  /** Index of the chunk holding position x of the prefix sums arr (the last one at the end). */
  static find(arr, x) {
    let lo = 0;
    let hi = arr.length - 2;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (arr[mid] <= x) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** UTF-16 offset of code point position cp, clamped to [0, length]. */
  cpToUtf16(cp) {
    if (!(cp > 0)) return 0;
    if (cp >= this.cpLength) return this.length;
    if (this.length === this.cpLength) return cp; // no surrogate pairs anywhere
    const { u, c } = this.index();
    const i = Rope.find(c, cp);
    return u[i] + cpToUtf16(this.chunks[i].s, cp - c[i]);
  }

  /** Code point position of UTF-16 offset u16, clamped; inside a surrogate pair it rounds down. */
  utf16ToCp(u16) {
    if (!(u16 > 0)) return 0;
    if (u16 >= this.length) return this.cpLength;
    if (this.length === this.cpLength) return u16;
    const { u, c } = this.index();
    const i = Rope.find(u, u16);
    return c[i] + utf16ToCp(this.chunks[i].s, u16 - u[i]);
  }

  /** The text between UTF-16 offsets from and to. */
  slice(from, to = this.length) {
    from = Math.max(0, Math.min(from, this.length));
    to = Math.max(from, Math.min(to, this.length));
    if (this.flat !== null) return this.flat.slice(from, to);
    const { u } = this.index();
    const parts = [];
    for (let i = Rope.find(u, from); i < this.chunks.length && u[i] < to; i++) {
      parts.push(this.chunks[i].s.slice(Math.max(0, from - u[i]), to - u[i]));
    }
    return parts.join('');
  }

  /**
   * Applies a protocol operation (code points). Returns the new rope and
   * the same edit as UTF-16 changes [{from, to, insert}] on this text,
   * sorted and apart, ready for an editor's change set. Throws OTError
   * (changing nothing) when op is malformed or reaches past the end.
   */
  apply(op) {
    validate(op);
    const base = baseLength(op);
    if (base > this.cpLength) throw new OTError(`operation spans ${base} code points but the text has ${this.cpLength}`);
    const changes = [];
    let cp = 0;
    const add = (from, to, insert) => {
      const last = changes[changes.length - 1];
      if (last && last.to === from) {
        last.to = to;
        last.insert += insert;
      } else changes.push({ from, to, insert });
    };
    for (const c of op) {
      if (typeof c === 'number') cp += c;
      else if (typeof c === 'string') {
        const at = this.cpToUtf16(cp);
        add(at, at, c);
      } else {
        add(this.cpToUtf16(cp), this.cpToUtf16(cp + c.d), '');
        cp += c.d;
      }
    }
    return { rope: this.applyChanges(changes), changes };
  }

  /** Applies UTF-16 changes [{from, to, insert}] (sorted, apart, on this text). */
  applyChanges(changes) {
    const old = this.chunks;
    const out = [];
    let buf = ''; // text waiting to become chunks
    let ci = 0; // next old chunk
    let cstart = 0; // where it starts
    let p = 0; // old text before p has been copied or skipped
    const push = (c) => {
      const last = out[out.length - 1];
      if (last && pairAcross(last.s, c.s)) {
        out.pop();
        pieces(last.s + c.s, out);
      } else out.push(c);
    };
    const flush = () => {
      if (buf === '') return;
      // A small piece joins the chunk before it rather than standing alone
      // (typing at the end of the text would otherwise add a chunk a key).
      const last = out[out.length - 1];
      if (last && last.s.length + buf.length <= MAX) {
        out.pop();
        buf = last.s + buf;
      }
      const s = buf;
      buf = '';
      const start = out.length;
      pieces(s, out);
      // pieces keeps pairs whole inside s; the junction before it is checked here.
      if (start > 0 && start < out.length && pairAcross(out[start - 1].s, out[start].s)) {
        const a = out[start - 1];
        const rest = out.splice(start - 1);
        rest.shift();
        pieces(a.s + rest.map((c) => c.s).join(''), out);
      }
    };
    const copy = (x) => {
      while (p < x) {
        const c = old[ci];
        const cend = cstart + c.s.length;
        if (p === cstart && cend <= x) {
          if (buf.length === 0) push(c);
          else if (buf.length >= MIN) {
            flush();
            push(c);
          } else {
            buf += c.s;
            if (buf.length >= TARGET) flush();
          }
          p = cend;
          ci++;
          cstart = cend;
          continue;
        }
        const e = Math.min(cend, x);
        buf += c.s.slice(p - cstart, e - cstart);
        p = e;
        if (e === cend) {
          ci++;
          cstart = cend;
        }
      }
    };
    const skip = (x) => {
      while (p < x) {
        const cend = cstart + old[ci].s.length;
        if (cend <= x) {
          p = cend;
          ci++;
          cstart = cend;
        } else p = x;
      }
    };
    let last = 0;
    for (const ch of changes) {
      if (!(ch.from >= last && ch.to >= ch.from && ch.to <= this.length)) throw new RangeError(`change ${ch.from}-${ch.to} out of order or past ${this.length}`);
      copy(ch.from);
      buf += ch.insert;
      if (buf.length > MAX) flush();
      skip(ch.to);
      last = ch.to;
    }
    copy(this.length);
    flush();
    return new Rope(out);
  }
}
