// Text operational transformation for the browser: the same operations,
// rules and results as the Go package runtime/ot (both are checked against
// runtime/ot/testdata/vectors.json). See docs/ot.md.
//
// An operation is an array walking the text from the start: a positive
// integer retains that many code points, a non-empty string inserts it,
// {d: n} deletes n code points. A trailing retain may be omitted. Every
// position and length counts Unicode code points, not UTF-16 units; the
// helpers at the end convert at the edge (textarea offsets are UTF-16).
//
// Functions never modify their arguments. Malformed input throws OTError.

/** Thrown for malformed operations and operations that do not fit a text. */
export class OTError extends Error {
  constructor(message) {
    super(message);
    this.name = 'OTError';
  }
}

/** Largest count or length an operation may have (as in the Go package). */
export const MAX_COUNT = Number.MAX_SAFE_INTEGER;

const isRetain = (c) => typeof c === 'number';
const isInsert = (c) => typeof c === 'string';
const isDelete = (c) => typeof c === 'object' && c !== null && !Array.isArray(c);

function isHigh(u) {
  return u >= 0xd800 && u <= 0xdbff;
}
function isLow(u) {
  return u >= 0xdc00 && u <= 0xdfff;
}

// Surrogate halves; text without them (most text) has code point offsets
// equal to UTF-16 offsets, which the helpers below find with one native
// regular expression scan instead of a loop over every character: a
// keystroke in a 1 MiB document must stay well within a frame.
const SURROGATE = /[\uD800-\uDFFF]/g;
const PAIR = /[\uD800-\uDBFF][\uDC00-\uDFFF]/g;

/** UTF-16 index of the first surrogate half at or after from, or -1. */
function nextSurrogate(text, from) {
  SURROGATE.lastIndex = from;
  const m = SURROGATE.exec(text);
  return m ? m.index : -1;
}

/** Number of code points in s (a lone surrogate counts as one). */
export function cpLength(s) {
  if (nextSurrogate(s, 0) < 0) return s.length;
  PAIR.lastIndex = 0;
  let pairs = 0;
  while (PAIR.exec(s) !== null) pairs++;
  return s.length - pairs;
}

/** UTF-16 offset of code point index cp in text, clamped to [0, length]. */
export function cpToUtf16(text, cp) {
  return advance(text, 0, Math.max(0, cp)).index;
}

/** UTF-16 offset n code points after UTF-16 offset from in text, clamped to its end. */
export function cpToUtf16Offset(text, from, n) {
  return advance(text, from, Math.max(0, n)).index;
}

/**
 * Code point index of UTF-16 offset u16 in text, clamped to the text. An
 * offset between the halves of a surrogate pair rounds down.
 */
export function utf16ToCp(text, u16) {
  const end = Math.max(0, Math.min(u16, text.length));
  let n = 0;
  let i = 0;
  while (i < end) {
    const p = nextSurrogate(text, i);
    if (p < 0 || p >= end) return n + (end - i);
    n += p - i;
    i = p;
    for (let k = 0; k < 256 && i < end; k++) {
      if (isHigh(text.charCodeAt(i)) && i + 1 < text.length && isLow(text.charCodeAt(i + 1))) {
        if (i + 1 === end) return n; // end splits the pair
        i++;
      }
      i++;
      n++;
    }
  }
  return n;
}

// advance moves n code points forward from UTF-16 offset i; `short` is how
// many were missing when the text ended first.
function advance(text, i, n) {
  while (n > 0 && i < text.length) {
    const p = nextSurrogate(text, i);
    const stop = p < 0 ? text.length : p;
    const run = Math.min(n, stop - i); // code points without surrogates: one unit each
    i += run;
    n -= run;
    // Where surrogates are dense (emoji everywhere), step through a stretch
    // unit by unit rather than searching again for every pair.
    for (let k = 0; k < 256 && n > 0 && i < text.length; k++) {
      i += isHigh(text.charCodeAt(i)) && i + 1 < text.length && isLow(text.charCodeAt(i + 1)) ? 2 : 1;
      n--;
    }
  }
  return { index: i, short: n };
}

function describe(c) {
  if (c === null) return 'null';
  if (Array.isArray(c)) return 'an array';
  if (typeof c === 'number') return String(c);
  return typeof c === 'object' ? JSON.stringify(c) : `a ${typeof c}`;
}

/**
 * Throws OTError unless op is a well-formed operation: an array of positive
 * safe integers, non-empty strings and {d: n} objects with n a positive safe
 * integer and no other key, with total lengths within MAX_COUNT.
 */
