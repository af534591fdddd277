import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from './client.js';
import { claimPending, persistPending, PENDING_PREFIX, BASE_PREFIX } from './storage.js';
import { Clock, Network, ServerModel } from './testkit.test-helper.mjs';
import * as ot from './ot.js';

/** localStorage in memory, counting the bytes written per key prefix. */
class MemoryStorage {
  constructor() {
    this.m = new Map();
    this.writes = [];
  }
  get length() {
    return this.m.size;
  }
  key(i) {
    return [...this.m.keys()][i] ?? null;
  }
  getItem(k) {
    return this.m.has(k) ? this.m.get(k) : null;
  }
  setItem(k, v) {
    this.writes.push({ k, n: v.length });
    this.m.set(k, String(v));
  }
  removeItem(k) {
    this.m.delete(k);
  }
}

function open(net, clock, storage, idle, opts = {}) {
  const c = new Client({
    url: 'ws://x/v1/docs/d/ws',
    connect: net.connect,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: () => 0.5,
    token: 'ann',
    clientId: opts.clientId,
    restore: opts.restore,
  });
  persistPending(c, 'd', { storage, target: {}, idle: (f) => (idle.push(f), idle.length), cancelIdle: () => {} });
  c.start();
  return c;
}

const append = (c, s) => c.submit(c.doc.cpLength ? [c.doc.cpLength, s] : [s]);
const tick = () => new Promise((r) => setTimeout(r, 0));

test('unsent edits survive a tab killed while connected, and arrive exactly once', async () => {
  const server = new ServerModel({ text: 'hello' });
  const net = new Network(server);
  const clock = new Clock();
  const storage = new MemoryStorage();
  const idle = [];
  const a = open(net, clock, storage, idle, { clientId: 'tab-a' });
  const x = new Client({ url: 'ws://x/v1/docs/d/ws', connect: net.connect, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, now: clock.now, token: 'xav', clientId: 'x' });
  x.start();
  net.drain(() => 0);
  for (const f of idle.splice(0)) f(); // the base, in idle time
  await tick();
  assert.ok(storage.getItem(`${BASE_PREFIX}d:tab-a`), 'base written after the text arrived');

  // Others edit and ours are acknowledged: the log grows, the base stays.
  x.submit(['X']);
  net.drain(() => 0);
  for (const ch of ' world') {
    append(a, ch);
    await tick();
    net.drain(() => 0);
  }
  assert.equal(a.text, 'Xhello world');
  const baseWrites = () => storage.writes.filter((w) => w.k.startsWith(BASE_PREFIX)).length;
  assert.equal(baseWrites(), 1, 'the whole text is not written per key press');

  // Acks stop coming (the connection hangs); the person keeps typing.
  const conn = net.conns.find((c) => c.clientId === 'tab-a' && !c.closed);
  for (const ch of '!?') {
    append(a, ch);
    await tick();
    while (conn.toServer.length) server.receive(conn, conn.toServer.shift());
  }
  assert.equal(server.text, 'Xhello world!', 'the first was committed, its ack never read');
  assert.equal(a.unsentEdits(), 2);
  const saved = JSON.parse(storage.getItem(`${PENDING_PREFIX}d:tab-a`));
  assert.equal(saved.v, 2);
  assert.ok(!('base' in saved), 'the pending entry leaves the text out');
  assert.ok(storage.writes.filter((w) => w.k.startsWith(PENDING_PREFIX)).every((w) => w.n < 2000), 'small writes per change');

  // The tab is killed: no pagehide, no close.
  net.kill(conn, 1006, false);
  const claimed = await claimPending('d', { storage, locks: null, now: () => Date.now() + 60000 });
  assert.equal(claimed.clientId, 'tab-a');
  assert.equal(claimed.snapshot.base, 'Xhello world', 'base text rebuilt from the saved text and the log');
  const b = open(net, clock, storage, idle, { clientId: claimed.clientId, restore: claimed.snapshot });
  net.drain(() => 0);
  assert.equal(b.text, 'Xhello world!?');
  assert.ok(b.synchronized());
  assert.equal(server.text, 'Xhello world!?', 'each edit exactly once');
  const seen = new Set();
  for (const e of server.log) {
    assert.ok(!seen.has(`${e.client}/${e.seq}`), 'committed twice');
    seen.add(`${e.client}/${e.seq}`);
  }
  await tick();
  assert.equal(storage.getItem(`${PENDING_PREFIX}d:tab-a`), null, 'entry removed once acknowledged');
});

test('a long log is folded into a new base in idle time', async () => {
  const server = new ServerModel({ text: '' });
  const net = new Network(server);
  const clock = new Clock();
  const storage = new MemoryStorage();
  const idle = [];
  const a = open(net, clock, storage, idle, { clientId: 'tab-a' });
  net.drain(() => 0);
  for (const f of idle.splice(0)) f();
  for (let i = 0; i < 450; i++) {
    append(a, 'y');
    net.drain(() => 0);
  }
  await tick();
  assert.equal(idle.length, 1, 'a new base is wanted');
  idle.shift()();
  const base = JSON.parse(storage.getItem(`${BASE_PREFIX}d:tab-a`));
  assert.equal(base.rev, 450);
  assert.equal(base.text, 'y'.repeat(450));
  assert.equal(ot.cpLength(a.text), 450);
});
