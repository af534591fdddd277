// Test kit for the client state machine: a fake clock, a lossy in-memory
// network and a small model of the runtime's sequencer that follows the
// wire protocol (hello/welcome/op/ack/presence/leave/error). The server
// model transforms an incoming operation against everything committed since
// its base revision with the incoming insert first, as the Go runtime does.
//
// The file name does not end in .test.mjs, so `node --test` does not run it
// on its own and the web handler does not serve it.

import * as ot from './ot.js';

/** A deterministic pseudo-random generator (mulberry32). */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A manual clock with setTimeout/clearTimeout that fire on advance(). */
export class Clock {
  constructor() {
    this.t = 0;
    this.timers = new Map();
    this.nextId = 1;
    this.setTimeout = (f, ms) => {
      const id = this.nextId++;
      this.timers.set(id, { at: this.t + Math.max(0, ms), f });
      return id;
    };
    this.clearTimeout = (id) => this.timers.delete(id);
    this.now = () => this.t;
  }

  /** Delays of the pending timers, soonest first. */
  pending() {
    return [...this.timers.values()].map((x) => x.at - this.t).sort((a, b) => a - b);
  }

  advance(ms) {
    const end = this.t + ms;
    for (;;) {
      let best = null;
      for (const [id, x] of this.timers) {
        if (x.at <= end && (best === null || x.at < best[1].at)) best = [id, x];
      }
      if (!best) break;
      this.timers.delete(best[0]);
      this.t = best[1].at;
      best[1].f();
    }
    this.t = end;
  }
}

/** The runtime, reduced to what the protocol promises. */
export class ServerModel {
  constructor({ text = '', readOnly = new Set(), keepOps = Infinity, window = Infinity, tokenTtlMs = 0, limits = null, announceLimits = true } = {}) {
    // Like the runtime's --max-message-bytes, --max-op-bytes and
    // --max-doc-bytes (bytes of UTF-8); announced in the welcome unless
    // announceLimits is false (a server that predates the field).
    this.limits = limits;
    this.announceLimits = announceLimits;
    this.oversizeCloses = 0;
    this.initial = text;
    this.text = text;
    this.log = []; // [{op, client, seq, user}], revision i+1 = log[i]
    this.committed = new Map(); // client -> Map(seq -> rev)
    this.conns = new Set();
    this.readOnly = readOnly; // user ids that may not submit
    this.keepOps = keepOps; // how many recent ops a welcome may replay
    this.window = window; // how far behind an op's base may be (else bad_revision)
    this.tokenTtlMs = tokenTtlMs; // > 0: tokens expire (welcome and auth carry authTtlMs)
    this.authTokens = []; // tokens handed over in auth messages
    this.nextUser = 1;
    this.nextConn = 1;
    this.submissions = 0;
  }

  get rev() {
    return this.log.length;
  }

  accept(conn) {
    this.conns.add(conn);
  }

  drop(conn) {
    if (!this.conns.delete(conn)) return;
    if (conn.user) {
      for (const c of this.conns) if (c.user) c.send({ type: 'leave', user: conn.user.id, conn: conn.id });
    }
  }

