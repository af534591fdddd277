// Tests of the CodeMirror binding's conversions (UTF-16 positions of the
// editor to code points of the protocol and back) and of the history rule
// it relies on: remote changes are not undone, local ones are, mapped
// through the remote ones. Runs in Node: @codemirror/state needs no DOM.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChangeSet, EditorState, Transaction } from '@codemirror/state';
import { history, undo, redo } from '@codemirror/commands';
import { changesToOp, opToChanges, diffChange } from './codemirror.js';
import * as ot from './ot.js';
import { rng } from './testkit.test-helper.mjs';

const alphabet = ['a', 'b', ' ', '\n', 'é', '😀', '👍🏽', '\u0301'];

function randomText(rnd, max) {
  let s = '';
  for (let i = Math.floor(rnd() * max); i > 0; i--) s += alphabet[Math.floor(rnd() * alphabet.length)];
  return s;
}

/** A random change set on text, at UTF-16 positions that never split a pair. */
function randomChanges(rnd, text) {
  const bounds = [0];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xdc00 && c <= 0xdfff) continue;
    bounds.push(i);
  }
  bounds.push(text.length);
  const picks = [...new Set(Array.from({ length: 1 + Math.floor(rnd() * 4) }, () => bounds[Math.floor(rnd() * bounds.length)]))].sort((a, b) => a - b);
  const specs = [];
  for (let i = 0; i + 1 < picks.length || i === 0; i += 2) {
    const from = picks[i];
    const to = i + 1 < picks.length && rnd() < 0.5 ? picks[i + 1] : from;
    specs.push({ from, to, insert: randomText(rnd, 4) });
    if (picks.length === 1) break;
  }
  return ChangeSet.of(specs, text.length);
}

test('changesToOp and opToChanges agree with applying the change', () => {
  const rnd = rng(11);
  for (let k = 0; k < 500; k++) {
    const text = randomText(rnd, 20);
    const cs = randomChanges(rnd, text);
    const want = cs.apply(EditorState.create({ doc: text }).doc).toString();
    const op = changesToOp(cs, text);
    assert.equal(ot.apply(text, op), want, `op ${JSON.stringify(op)} on ${JSON.stringify(text)}`);
    const back = ChangeSet.of(opToChanges(op, text), text.length);
    assert.equal(back.apply(EditorState.create({ doc: text }).doc).toString(), want);
  }
});

test('diffChange turns one text into another without splitting a pair', () => {
  const rnd = rng(12);
  for (let k = 0; k < 500; k++) {
    const a = randomText(rnd, 12);
    const b = rnd() < 0.3 ? a : randomText(rnd, 12);
    const c = diffChange(a, b);
    assert.equal(a.slice(0, c.from) + c.insert + a.slice(c.to), b);
    for (const p of [c.from, c.to]) {
      if (p > 0 && p < a.length) assert.ok((a.charCodeAt(p) & 0xfc00) !== 0xdc00 || (a.charCodeAt(p - 1) & 0xfc00) !== 0xd800, 'split a pair');
    }
  }
});

test('undo takes back only local edits, mapped through remote ones; redo puts them back', () => {
  const remote = (state, spec) =>
    state.update({ ...spec, annotations: [Transaction.remote.of(true), Transaction.addToHistory.of(false)] }).state;
  let s = EditorState.create({ doc: 'start', extensions: [history()] });
  s = s.update({ changes: { from: 5, insert: ' mine' }, userEvent: 'input.type' }).state;
  s = remote(s, { changes: { from: 0, insert: 'THEIRS ' } });
  s = remote(s, { changes: { from: s.doc.length, insert: ' END' } });
  assert.equal(s.doc.toString(), 'THEIRS start mine END');
  let next = s;
  const dispatch = (tr) => (next = tr.state);
  assert.ok(undo({ state: s, dispatch }));
  assert.equal(next.doc.toString(), 'THEIRS start END');
  assert.equal(undo({ state: next, dispatch }), false, 'nothing of the other person to undo');
  assert.ok(redo({ state: next, dispatch }));
  assert.equal(next.doc.toString(), 'THEIRS start mine END');
});
