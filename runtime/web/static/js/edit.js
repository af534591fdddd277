// Turning what happened in a text field into an operation, and moving
// between the field's UTF-16 offsets and the code points the protocol uses.
//
// A browser reports edits to a textarea only as "the value changed"; the
// editor keeps the previous value and diffs. The caret after the edit
// disambiguates repeated characters (typing "a" inside "aa"), so concurrent
// edits land where the person actually typed.
//
// Code points are counted, and caret and selection offsets converted, by
// the OT module's helpers; the conversions are re-exported so the editor has
// one place for edge conversions.

import { cpLength } from './ot.js';
import { withoutForbidden, forbiddenIndex } from './client.js';

export { utf16ToCp, cpToUtf16 } from './ot.js';

// Surrogate tests for splitsPair, which looks at one offset in constant
// time; the OT module's conversions walk the text from its start.
function isHigh(c) {
  return c >= 0xd800 && c <= 0xdbff;
}
function isLow(c) {
  return c >= 0xdc00 && c <= 0xdfff;
}

/** Whether offset i of s falls between the two halves of a surrogate pair. */
function splitsPair(s, i) {
  return i > 0 && i < s.length && isHigh(s.charCodeAt(i - 1)) && isLow(s.charCodeAt(i));
}

/**
 * The operation (code points, trailing retain left out) that turns `before` into
 * `after`, or null when they are equal. `caret` is the UTF-16 caret offset
 * in `after` when known (the selection end after an input event), or -1.
 */
export function editOp(before, after, caret = -1) {
  if (before === after) return null;
  const region = (caret >= 0 && guided(before, after, caret)) || plainDiff(before, after);
  const { start, delLen, insLen } = region;
  const op = [];
  const pre = cpLength(before.slice(0, start));
  if (pre > 0) op.push(pre);
  const del = cpLength(before.slice(start, start + delLen));
  if (del > 0) op.push({ d: del });
  if (insLen > 0) op.push(after.slice(start, start + insLen));
  // No trailing retain (the protocol allows leaving it out): counting the
  // rest of a large document on every keystroke would cost a full pass.
  return op;
}

// A pure insert that ends at the caret, or a pure delete that starts
// there: what typing, pasting, Backspace and Delete produce.
function guided(before, after, caret) {
  const delta = after.length - before.length;
  if (delta > 0) {
    const s = caret - delta;
    if (s < 0 || caret > after.length || splitsPair(after, s) || splitsPair(after, caret)) return null;
    if (after.slice(0, s) === before.slice(0, s) && after.slice(caret) === before.slice(s)) {
      return { start: s, delLen: 0, insLen: delta };
    }
  } else if (delta < 0) {
    const d = -delta;
    if (caret > after.length || splitsPair(before, caret) || splitsPair(before, caret + d)) return null;
    if (before.slice(0, caret) === after.slice(0, caret) && before.slice(caret + d) === after.slice(caret)) {
      return { start: caret, delLen: d, insLen: 0 };
    }
  }
  return null;
}

function plainDiff(before, after) {
  const max = Math.min(before.length, after.length);
  let pre = 0;
  while (pre < max && before.charCodeAt(pre) === after.charCodeAt(pre)) pre++;
  let suf = 0;
  while (suf < max - pre && before.charCodeAt(before.length - 1 - suf) === after.charCodeAt(after.length - 1 - suf)) suf++;
  // Never cut a surrogate pair: widen the changed region instead.
  while (pre > 0 && (splitsPair(before, pre) || splitsPair(after, pre))) pre--;
  while (suf > 0 && (splitsPair(before, before.length - suf) || splitsPair(after, after.length - suf))) suf--;
  return { start: pre, delLen: before.length - pre - suf, insLen: after.length - pre - suf };
}

/**
 * The field's value without the characters a document may not contain
 * (U+0000, see docs/protocol.md), with the selection offsets (UTF-16) moved
 * to the same places in the cleaned value. removed counts what was taken
 * out; when it is 0 the value is returned as is.
 */
export function cleanField(value, start, end) {
  if (forbiddenIndex(value) < 0) return { value, start, end, removed: 0 };
  const shift = (i) => i - (value.slice(0, i).length - withoutForbidden(value.slice(0, i)).length);
  const cleaned = withoutForbidden(value);
  return { value: cleaned, start: shift(start), end: shift(end), removed: value.length - cleaned.length };
}