  /** Returns a close code when the connection must end (1009: message too big). */
  receive(conn, data) {
    if (this.limits && Buffer.byteLength(data, 'utf8') > this.limits.maxMessageBytes) {
      this.oversizeCloses++;
      return 1009;
    }
    const msg = JSON.parse(data);
    if (!conn.user) {
      if (msg.type !== 'hello') return conn.send({ type: 'error', code: 'bad_message', message: 'hello first' });
      // Like the runtime: a token names the user; without one (anonymous
      // mode) the user follows from the client id.
      const name = msg.token || `anon-${msg.client}`;
      conn.user = { id: name, name, color: '#123456' };
      conn.id = `conn${this.nextConn++}`;
      conn.clientId = msg.client;
      const perm = this.readOnly.has(name) ? 'read' : 'write';
      const welcome = { type: 'welcome', v: 1, rev: this.rev, user: conn.user, conn: conn.id, perm, presence: [] };
      if (this.tokenTtlMs > 0) welcome.authTtlMs = this.tokenTtlMs;
      if (this.limits && this.announceLimits) welcome.limits = { ...this.limits };
      for (const c of this.conns) {
        if (c !== conn && c.user) welcome.presence.push({ type: 'presence', user: c.user, conn: c.id, client: c.clientId, cursor: c.cursor });
      }
      if (msg.rev === undefined || this.rev - msg.rev > this.keepOps) welcome.text = this.text;
      else welcome.ops = this.log.slice(msg.rev).map((e, i) => this.opMsg(e, msg.rev + i + 1));
      conn.send(welcome);
      return;
    }
    switch (msg.type) {
      case 'op':
        return this.submit(conn, msg);
      case 'auth':
        // Like the runtime: a token for another user is refused and the
        // connection keeps its current one.
        this.authTokens.push(msg.token);
        if (msg.token !== conn.user.id) {
          return conn.send({ type: 'error', code: 'forbidden', message: 'auth refused: another user' });
        }
        return conn.send({ type: 'auth', authTtlMs: this.tokenTtlMs });
      case 'presence':
        conn.cursor = msg.cursor;
        if (msg.cursor && Number.isInteger(msg.rev)) {
          // Positions refer to msg.rev: move them to the head.
          let { anchor, head } = msg.cursor;
          for (const e of this.log.slice(msg.rev)) {
            [anchor, head] = ot.transformSelection(anchor, head, e.op, ot.ownsCaret(conn.user.id, conn.clientId, e.user, e.client));
          }
          conn.cursor = { anchor, head };
        }
        for (const c of this.conns) if (c !== conn && c.user) c.send({ type: 'presence', user: conn.user, conn: conn.id, client: conn.clientId, cursor: conn.cursor });
        return;
      default:
        conn.send({ type: 'error', code: 'bad_message', message: `unknown type ${msg.type}` });
    }
  }

  opMsg(e, rev) {
    return { type: 'op', rev, op: e.op, client: e.client, seq: e.seq, user: e.user };
  }

  submit(conn, msg) {
    this.submissions++;
    // Dedupe by author: user and client id together, as the runtime does.
    const author = `${conn.user.id}\n${conn.clientId}`;
    const seen = this.committed.get(author)?.get(msg.seq);
    if (seen !== undefined) return conn.send({ type: 'ack', seq: msg.seq, rev: seen });
    if (this.readOnly.has(conn.user.id)) {
      return conn.send({ type: 'error', code: 'forbidden', message: 'read-only', seq: msg.seq });
    }
    if (!Number.isInteger(msg.rev) || msg.rev > this.rev || msg.rev < 0 || this.rev - msg.rev > this.window) {
      return conn.send({ type: 'error', code: 'bad_revision', message: 'bad rev', seq: msg.seq });
    }
    if (msg.op.some((c) => typeof c === 'string' && c.includes('\u0000'))) {
      // What a document may contain (docs/protocol.md).
      return conn.send({ type: 'error', code: 'bad_op', message: 'text contains U+0000', seq: msg.seq });
    }
    const inserted = msg.op.reduce((n, c) => n + (typeof c === 'string' ? Buffer.byteLength(c, 'utf8') : 0), 0);
    if (this.limits && inserted > this.limits.maxOpBytes) {
      return conn.send({ type: 'error', code: 'too_large', message: 'operation inserts too much text at once', seq: msg.seq });
    }
    let op = msg.op;
    for (const e of this.log.slice(msg.rev)) op = ot.transform(op, e.op, 'left');
    const next = ot.apply(this.text, op);
    if (this.limits?.maxDocBytes && Buffer.byteLength(next, 'utf8') > this.limits.maxDocBytes && inserted > 0) {
      return conn.send({ type: 'error', code: 'too_large', message: `document would exceed ${this.limits.maxDocBytes} bytes`, seq: msg.seq });
    }
    this.text = next;
    const entry = { op, client: conn.clientId, seq: msg.seq, user: conn.user.id };
    this.log.push(entry);
    if (!this.committed.has(author)) this.committed.set(author, new Map());
    this.committed.get(author).set(msg.seq, this.rev);
    conn.send({ type: 'ack', seq: msg.seq, rev: this.rev });
    const m = this.opMsg(entry, this.rev);
    for (const c of this.conns) if (c !== conn && c.user) c.send(m);
  }
}

