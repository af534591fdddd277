// Tests for ot.js: the shared vectors from the Go package, seeded property
// tests, and UTF-16 edge cases. Run with: node --test runtime/web/static/js/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as ot from './ot.js';

const vectors = JSON.parse(readFileSync(new URL('../../ot/testdata/vectors.json', import.meta.url), 'utf8'));

test('vectors file has every section', () => {
  assert.equal(vectors.format, 1);
  for (const s of ['apply', 'transform', 'compose', 'normalize', 'transformCursor', 'transformSelection', 'ownsCaret', 'invalid']) {
    assert.ok(Array.isArray(vectors[s]) && vectors[s].length > 0, `section ${s}`);
  }
});

test('vectors: apply', async (t) => {
  for (const c of vectors.apply) {
    await t.test(c.name, () => {
      if (c.error) assert.throws(() => ot.apply(c.doc, c.op), ot.OTError);
      else assert.equal(ot.apply(c.doc, c.op), c.result);
    });
  }
});

test('vectors: transform', async (t) => {
  for (const c of vectors.transform) {
    await t.test(c.name, () => {
      assert.deepEqual(ot.transform(c.a, c.b, c.side), c.result);
      const other = c.side === 'left' ? 'right' : 'left';
      checkTP1(c.doc, c.a, c.b, c.side, other);
    });
  }
});

test('vectors: compose', async (t) => {
  for (const c of vectors.compose) {
    await t.test(c.name, () => {
      assert.deepEqual(ot.compose(c.a, c.b), c.result);
      assert.equal(ot.apply(c.doc, c.result), ot.apply(ot.apply(c.doc, c.a), c.b));
    });
  }
});

test('vectors: normalize', async (t) => {
  for (const c of vectors.normalize) {
    await t.test(c.name, () => assert.deepEqual(ot.normalize(c.op), c.result));
  }
});

test('vectors: transformCursor', async (t) => {
  for (const c of vectors.transformCursor) {
    await t.test(c.name, () => assert.equal(ot.transformCursor(c.pos, c.op, c.own), c.result));
  }
});

test('vectors: transformSelection', async (t) => {
  for (const c of vectors.transformSelection) {
    await t.test(c.name, () => assert.deepEqual(ot.transformSelection(c.anchor, c.head, c.op, c.own), c.result));
  }
});

test('vectors: ownsCaret', async (t) => {
  for (const c of vectors.ownsCaret) {
    await t.test(c.name, () => assert.equal(ot.ownsCaret(c.caretUser, c.caretClient, c.opUser, c.opClient), c.result));
  }
});

test('vectors: invalid operations are rejected', async (t) => {
  for (const c of vectors.invalid) {
    // 1.0 and 1e1 parse to plain integers in JavaScript: only the Go parser,
    // which sees the text, can tell them apart.
    if (c.lexical) continue;
    await t.test(c.name, () => {
      let op;
      try {
        op = JSON.parse(c.json);
      } catch {
        return; // not even JSON
      }
      assert.throws(() => ot.validate(op), ot.OTError);
      assert.equal(ot.isValid(op), false);
      assert.throws(() => ot.apply('x'.repeat(10), op), ot.OTError);
    });
  }
});

test('validate: table', async (t) => {
  const cases = [
    { name: 'empty', op: [], ok: true },
    { name: 'mixed', op: [2, 'x', { d: 1 }], ok: true },
    { name: 'not an array', op: { d: 1 }, ok: false },
    { name: 'NaN', op: [NaN], ok: false },
    { name: 'Infinity', op: [Infinity], ok: false },
    { name: 'unsafe integer', op: [2 ** 53], ok: false },
    { name: 'fraction', op: [0.5], ok: false },
    { name: 'delete with extra key', op: [{ d: 1, x: 1 }], ok: false },
    { name: 'delete with string count', op: [{ d: '1' }], ok: false },
    { name: 'undefined element', op: [undefined], ok: false },
    { name: 'lengths beyond max', op: [Number.MAX_SAFE_INTEGER, { d: 1 }], ok: false },
  ];
  for (const c of cases) {
    await t.test(c.name, () => {
      if (c.ok) ot.validate(c.op);
      else assert.throws(() => ot.validate(c.op), ot.OTError);
    });
  }
  assert.throws(() => ot.transform([], [], 'middle'), /side/);
});