export function validate(op) {
  if (!Array.isArray(op)) throw new OTError(`operation must be an array, got ${describe(op)}`);
  let base = 0;
  let target = 0;
  for (let k = 0; k < op.length; k++) {
    const c = op[k];
    if (isRetain(c)) {
      if (!Number.isSafeInteger(c) || c <= 0) throw new OTError(`element ${k}: retain count must be a positive integer, got ${c}`);
      base += c;
      target += c;
    } else if (isInsert(c)) {
      if (c.length === 0) throw new OTError(`element ${k}: insert must not be empty`);
      target += c.length; // UTF-16 length bounds the code point count
    } else if (isDelete(c)) {
      const keys = Object.keys(c);
      if (keys.length !== 1 || keys[0] !== 'd') throw new OTError(`element ${k}: delete must be {"d": n}, got ${describe(c)}`);
      if (typeof c.d !== 'number' || !Number.isSafeInteger(c.d) || c.d <= 0) {
        throw new OTError(`element ${k}: delete count must be a positive integer, got ${describe(c.d)}`);
      }
      base += c.d;
    } else {
      throw new OTError(`element ${k}: expected a retain count, an insert string or {"d": n}, got ${describe(c)}`);
    }
    if (base > MAX_COUNT || target > MAX_COUNT) throw new OTError(`element ${k}: operation length exceeds ${MAX_COUNT}`);
  }
}

/** Whether op is well formed (validate without the exception). */
export function isValid(op) {
  try {
    validate(op);
    return true;
  } catch {
    return false;
  }
}

/** Code points the operation consumes (retains plus deletes). */
export function baseLength(op) {
  let n = 0;
  for (const c of op) {
    if (isRetain(c)) n += c;
    else if (isDelete(c)) n += c.d;
  }
  return n;
}

/** Code points the operation produces from its first baseLength ones. */
export function targetLength(op) {
  let n = 0;
  for (const c of op) {
    if (isRetain(c)) n += c;
    else if (isInsert(c)) n += cpLength(c);
  }
  return n;
}

/**
 * Returns text with op applied. The op may stop before the text ends (the
 * rest is kept); reaching past the end throws.
 */
export function apply(text, op) {
  validate(op);
  const parts = [];
  let i = 0;
  for (const c of op) {
    if (isInsert(c)) {
      parts.push(c);
      continue;
    }
    const n = isRetain(c) ? c : c.d;
    const { index, short } = advance(text, i, n);
    if (short > 0) {
      throw new OTError(`operation spans ${baseLength(op)} code points but the text has ${cpLength(text)}`);
    }
    if (isRetain(c)) parts.push(text.slice(i, index));
    i = index;
  }
  parts.push(text.slice(i));
  return parts.join('');
}

// Builder appends components in canonical form: like components merged, an
// insert before a delete at the same position, no trailing retain. Every
// result goes through it, so results equal the Go package's component for
// component.
class Builder {
  constructor() {
    this.ops = [];
  }
  retain(n) {
    if (n <= 0) return;
    const l = this.ops.length;
    if (l > 0 && isRetain(this.ops[l - 1])) this.ops[l - 1] += n;
    else this.ops.push(n);
  }
  insert(s) {
    if (s === '') return;
    const ops = this.ops;
    const l = ops.length;
    if (l > 0 && isInsert(ops[l - 1])) {
      ops[l - 1] += s;
    } else if (l > 0 && isDelete(ops[l - 1])) {
      if (l > 1 && isInsert(ops[l - 2])) ops[l - 2] += s;
      else {
        ops.push(ops[l - 1]);
        ops[l - 1] = s;
      }
    } else {
      ops.push(s);
    }
  }
  delete(n) {
    if (n <= 0) return;
    const l = this.ops.length;
    if (l > 0 && isDelete(this.ops[l - 1])) this.ops[l - 1] = { d: this.ops[l - 1].d + n };
    else this.ops.push({ d: n });
  }
  finish() {
    if (this.ops.length > 0 && isRetain(this.ops[this.ops.length - 1])) this.ops.pop();
    return this.ops;
  }
}

/**
 * The canonical form of op: like components merged, inserts before deletes
 * at one position, no trailing retain. Malformed components are dropped;
 * validate first.
 */
export function normalize(op) {
  const b = new Builder();
  for (const c of op) {
    if (isRetain(c)) b.retain(c);
    else if (isInsert(c)) b.insert(c);
    else if (isDelete(c) && typeof c.d === 'number') b.delete(c.d);
  }
  return b.finish();
}

// Cursor walks an operation, letting the caller consume part of the current
// component. Past the end it reports nothing loaded, which callers treat as
// an endless retain (an omitted trailing retain).
class Cursor {
  constructor(op) {
    this.op = op;
    this.i = 0;
    this.ok = false;
    this.kind = ''; // 'r', 'i' or 'd'
    this.n = 0; // remaining count, or code points of the remaining insert
    this.s = ''; // remaining insert text
  }
  load() {
    if (this.ok || this.i >= this.op.length) return;
    const c = this.op[this.i++];
    this.ok = true;
    if (isRetain(c)) {
      this.kind = 'r';
      this.n = c;
    } else if (isInsert(c)) {
      this.kind = 'i';
      this.s = c;
      this.n = cpLength(c);
    } else {
      this.kind = 'd';
      this.n = c.d;
    }
  }
  get insert() {
    return this.ok && this.kind === 'i';
  }
  get del() {
    return this.ok && this.kind === 'd';
  }
  get retain() {
    return this.ok && this.kind === 'r';
  }
  take(n) {
    if (this.kind === 'i' && n < this.n) this.s = this.s.slice(cpToUtf16(this.s, n));
    this.n -= n;
    if (this.n === 0) {
      this.ok = false;
      this.s = '';
    }
  }
}

