import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rope } from './rope.js';
import * as ot from './ot.js';
import { utf8Length } from './utf8.js';
import { rng } from './testkit.test-helper.mjs';

// Every rope operation must agree with the same operation on a plain string.
function check(r, s, what) {
  assert.equal(r.toString(), s, what);
  assert.equal(r.length, s.length, `${what}: length`);
  assert.equal(r.cpLength, ot.cpLength(s), `${what}: cpLength`);
  assert.equal(r.byteLength, utf8Length(s), `${what}: byteLength`);
  for (const c of r.chunks) assert.ok(c.s.length > 0, `${what}: empty chunk`);
}

test('rope: random operations agree with ot.apply on strings', () => {
  const rnd = rng(11);
  const alphabet = ['a', 'b', ' ', '\n', 'é', '€', '😀', '\ud83d', '\ude00', 'xyz'];
  const word = (n) => {
    let s = '';
    for (let i = 0; i < n; i++) s += alphabet[Math.floor(rnd() * alphabet.length)];
    return s;
  };
  for (let round = 0; round < 40; round++) {
    let s = word(Math.floor(rnd() * 6000));
    let r = Rope.from(s);
    check(r, s, 'from');
    for (let k = 0; k < 60; k++) {
      const len = ot.cpLength(s);
      const op = [];
      let pos = 0;
      while (pos < len && rnd() < 0.8) {
        const n = 1 + Math.floor(rnd() * Math.min(len - pos, rnd() < 0.3 ? 5000 : 40));
        if (rnd() < 0.6) op.push(n);
        else op.push({ d: n });
        pos += n;
        if (rnd() < 0.5) op.push(word(1 + Math.floor(rnd() * (rnd() < 0.1 ? 3000 : 8))));
      }
      if (rnd() < 0.3) op.push(word(1 + Math.floor(rnd() * 4)));
      const norm = ot.normalize(op);
      const want = ot.apply(s, norm);
      const { rope, changes } = r.apply(norm);
      check(rope, want, `round ${round} edit ${k}`);
      // The changes, applied to the old string from the end, give the same text.
      let t = s;
      for (let i = changes.length - 1; i >= 0; i--) t = t.slice(0, changes[i].from) + changes[i].insert + t.slice(changes[i].to);
      assert.equal(t, want, 'changes');
      check(r, s, 'the old rope is unchanged');
      s = want;
      r = rope;
      for (let j = 0; j < 5; j++) {
        const u = Math.floor(rnd() * (s.length + 2));
        assert.equal(r.utf16ToCp(u), ot.utf16ToCp(s, u), `utf16ToCp ${u}`);
        const cp = Math.floor(rnd() * (ot.cpLength(s) + 2));
        assert.equal(r.cpToUtf16(cp), ot.cpToUtf16(s, cp), `cpToUtf16 ${cp}`);
        const a = Math.floor(rnd() * s.length);
        assert.equal(r.slice(a, a + 100), s.slice(a, a + 100));
      }
    }
  }
});

test('rope: an operation past the end throws and changes nothing', () => {
  const r = Rope.from('abc');
  assert.throws(() => r.apply([4, 'x']), ot.OTError);
  assert.throws(() => r.apply([2, { d: 2 }]), ot.OTError);
  assert.equal(r.toString(), 'abc');
});

test('rope: typing at the end of a large text stays in few chunks and costs no copy of the text', () => {
  let r = Rope.from('x'.repeat(1 << 20));
  const chunks = r.chunks.length;
  for (let i = 0; i < 5000; i++) r = r.apply([r.cpLength, 'y']).rope;
  assert.ok(r.chunks.length <= chunks + 5, `${r.chunks.length} chunks after typing, ${chunks} before`);
  // A copy of 1 MiB per key would take about a millisecond; chunks keep it far below.
  const t0 = performance.now();
  for (let i = 0; i < 1000; i++) r = r.apply([r.cpLength - 10, 'z']).rope;
  const per = (performance.now() - t0) / 1000;
  assert.ok(per < 0.5, `${per.toFixed(3)} ms per key press`);
});