// ---- property tests -------------------------------------------------------

// mulberry32: a small seeded PRNG so failures reproduce.
function prng(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const alphabet = ['a', 'b', 'c', ' ', '\n', 'é', '\u0301', '中', '😀', '𝄞', '\u{1F3FD}'];

function randText(rnd, n) {
  let s = '';
  for (let i = 0; i < n; i++) s += alphabet[Math.floor(rnd() * alphabet.length)];
  return s;
}

const int = (rnd, n) => Math.floor(rnd() * n);

function randOp(rnd, len) {
  const op = [];
  let pos = 0;
  while (pos < len) {
    const k = int(rnd, 10);
    if (k < 4) {
      const n = 1 + int(rnd, len - pos);
      op.push(n);
      pos += n;
    } else if (k < 7) {
      const n = 1 + int(rnd, Math.min(len - pos, 4));
      op.push({ d: n });
      pos += n;
    } else if (k < 9) {
      op.push(randText(rnd, 1 + int(rnd, 4)));
    } else {
      return op;
    }
  }
  if (int(rnd, 3) === 0) op.push(randText(rnd, 1 + int(rnd, 3)));
  return op;
}

function checkTP1(doc, a, b, sideA, sideB) {
  const a2 = ot.transform(a, b, sideA);
  const b2 = ot.transform(b, a, sideB);
  const left = ot.apply(ot.apply(doc, a), b2);
  const right = ot.apply(ot.apply(doc, b), a2);
  assert.equal(left, right, `TP1 on ${JSON.stringify(doc)} a=${JSON.stringify(a)} b=${JSON.stringify(b)}`);
}

function isCanonical(op) {
  for (let i = 1; i < op.length; i++) {
    const p = op[i - 1];
    const c = op[i];
    const kind = (x) => (typeof x === 'number' ? 'r' : typeof x === 'string' ? 'i' : 'd');
    if (kind(p) === kind(c) || (kind(p) === 'd' && kind(c) === 'i')) return false;
  }
  return op.length === 0 || typeof op[op.length - 1] !== 'number';
}

test('property: TP1 convergence', () => {
  const rnd = prng(12345);
  for (let i = 0; i < 3000; i++) {
    const doc = randText(rnd, int(rnd, 20));
    const a = randOp(rnd, ot.cpLength(doc));
    const b = randOp(rnd, ot.cpLength(doc));
    checkTP1(doc, a, b, 'left', 'right');
    checkTP1(doc, a, b, 'right', 'left');
    assert.ok(isCanonical(ot.transform(a, b, 'left')));
  }
});

test('property: compose agrees with sequential apply', () => {
  const rnd = prng(777);
  for (let i = 0; i < 3000; i++) {
    const doc = randText(rnd, int(rnd, 20));
    const a = randOp(rnd, ot.cpLength(doc));
    const mid = ot.apply(doc, a);
    const b = randOp(rnd, ot.cpLength(mid));
    const c = ot.compose(a, b);
    assert.ok(isCanonical(c), JSON.stringify(c));
    assert.equal(ot.apply(doc, c), ot.apply(mid, b));
  }
});

test('property: normalize keeps the effect and lengths add up', () => {
  const rnd = prng(4242);
  for (let i = 0; i < 3000; i++) {
    const doc = randText(rnd, int(rnd, 20));
    const op = randOp(rnd, ot.cpLength(doc));
    const n = ot.normalize(op);
    assert.ok(isCanonical(n));
    assert.deepEqual(ot.normalize(n), n);
    const out = ot.apply(doc, op);
    assert.equal(ot.apply(doc, n), out);
    assert.equal(ot.cpLength(out) - ot.cpLength(doc), ot.targetLength(op) - ot.baseLength(op));
  }
});

test('property: cursors stay between their neighbours', () => {
  const rnd = prng(99);
  for (let i = 0; i < 2000; i++) {
    const n = int(rnd, 15);
    const orig = Array.from({ length: n }, (_, j) => String.fromCodePoint(0x10000 + j));
    const op = randOp(rnd, n);
    const out = Array.from(ot.apply(orig.join(''), op));
    const where = new Map(out.map((ch, j) => [ch, j]));
    for (let pos = 0; pos <= n; pos++) {
      const other = ot.transformCursor(pos, op, false);
      const own = ot.transformCursor(pos, op, true);
      assert.ok(other >= 0 && own <= out.length && own >= other);
      for (const res of [other, own]) {
        for (let j = pos - 1; j >= 0; j--) {
          if (where.has(orig[j])) {
            assert.ok(where.get(orig[j]) < res);
            break;
          }
        }
        for (let j = pos; j < n; j++) {
          if (where.has(orig[j])) {
            assert.ok(where.get(orig[j]) >= res);
            break;
          }
        }
      }
    }
  }
});

test('functions do not modify their arguments', () => {
  const a = [1, { d: 1 }, 'x', 2];
  const b = [{ d: 2 }, 'yy'];
  const copyA = structuredClone(a);
  const copyB = structuredClone(b);
  ot.transform(a, b, 'left');
  ot.compose(a, [1, { d: 1 }, 'z']);
  ot.normalize(a);
  ot.apply('abcd', a);
  assert.deepEqual(a, copyA);
  assert.deepEqual(b, copyB);
});

// ---- UTF-16 and code points -----------------------------------------------

test('utf16 helpers', async (t) => {
  const s = 'a😀b\u{1F3FD}é\u0301';
  // code points: a 😀 b 🏽 e ́  (é here is one code point U+00E9)
  await t.test('cpLength counts pairs once', () => {
    assert.equal(ot.cpLength(''), 0);
    assert.equal(ot.cpLength(s), 6);
    assert.equal(ot.cpLength('😀😀'), 2);
  });
  await t.test('lone surrogates count as one code point each', () => {
    assert.equal(ot.cpLength('\ud83d'), 1);
    assert.equal(ot.cpLength('\ude00\ud83d'), 2);
    assert.equal(ot.cpLength('a\ud83d'), 2);
  });
  await t.test('cpToUtf16', () => {
    const table = [
      [0, 0],
      [1, 1],
      [2, 3],
      [3, 4],
      [4, 6],
      [6, 8],
      [99, 8],
      [-1, 0],
    ];
    for (const [cp, u] of table) assert.equal(ot.cpToUtf16(s, cp), u, `cp ${cp}`);
  });
  await t.test('utf16ToCp', () => {
    const table = [
      [0, 0],
      [1, 1],
      [2, 1], // inside 😀: rounds down
      [3, 2],
      [5, 3], // inside 🏽
      [8, 6],
      [99, 6],
      [-3, 0],
    ];
    for (const [u, cp] of table) assert.equal(ot.utf16ToCp(s, u), cp, `u16 ${u}`);
  });
  await t.test('round trip at every code point', () => {
    for (let cp = 0; cp <= ot.cpLength(s); cp++) assert.equal(ot.utf16ToCp(s, ot.cpToUtf16(s, cp)), cp);
  });
  await t.test('apply counts code points, not UTF-16 units', () => {
    assert.equal(ot.apply('😀😀', [1, 'x']), '😀x😀');
    assert.equal(ot.apply('😀😀', [{ d: 1 }]), '😀');
    assert.throws(() => ot.apply('😀', [2]), ot.OTError);
    assert.equal(ot.transformCursor(1, ['😀😀'], true), 3);
  });
  await t.test('compose splits inserts on code point boundaries', () => {
    assert.deepEqual(ot.compose(['😀a🎉'], [1, { d: 1 }]), ['😀🎉']);
    assert.deepEqual(ot.compose(['😀🎉'], [1, 'x']), ['😀x🎉']);
  });
});