function insertAfterDelete(op) {
  for (let i = 1; i < op.length; i++) if (isDelete(op[i - 1]) && isInsert(op[i])) return true;
  return false;
}

/**
 * a transformed to apply after b (both made on the same text). With side
 * 'left' a's insert lands before b's insert at the same position, with
 * 'right' after. transform(a, b, 'left') and transform(b, a, 'right')
 * converge.
 */
export function transform(a, b, side) {
  validate(a);
  validate(b);
  if (side !== 'left' && side !== 'right') throw new OTError(`transform: side must be 'left' or 'right', got ${describe(side)}`);
  // A delete-then-insert spelling ties like its canonical insert-then-delete.
  if (insertAfterDelete(a)) a = normalize(a);
  if (insertAfterDelete(b)) b = normalize(b);
  const out = new Builder();
  const ca = new Cursor(a);
  const cb = new Cursor(b);
  for (;;) {
    ca.load();
    cb.load();
    if (!ca.ok && !cb.ok) return out.finish();
    if (ca.insert && (side === 'left' || !cb.insert)) {
      out.insert(ca.s);
      ca.take(ca.n);
    } else if (cb.insert) {
      out.retain(cb.n);
      cb.take(cb.n);
    } else if (!cb.ok) {
      if (ca.del) out.delete(ca.n);
      else out.retain(ca.n);
      ca.take(ca.n);
    } else if (!ca.ok) {
      cb.take(cb.n);
    } else {
      const n = Math.min(ca.n, cb.n);
      if (ca.retain && cb.retain) out.retain(n);
      else if (ca.del && cb.retain) out.delete(n);
      ca.take(n);
      cb.take(n);
    }
  }
}

/** One operation with the effect of a followed by b. */
export function compose(a, b) {
  validate(a);
  validate(b);
  const out = new Builder();
  const ca = new Cursor(a);
  const cb = new Cursor(b);
  for (;;) {
    ca.load();
    cb.load();
    if (!ca.ok && !cb.ok) return out.finish();
    if (ca.del) {
      out.delete(ca.n);
      ca.take(ca.n);
    } else if (cb.insert) {
      out.insert(cb.s);
      cb.take(cb.n);
    } else if (!ca.ok) {
      if (cb.del) out.delete(cb.n);
      else out.retain(cb.n);
      cb.take(cb.n);
    } else if (!cb.ok) {
      if (ca.insert) out.insert(ca.s);
      else out.retain(ca.n);
      ca.take(ca.n);
    } else {
      const n = Math.min(ca.n, cb.n);
      if (ca.retain && cb.retain) out.retain(n);
      else if (ca.retain && cb.del) out.delete(n);
      else if (ca.insert && cb.retain) out.insert(ca.s.slice(0, cpToUtf16(ca.s, n)));
      ca.take(n);
      cb.take(n);
    }
  }
}

/**
 * Moves a caret (code points) through op. An insert exactly at the caret
 * moves it after the inserted text only when own is true (op is the caret
 * owner's); deletions covering the caret pull it to the gap.
 */
export function transformCursor(pos, op, own) {
  if (!(pos > 0)) pos = 0;
  let res = pos;
  let base = 0;
  for (const c of op) {
    if (base > pos) break;
    if (isRetain(c)) {
      base += c;
    } else if (isDelete(c)) {
      if (base + c.d >= pos) {
        res -= pos - base;
        pos = base + c.d;
      } else {
        res -= c.d;
      }
      base += c.d;
    } else if (isInsert(c)) {
      if (base < pos || own) res += cpLength(c);
    }
  }
  return res;
}

/**
 * Whether op, committed by opUser from client opClient, moves a caret of
 * caretUser's client caretClient as its owner's (the own argument of
 * transformCursor and transformSelection). The same user in another tab is
 * someone else; a caret whose client is not known goes by the user. The
 * server decides with the same rule (Go: ot.OwnsCaret), so every copy puts
 * a caret in the same place.
 */
export function ownsCaret(caretUser, caretClient, opUser, opClient) {
  return caretUser === opUser && (!caretClient || caretClient === opClient);
}

/**
 * Moves a selection {anchor, head} through op. Others' text inserted at a
 * boundary stays outside the selection; the owner's insert at the end
 * extends it. A collapsed selection moves like a caret.
 */
export function transformSelection(anchor, head, op, own) {
  if (anchor === head) {
    const p = transformCursor(anchor, op, own);
    return [p, p];
  }
  let s = transformCursor(Math.min(anchor, head), op, true);
  const e = transformCursor(Math.max(anchor, head), op, own);
  if (s > e) s = e;
  return anchor < head ? [s, e] : [e, s];
}
