import { test } from 'node:test';
import assert from 'node:assert/strict';
import { editOp, utf16ToCp, cpToUtf16, cleanField } from './edit.js';

// applyCp applies an op (code points) to a string; an independent reference
// so these tests do not depend on the OT module.
function applyCp(text, op) {
  const cps = Array.from(text);
  const out = [];
  let i = 0;
  for (const c of op) {
    if (typeof c === 'number') {
      out.push(...cps.slice(i, i + c));
      i += c;
    } else if (typeof c === 'string') out.push(c);
    else i += c.d;
  }
  assert.ok(i <= cps.length, 'op must not run past the text');
  out.push(...cps.slice(i)); // an omitted trailing retain keeps the rest
  return out.join('');
}

test('editOp', async (t) => {
  const cases = [
    { name: 'equal', before: 'abc', after: 'abc', caret: 1, want: null },
    { name: 'type at end', before: 'ab', after: 'abc', caret: 3, want: [2, 'c'] },
    { name: 'type at start', before: 'ab', after: 'xab', caret: 1, want: ['x'] },
    { name: 'type a inside aa uses caret', before: 'aa', after: 'aaa', caret: 1, want: ['a'] },
    { name: 'type a inside aa without caret', before: 'aa', after: 'aaa', caret: -1, want: [2, 'a'] },
    { name: 'backspace inside run', before: 'aaa', after: 'aa', caret: 0, want: [{ d: 1 }] },
    { name: 'delete forward', before: 'abcd', after: 'abd', caret: 2, want: [2, { d: 1 }] },
    { name: 'replace selection', before: 'hello world', after: 'hello there', caret: 11, want: [6, { d: 5 }, 'there'] },
    { name: 'emoji insert', before: 'ab', after: 'a😀b', caret: 3, want: [1, '😀'] },
    { name: 'emoji after emoji', before: '😀', after: '😀😀', caret: 4, want: [1, '😀'] },
    { name: 'delete emoji', before: 'a😀b', after: 'ab', caret: 1, want: [1, { d: 1 }] },
    { name: 'counts after emoji in code points', before: '😀x', after: '😀xy', caret: 4, want: [2, 'y'] },
    { name: 'replace one emoji by another sharing high surrogate', before: 'a😀b', after: 'a😁b', caret: -1, want: [1, { d: 1 }, '😁'] },
    { name: 'bogus caret falls back to diff', before: 'abc', after: 'abXc', caret: 0, want: [2, 'X'] },
    { name: 'clear all', before: 'abc', after: '', caret: 0, want: [{ d: 3 }] },
    { name: 'fill empty', before: '', after: 'héllo', caret: 5, want: ['héllo'] },
    { name: 'newline', before: 'ab', after: 'a\nb', caret: 2, want: [1, '\n'] },
  ];
  for (const c of cases) {
    await t.test(c.name, () => {
      const op = editOp(c.before, c.after, c.caret);
      assert.deepEqual(op, c.want);
      if (op) assert.equal(applyCp(c.before, op), c.after);
    });
  }
});

test('editOp round-trips random edits', () => {
  const alphabet = ['a', 'b', '😀', 'é', '\n', '𝄞'];
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  for (let i = 0; i < 2000; i++) {
    const len = Math.floor(rnd() * 8);
    const cps = Array.from({ length: len }, () => alphabet[Math.floor(rnd() * alphabet.length)]);
    const before = cps.join('');
    const at = Math.floor(rnd() * (cps.length + 1));
    const del = Math.floor(rnd() * (cps.length - at + 1));
    const ins = Array.from({ length: Math.floor(rnd() * 3) }, () => alphabet[Math.floor(rnd() * alphabet.length)]).join('');
    const after = [...cps.slice(0, at), ins, ...cps.slice(at + del)].join('');
    const caret = rnd() < 0.5 ? -1 : Math.floor(rnd() * (after.length + 1));
    const op = editOp(before, after, caret);
    if (before === after) {
      assert.equal(op, null);
      continue;
    }
    assert.equal(applyCp(before, op), after, `before=${JSON.stringify(before)} after=${JSON.stringify(after)} caret=${caret} op=${JSON.stringify(op)}`);
    for (const c of op) {
      if (typeof c === 'string') assert.ok(!/^[\uDC00-\uDFFF]|[\uD800-\uDBFF]$/.test(c), `insert splits a pair: ${JSON.stringify(op)}`);
    }
  }
});

test('code point conversions', async (t) => {
  const s = 'a😀b𝄞c';
  const table = [
    // [utf16, cp]
    [0, 0], [1, 1], [3, 2], [4, 3], [6, 4], [7, 5],
  ];
  for (const [u, cp] of table) {
    await t.test(`u=${u}`, () => {
      assert.equal(utf16ToCp(s, u), cp);
      assert.equal(cpToUtf16(s, cp), u);
    });
  }
  await t.test('offset inside a pair rounds down', () => assert.equal(utf16ToCp(s, 2), 1));
  await t.test('clamps past the end', () => {
    assert.equal(cpToUtf16(s, 99), s.length);
    assert.equal(utf16ToCp(s, 99), 5);
  });
});

test('cleanField takes U+0000 out of typed or pasted text and keeps the selection in place', () => {
  const cases = [
    { name: 'nothing to clean', value: 'abc', start: 1, end: 2, want: { value: 'abc', start: 1, end: 2, removed: 0 } },
    { name: 'pasted in the middle, caret after it', value: 'ab\u0000\u0000cd', start: 5, end: 5, want: { value: 'abcd', start: 3, end: 3, removed: 2 } },
    { name: 'selection around it', value: 'a\u0000b', start: 0, end: 3, want: { value: 'ab', start: 0, end: 2, removed: 1 } },
    { name: 'only U+0000', value: '\u0000', start: 1, end: 1, want: { value: '', start: 0, end: 0, removed: 1 } },
    { name: 'next to an emoji', value: '😀\u0000x', start: 3, end: 3, want: { value: '😀x', start: 2, end: 2, removed: 1 } },
  ];
  for (const c of cases) {
    assert.deepEqual(cleanField(c.value, c.start, c.end), c.want, c.name);
  }
  // The cleaned field diffs into an operation the server accepts.
  const got = cleanField('ab\u0000c', 4, 4);
  assert.deepEqual(editOp('ab', got.value, got.end), [2, 'c']);
});