/**
 * A network of fake WebSockets between clients and one ServerModel. Frames
 * wait in per-connection queues until step() delivers one, so a test
 * decides the interleaving. kill() loses whatever is queued, like a
 * dropped TCP connection.
 */
export class Network {
  constructor(server) {
    this.server = server;
    this.conns = [];
    this.refuse = false; // when true new connections fail at once (server down)
    this.connect = (url) => this.open(url);
  }

  open(url) {
    const net = this;
    const conn = {
      url,
      toServer: [],
      toClient: [],
      closed: false,
      user: null,
      clientId: null,
      cursor: null,
      send(msg) {
        if (!this.closed) this.toClient.push({ kind: 'message', data: JSON.stringify(msg) });
      },
    };
    const socket = {
      onopen: null,
      onmessage: null,
      onclose: null,
      onerror: null,
      sent: [],
      send(data) {
        if (conn.closed) throw new Error('socket closed');
        socket.sent.push(JSON.parse(data));
        conn.toServer.push(data);
      },
      close(code = 1000) {
        net.kill(conn, code, false);
      },
    };
    conn.socket = socket;
    this.conns.push(conn);
    if (this.refuse) {
      conn.closed = true;
      conn.toClient.push({ kind: 'close', code: 1006 });
    } else {
      this.server.accept(conn);
      conn.toClient.push({ kind: 'open' });
    }
    return socket;
  }

  live() {
    return this.conns.filter((c) => c.toServer.length || c.toClient.length);
  }

  /** Delivers one queued frame chosen by rnd; false when nothing is queued. */
  step(rnd) {
    const live = this.live();
    if (!live.length) return false;
    const c = live[Math.floor(rnd() * live.length)];
    const toServer = c.toServer.length && (!c.toClient.length || rnd() < 0.5);
    if (toServer) {
      const data = c.toServer.shift();
      if (!c.closed) {
        const code = this.server.receive(c, data);
        if (code) this.kill(c, code, true, 'message too big');
      }
      return true;
    }
    const ev = c.toClient.shift();
    const s = c.socket;
    if (ev.kind === 'open') s.onopen?.({});
    else if (ev.kind === 'message') s.onmessage?.({ data: ev.data });
    else if (ev.kind === 'close') s.onclose?.({ code: ev.code, reason: ev.reason || '' });
    return true;
  }

  /** Delivers everything queued, in random order per rnd. */
  drain(rnd, limit = 100000) {
    let n = 0;
    while (this.step(rnd)) if (++n > limit) throw new Error('network did not settle');
  }

  /**
   * Ends a connection: queued frames are lost, the server forgets it and
   * the client later sees a close event with `code` (unless it closed the
   * socket itself).
   */
  kill(conn, code = 1006, notifyClient = true, reason = '') {
    if (conn.closed) return;
    conn.closed = true;
    conn.toServer = [];
    conn.toClient = notifyClient ? [{ kind: 'close', code, reason }] : [];
    this.server.drop(conn);
  }

  killAll(code = 1006) {
    for (const c of this.conns) this.kill(c, code);
  }

  /** The open connection of a client socket. */
  connOf(socket) {
    return this.conns.find((c) => c.socket === socket);
  }
}
