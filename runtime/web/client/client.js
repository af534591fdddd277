// The collaborative editing client: the Jupiter state machine that keeps a
// local copy of a document in step with the runtime, plus reconnection and
// presence. It speaks the wire protocol of docs/protocol.md.
//
// The socket, timers and randomness are injected so the whole state machine
// runs under Node's test runner with a fake transport; the browser passes a
// real WebSocket factory.
//
// Positions and lengths in operations and cursors count Unicode code points,
// as on the server. Converting to the UTF-16 offsets of DOM APIs is the
// editor's job (ot.js has cpToUtf16 / utf16ToCp).
//
// States of the edit pipeline (Jupiter, with the server as the authority):
//   synchronized        inflight == null, buffer == null
//   awaiting ack        inflight != null, buffer == null
//   awaiting + buffer   inflight != null, buffer != null
// Local edits go to inflight when nothing is in flight, else are composed
// into buffer. A remote operation R (already ordered by the server) is
// transformed past inflight and buffer before it is applied locally; they in
// turn are transformed past R. The server transforms an incoming operation
// with its insert first (Transform(incoming, committed, Left)), so the client
// mirrors it: pending' = transform(pending, R, 'left'),
// R' = transform(R, pending, 'right').

import * as ot from './ot.js';
import { Rope } from './rope.js';
import { utf8Length } from './utf8.js';

export { utf8Length };

/** Connection states reported through onState. */
export const State = Object.freeze({
  CONNECTING: 'connecting', // socket opening or hello sent, no welcome yet
  CONNECTED: 'connected', // welcome received, ops flow
  RECONNECTING: 'reconnecting', // waiting for the next attempt (see retryAt)
  OFFLINE: 'offline', // the browser says there is no network; waiting for it
  FAILED: 'failed', // a permanent error (auth, forbidden document); no retries
  CLOSED: 'closed', // closed by the application
});

/** Error codes after which reconnecting cannot help. */
const FATAL_CODES = new Set(['unauthorized', 'forbidden', 'deleted']);

/**
 * WebSocket close codes the runtime documents in docs/protocol.md. Codes in
 * the 4000–4999 range are application codes; those marked fatal stop the
 * reconnect loop because retrying with the same token cannot succeed. Any
 * other code (1006 for a dropped connection) reconnects with backoff.
 */
export const CloseCodes = Object.freeze({
  1009: { code: 'too_large', fatal: false, message: 'A message was too large for the server.' },
  1012: { code: 'restart', fatal: false, message: 'The server is restarting.' },
  1013: { code: 'unavailable', fatal: false, message: 'The document could not be loaded right now.' },
  4001: { code: 'unauthorized', fatal: true, message: 'Your access token is missing, invalid or expired.' },
  4002: { code: 'bad_message', fatal: false, message: 'The server did not understand this client.' },
  4003: { code: 'forbidden', fatal: true, message: 'Your access token does not grant this document.' },
  4004: { code: 'deleted', fatal: true, message: 'This document was deleted.' },
  4008: { code: 'rate_limited', fatal: false, message: 'Too many edits per second.' },
  4009: { code: 'doc_full', fatal: false, message: 'This document has too many people connected.' },
  4010: { code: 'slow_consumer', fatal: false, message: 'The connection was too slow to keep up.' },
  4011: { code: 'timeout', fatal: false, message: 'The connection timed out.' },
});

export const BACKOFF_BASE_MS = 1000;

/**
 * The server's limits when its welcome does not say (the runtime's
 * defaults): bytes of one WebSocket message, UTF-8 bytes one operation may
 * insert, UTF-8 bytes of the whole text (0: not known, not checked here).
 */
export const DEFAULT_LIMITS = Object.freeze({ maxMessageBytes: 256 << 10, maxOpBytes: 64 << 10, maxDocBytes: 0 });

// Room kept in every op frame for its envelope ({"type":"op","seq":…,
// "rev":…,"op":[…]}) beyond the operation itself.
const FRAME_OVERHEAD = 128;
// The smallest frame limit a 1009 close can teach: below it the operation
// is refused locally rather than sent in ever smaller pieces.
const MIN_FRAME_BYTES = 4096;
// A pending operation refused with 1009 this many times is given up.
const MAX_OVERSIZE_CLOSES = 4;
export const BACKOFF_MAX_MS = 30000;

/**
 * Delay before reconnect attempt number `attempt` (0 for the first retry):
 * 1 s doubling up to 30 s, with jitter that takes up to a fifth off so that
 * many clients dropped at once (a server restart) do not come back in
 * lockstep. `random` returns a number in [0, 1).
 */
export function backoffDelay(attempt, random = Math.random) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 30));
  return Math.round(base * (1 - 0.2 * random()));
}

/**
 * What a document may contain (docs/protocol.md): any Unicode text except
 * U+0000, which the server refuses with bad_op (PostgreSQL cannot store it).
 * Returns the UTF-16 index of the first forbidden character, or -1.
 */
export function forbiddenIndex(s) {
  return s.indexOf('\u0000');
}

/** s without the characters a document may not contain. */
export function withoutForbidden(s) {
  return s.indexOf('\u0000') < 0 ? s : s.replaceAll('\u0000', '');
}

/** A fresh client id: stable for the lifetime of one Client object. */
export function newClientId(random = Math.random) {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  let s = '';
  for (let i = 0; i < 32; i++) s += Math.floor(random() * 16).toString(16);
  return s;
}

/**
 * Client keeps one document in step with the runtime.
 *
 * Options:
 *   url         WebSocket URL of the document (…/v1/docs/{id}/ws)
 *   connect     (url) => socket with send(), close(code, reason) and the
 *               onopen / onmessage / onclose / onerror properties of a WebSocket
 *   token       bearer token sent in hello (omit in anonymous mode)
 *   refreshToken  optional () => token or Promise<token>: called shortly
 *               before the connection's token expires (the welcome says
 *               when); the result goes to the server in an auth message so
 *               the connection outlives short-lived tokens. Also called
 *               once when the server closes the connection as unauthorized
 *               (4001), before reconnecting with the new token.
 *   clientId    stable id for this client's submissions (default: random)
 *   profile     optional {name, color} sent in hello: the display name and
 *               colour the person chose; honoured in anonymous mode only.
 *               Assign client.profile later and reconnect to change it.
 *   setTimeout, clearTimeout, now, random   injectable clock and randomness
 *   presenceIntervalMs   minimum time between presence messages (default 50)
 *
 * Callbacks (all optional, assign as properties):
 *   onState({state, retryAt, attempt, error})  connection state changes
 *   onText({text, op, remote, user})   the document changed; op is what was
 *                                      applied to the previous text (code
 *                                      points), remote says whether it came
 *                                      from the server. On a full reload op
 *                                      is null.
 *   onPresence(Map<userId, {user, cursor}>)  others' presence changed
 *   onRevision(rev)                    the known server revision changed
 *   onError({code, message, seq})      an error message from the server
 *   onWelcome({user, rev})             this connection's user (id, name, color)
 *   onCommit({rev, op})                the server's text moved to rev by op
 *                                      (an acknowledged edit of ours or a
 *                                      remote one, code points on the text
 *                                      at rev - 1); op is null when the text
 *                                      was replaced whole (a reload)
 */
export class Client {
  constructor(opts) {
    if (!opts || typeof opts.url !== 'string' || typeof opts.connect !== 'function') {
      throw new TypeError('Client needs {url, connect}');
    }
    this.url = opts.url;
    this.connectFn = opts.connect;
    this.token = opts.token || '';
    this.refreshTokenFn = typeof opts.refreshToken === 'function' ? opts.refreshToken : null;
    this.refreshTimer = null;
    this.authDeadline = null; // when the connection's token stops being accepted (this.now())
    this.authRetry = false; // reconnecting with a refreshed token after 4001
    this.random = opts.random || Math.random;
    this.clientId = opts.clientId || newClientId(this.random);
    this.profile = opts.profile || null;
    this.setTimeout = opts.setTimeout || ((f, ms) => setTimeout(f, ms));
    this.clearTimeout = opts.clearTimeout || ((h) => clearTimeout(h));
    this.now = opts.now || (() => Date.now());
    this.presenceIntervalMs = opts.presenceIntervalMs ?? 50;

    // Texts are ropes (rope.js): an edit of a large document costs about a
    // chunk, not a copy of the document. client.text and client.base give
    // them as strings.
    this.doc = Rope.from(''); // local text: server text at rev + inflight + buffer
    this.baseDoc = this.doc; // server text at rev (no local edits)
    this.reloadRev = null; // rev of a full-text reload that rebased a sent op
    this.rev = null; // last server revision this client has, null before the first welcome
    this.nextSeq = 1;
    this.inflight = null; // {seq, op, sent, everSent, rev: base of the last send}
    this.buffer = null; // op made after inflight, composed
    this.bufferEdits = 0; // how many local edits buffer holds
    this.user = null; // this connection's user from welcome
    this.conn = null; // this connection's id from welcome
    this.perm = null; // 'read' or 'write' from welcome
    this.others = new Map(); // connection id (or user id) -> {user, conn, cursor}
    this.cursor = null; // local {anchor, head} in code points
    this.lastPresenceSent = null;
    this.presenceTimer = null;
    this.presenceDueAt = 0;

    this.state = State.CLOSED;
    this.socket = null;
    this.welcomed = false;
    this.attempt = 0;
    this.retryTimer = null;
    this.retryAt = null;
    this.online = true;
    this.lastError = null;

    this.listeners = new Map(); // event name -> Set of listeners (see on())
    this.limits = { ...DEFAULT_LIMITS }; // the server's, from welcome
    this.frameLimit = Infinity; // lowered after a 1009 close (a client bug)
    this.sentBytes = 0; // largest frame sent on the current socket

    this.onState = null;
    this.onPending = null;
    this.onText = null;
    this.onPresence = null;
    this.onRevision = null;
    this.onError = null;
    this.onWelcome = null;
    this.onCommit = null;

    if (opts.restore) this.restore(opts.restore);
  }

  /**
   * What would be lost if this client went away now: the revision and its
   * text, and the local operations not yet acknowledged, with their seq.
   * Null when everything is acknowledged. A new Client given it as
   * opts.restore (with the same client id, which this includes) resubmits
   * the operations under the same seq, so the server's dedupe still
   * applies every edit exactly once. Plain JSON. With {text: false} the
   * base text is left out (the caller keeps it some other way).
   */
  pendingSnapshot({ text = true } = {}) {
    if (this.rev === null || this.synchronized()) return null;
    return {
      v: 1,
      clientId: this.clientId,
      rev: this.rev,
      // The whole text: storage that keeps it elsewhere asks without it
      // ({text: false}), which costs nothing per key press.
      ...(text ? { base: this.baseDoc.toString() } : {}),
      reloadRev: this.reloadRev,
      nextSeq: this.nextSeq,
      inflight: { seq: this.inflight.seq, op: this.inflight.op, everSent: this.inflight.everSent, edits: this.inflight.edits },
      buffer: this.buffer,
      bufferEdits: this.bufferEdits,
    };
  }

  /** Takes over a pendingSnapshot(); throws (changing nothing) when it does not fit together. */
  restore(snap) {
    if (!snap || snap.v !== 1 || typeof snap.clientId !== 'string' || !snap.clientId) throw new Error('restore: not a pending snapshot');
    if (!Number.isInteger(snap.rev) || snap.rev < 0 || typeof snap.base !== 'string') throw new Error('restore: snapshot without rev and text');
    const inf = snap.inflight;
    if (!inf || !Number.isInteger(inf.seq) || inf.seq < 1 || !Number.isInteger(snap.nextSeq) || snap.nextSeq <= inf.seq) {
      throw new Error('restore: snapshot without a pending operation');
    }
    checkOp(inf.op);
    if (snap.buffer !== null && snap.buffer !== undefined) checkOp(snap.buffer);
    const base = Rope.from(snap.base);
    let text = base.apply(inf.op).rope;
    if (snap.buffer) text = text.apply(snap.buffer).rope;
    this.clientId = snap.clientId;
    this.rev = snap.rev;
    this.baseDoc = base;
    this.doc = text;
    this.reloadRev = Number.isInteger(snap.reloadRev) ? snap.reloadRev : null;
    this.nextSeq = snap.nextSeq;
    this.inflight = { seq: inf.seq, op: inf.op, sent: false, everSent: !!inf.everSent, edits: Number(inf.edits) || 1 };
    this.buffer = snap.buffer || null;
    this.bufferEdits = this.buffer ? Number(snap.bufferEdits) || 1 : 0;
  }

  // ---- public API --------------------------------------------------------

  /** The local text (the server's plus unacknowledged edits) as a string. */
  get text() {
    return this.doc.toString();
  }

  /** The server's text at this.rev as a string. */
  get base() {
    return this.baseDoc.toString();
  }

  /** Starts connecting. Safe to call once; later reconnects are automatic. */
  start() {
    if (this.state !== State.CLOSED) return;
    this.openSocket();
  }

  /** Stops for good: closes the socket and cancels retries. */
  close() {
    this.cancelRetry();
    if (this.presenceTimer !== null) this.clearTimeout(this.presenceTimer);
    this.presenceTimer = null;
    this.setState(State.CLOSED);
    const s = this.socket;
    this.detach();
    if (s) {
      try {
        s.close(1000, 'client closed');
      } catch {
        /* already closed */
      }
    }
  }

  /**
   * Reports whether the network is up (the browser's online/offline
   * events). Offline suspends reconnect attempts; back online retries at
   * once.
   */
  setOnline(online) {
    if (this.online === online) return;
    this.online = online;
    if (!online) {
      if (this.state === State.RECONNECTING) {
        this.cancelRetry();
        this.setState(State.OFFLINE);
      }
      return;
    }
    if (this.state === State.OFFLINE || this.state === State.RECONNECTING) {
      this.cancelRetry();
      this.attempt = 0;
      this.openSocket();
    }
  }

  /** Number of local operations made but not yet acknowledged (0, 1 or 2). */
  unsentCount() {
    return (this.inflight ? 1 : 0) + (this.buffer ? 1 : 0);
  }

  /** Number of local edits (submit calls) not yet acknowledged. */
  unsentEdits() {
    return (this.inflight ? this.inflight.edits : 0) + (this.buffer ? this.bufferEdits : 0);
  }

  /** Whether a text has been loaded, so that submit() is allowed. */
  loaded() {
    return this.rev !== null;
  }

  /** True when every local edit has been acknowledged by the server. */
  synchronized() {
    return this.inflight === null && this.buffer === null;
  }

  /**
   * Applies a local edit made on the current text and queues it for the
   * server. Throws (and changes nothing) when the operation is malformed,
   * inserts a character documents may not contain (U+0000; clean the text
   * with withoutForbidden first), does not fit the text, or no text has
   * been loaded yet (see loaded()); the caller's view is then out of step
   * and should reload client.text.
   */
  submit(op) {
    // Before the first welcome there is no text to edit; the editor keeps
    // the field read-only until then.
    if (this.rev === null) throw new Error('document not loaded yet');
    checkOp(op);
    // The server would refuse it with bad_op, and the whole pending edit
    // (everything composed with it) would be discarded: refuse it here,
    // before it touches the local state.
    for (const c of op) {
      if (typeof c === 'string' && forbiddenIndex(c) >= 0) {
        throw new Error('the operation inserts U+0000, which a document cannot contain');
      }
    }
    const norm = ot.normalize(op);
    const { rope: next, changes } = this.doc.apply(norm); // throws on a bad op: nothing changed yet
    if (isNoop(norm)) return;
    this.doc = next;
    if (this.inflight === null) {
      this.inflight = { seq: this.nextSeq++, op: norm, sent: false, everSent: false, edits: 1 };
    } else if (!this.inflight.everSent && this.buffer === null) {
      // Never left this client (made offline): one combined operation is
      // smaller and its seq is still free to reuse. (Not when the rest of
      // a split edit waits in the buffer: this edit comes after it.)
      this.inflight.op = ot.compose(this.inflight.op, norm);
      this.inflight.edits++;
    } else if (this.buffer === null) {
      this.buffer = norm;
      this.bufferEdits = 1;
    } else {
      this.buffer = ot.compose(this.buffer, norm);
      this.bufferEdits++;
    }
    this.placeOthers();
    this.emitText({ op: norm, changes, remote: false, user: null });
    if (this.others.size) this.emitPresence();
    this.flush();
    this.emit('pending');
  }

  /**
   * UTF-8 bytes a local insert may add to the document without the server
   * refusing it for size (Infinity when the server did not say). Editors
   * check this before taking a paste in, so nothing is typed that cannot
   * be kept.
   */
  roomForInsert() {
    const max = this.limits.maxDocBytes;
    if (!(max > 0)) return Infinity;
    return Math.max(0, max - this.doc.byteLength);
  }

  /** Sets the local selection (code points) and sends presence, throttled. */
  setCursor(anchor, head = anchor) {
    this.cursor = { anchor, head };
    this.schedulePresence();
  }

  // ---- connection --------------------------------------------------------

  openSocket() {
    this.cancelRetry();
    this.detach();
    this.welcomed = false;
    this.setState(State.CONNECTING);
    let s;
    try {
      s = this.connectFn(this.url);
    } catch (err) {
      this.scheduleReconnect({ code: 'connect_failed', message: String(err?.message || err) });
      return;
    }
    this.socket = s;
    this.sentBytes = 0;
    s.onopen = () => {
      if (this.socket !== s) return;
      const hello = { type: 'hello', v: 1, client: this.clientId };
      if (this.token) hello.token = this.token;
      if (this.rev !== null) hello.rev = this.rev;
      if (this.profile?.name) hello.name = String(this.profile.name);
      if (this.profile?.color) hello.color = String(this.profile.color);
      this.sendRaw(hello);
    };
    s.onmessage = (ev) => {
      if (this.socket !== s) return;
      this.handleFrame(ev.data);
    };
    s.onerror = () => {
      /* a close event always follows; handled there */
    };
    s.onclose = (ev) => {
      if (this.socket !== s) return;
      this.handleClose(ev?.code ?? 1006, ev?.reason ?? '');
    };
  }

  detach() {
    this.cancelRefresh();
    const s = this.socket;
    if (!s) return;
    s.onopen = s.onmessage = s.onerror = s.onclose = null;
    this.socket = null;
    this.welcomed = false;
    if (this.inflight) this.inflight.sent = false;
    this.lastPresenceSent = null;
  }

  handleClose(code, reason) {
    this.detach();
    if (this.state === State.CLOSED || this.state === State.FAILED) return;
    const known = CloseCodes[code];
    if (code === 4001 && this.refreshTokenFn && !this.authRetry) {
      // The token expired before a fresh one reached the server: get one
      // and reconnect with it, once; pending edits are resubmitted.
      this.authRetry = true;
      this.lastError = { code: known.code, message: reason || known.message };
      this.setState(State.RECONNECTING);
      Promise.resolve()
        .then(() => this.refreshTokenFn())
        .then(
          (token) => {
            if (this.state !== State.RECONNECTING || this.socket) return;
            this.token = token;
            this.openSocket();
          },
          (err) => {
            if (this.state !== State.RECONNECTING || this.socket) return;
            this.fail({ code: 'unauthorized', message: `could not refresh the token: ${err?.message || err}` });
          },
        );
      return;
    }
    if (known?.fatal) {
      this.fail({ code: known.code, message: reason || known.message });
      return;
    }
    if (code === 1009) {
      this.oversizeClose(reason);
      if (this.state === State.CLOSED || this.state === State.FAILED) return;
    }
    // Everyone else's presence is stale once we are disconnected.
    if (this.others.size) {
      this.others.clear();
      this.emitPresence();
    }
    this.scheduleReconnect(known ? { code: known.code, message: reason || known.message } : null);
  }

  /**
   * The server closed the connection because a frame was larger than it
   * reads (1009). Frames are cut to the welcome's limits, so this is a bug
   * (or limits the server did not announce): report it, send no frame that
   * large again, and cut the operation that did not fit into smaller ones
   * under the same seq (the server never read it). After a few tries the
   * operation is given up on, alone: the person's other edits stay.
   */
  oversizeClose(reason) {
    const sent = this.sentBytes;
    const limit = Math.max(MIN_FRAME_BYTES, Math.floor((sent || this.frameBudget()) / 2));
    this.frameLimit = Math.min(this.frameLimit, limit);
    console.error(`tandem: the server closed the connection with 1009 (message too big) after a ${sent}-byte frame; ` +
      `frames are now kept under ${this.frameLimit} bytes. This is a client bug or a server that does not announce its limits (${reason || 'no reason given'}).`);
    if (!this.inflight) return;
    this.inflight.oversize = (this.inflight.oversize || 0) + 1;
    this.inflight.resplit = true;
    if (this.inflight.oversize >= MAX_OVERSIZE_CLOSES) {
      this.refuseInflight({ code: 'too_large', message: 'the server refused this change as too large to receive', seq: this.inflight.seq });
    }
  }

  scheduleReconnect(error) {
    if (error) this.lastError = error;
    if (!this.online) {
      this.setState(State.OFFLINE);
      return;
    }
    const delay = backoffDelay(this.attempt, this.random);
    this.attempt++;
    this.retryAt = this.now() + delay;
    this.setState(State.RECONNECTING);
    this.retryTimer = this.setTimeout(() => {
      this.retryTimer = null;
      this.openSocket();
    }, delay);
  }

  cancelRetry() {
    if (this.retryTimer !== null) this.clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.retryAt = null;
  }

  /** Reconnect now (a "retry now" button, or after a protocol hiccup). */
  reconnectNow() {
    if (this.state === State.CLOSED || this.state === State.FAILED) return;
    const s = this.socket;
    this.detach();
    if (s) {
      try {
        s.close(1000, 'resync');
      } catch {
        /* ignore */
      }
    }
    this.openSocket();
  }

  fail(error) {
    this.cancelRetry();
    this.lastError = error;
    const s = this.socket;
    this.detach();
    if (s) {
      try {
        s.close(1000, 'giving up');
      } catch {
        /* ignore */
      }
    }
    this.setState(State.FAILED);
  }

  setState(state) {
    this.state = state;
    this.emit('state', {
      state,
      retryAt: state === State.RECONNECTING ? this.retryAt : null,
      attempt: this.attempt,
      error: this.lastError,
    });
  }

  sendRaw(msg) {
    if (!this.socket) return false;
    try {
      const frame = JSON.stringify(msg);
      this.socket.send(frame);
      // Only op frames get large; counting bytes of small ones is free.
      if (frame.length > 1024) this.sentBytes = Math.max(this.sentBytes, utf8Length(frame));
      return true;
    } catch {
      return false;
    }
  }

  // ---- incoming messages ------------------------------------------------

  handleFrame(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      this.protocolError('server sent a frame that is not JSON');
      return;
    }
    if (!msg || typeof msg !== 'object') {
      this.protocolError('server sent a frame that is not an object');
      return;
    }
    try {
      switch (msg.type) {
        case 'welcome':
          this.handleWelcome(msg);
          break;
        case 'ack':
          this.handleAck(msg);
          break;
        case 'op':
          this.handleRemote(msg);
          break;
        case 'presence':
          this.handlePresence(msg);
          break;
        case 'leave':
          this.handleLeave(msg);
          break;
        case 'error':
          this.handleError(msg);
          break;
        case 'auth':
          // The server took our fresh token; it tells when that one expires.
          this.scheduleRefresh(msg.authTtlMs);
          break;
        default:
        // Unknown types are ignored: the protocol may grow.
      }
    } catch (err) {
      // An operation that does not fit means our copy is out of step:
      // reconnecting resumes from the last good revision.
      this.protocolError(`could not process ${msg.type}: ${err?.message || err}`);
    }
  }

  protocolError(message) {
    this.lastError = { code: 'protocol', message };
    this.reconnectNow();
  }

  handleWelcome(msg) {
    if (!Number.isInteger(msg.rev) || msg.rev < 0) throw new Error('welcome without a valid rev');
    this.authRetry = false;
    this.scheduleRefresh(msg.authTtlMs);
    this.user = msg.user || null;
    this.conn = typeof msg.conn === 'string' ? msg.conn : null;
    this.perm = msg.perm === 'read' ? 'read' : 'write';
    this.limits = parseLimits(msg.limits);
    this.others.clear();
    if (typeof msg.text === 'string') {
      this.reload(msg.text, msg.rev);
    } else {
      const ops = Array.isArray(msg.ops) ? msg.ops : [];
      if (this.rev === null) throw new Error('welcome has neither text nor a base revision');
      for (const m of ops) {
        if (this.handleRemote(m) === false) return; // resynchronizing
      }
      if (this.rev !== msg.rev) {
        throw new Error(`welcome at rev ${msg.rev} but ops only reach ${this.rev}`);
      }
    }
    for (const p of Array.isArray(msg.presence) ? msg.presence : []) this.addPresence(p);
    this.welcomed = true;
    this.attempt = 0;
    this.lastError = null;
    this.setState(State.CONNECTED);
    this.emit('welcome', { user: this.user, rev: this.rev, perm: this.perm, conn: this.conn });
    this.emitPresence();
    this.flush();
    if (this.cursor) this.schedulePresence(true);
  }

  /**
   * Replaces the local copy with the server's full text at rev. Pending
   * local edits are rebased over the difference between the text at our
   * old revision (this.base) and the new text. If the in-flight operation
   * had already been sent, the server may have committed it before we lost
   * the ack; it is resubmitted with its seq and, should the ack show it was
   * already part of the text we just got, we resynchronize from scratch
   * (see ackInflight).
   */
  reload(text, rev) {
    if (this.rev === null || this.synchronized()) {
      this.doc = Rope.from(text);
      this.baseDoc = this.doc;
      this.rev = rev;
      this.inflight = null;
      this.buffer = null;
      this.emitText({ op: null, remote: true, user: null });
      this.emit('commit', { rev, op: null });
      this.emit('revision', rev);
      return;
    }
    let remote = diffOp(this.baseDoc.toString(), text);
    const inflight = ot.transform(this.inflight.op, remote, 'left');
    remote = ot.transform(remote, this.inflight.op, 'right');
    let buffer = null;
    if (this.buffer) buffer = ot.transform(this.buffer, remote, 'left');
    if (this.inflight.everSent) this.reloadRev = rev;
    this.inflight = { ...this.inflight, op: inflight, sent: false };
    this.buffer = buffer;
    this.baseDoc = Rope.from(text);
    this.rev = rev;
    this.doc = this.baseDoc.apply(inflight).rope;
    if (buffer) this.doc = this.doc.apply(buffer).rope;
    this.emitText({ op: null, remote: true, user: null });
    this.emit('commit', { rev, op: null });
    this.emit('revision', rev);
    this.emit('pending');
  }

  handleAck(msg) {
    if (!this.inflight || msg.seq !== this.inflight.seq) return; // a duplicate ack
    if (!this.ackInflight(msg.rev)) return;
    this.flush();
    if (this.synchronized() && this.cursor) this.schedulePresence();
  }

  ackInflight(rev) {
    if (!Number.isInteger(rev)) throw new Error('ack without rev');
    if (this.reloadRev !== null && rev <= this.reloadRev) {
      // Committed before the full text we reloaded, so that text already
      // holds it and our rebased copy is a duplicate. Start over from the
      // server's text; the buffer cannot be separated from it safely.
      this.reloadRev = null;
      this.dropPending({ code: 'resync', message: 'Edits made while disconnected could not be merged and were discarded.' });
      return false;
    }
    this.reloadRev = null;
    const committed = this.inflight.op;
    this.baseDoc = this.baseDoc.apply(committed).rope;
    // Our op is now committed after everything we have seen: others' carets
    // move through it in the server's order, as the server moves them.
    for (const [key, p] of this.others) {
      if (p.srv) this.others.set(key, { ...p, srv: transformSel(p.srv, this.inflight.op, false) });
    }
    this.rev = rev;
    this.inflight = null;
    if (this.buffer !== null) {
      this.inflight = { seq: this.nextSeq++, op: this.buffer, sent: false, everSent: false, edits: this.bufferEdits };
      this.buffer = null;
      this.bufferEdits = 0;
    }
    this.placeOthers();
    this.emit('commit', { rev, op: committed });
    this.emit('revision', rev);
    this.emit('pending');
    return true;
  }

  /** Forgets local edits the server will never take and reloads its text. */
  dropPending(error, notify = true) {
    this.inflight = null;
    this.buffer = null;
    this.rev = null;
    this.reloadRev = null;
    this.lastError = error;
    if (notify) this.emit('error', error);
    this.emit('pending');
    this.reconnectNow();
  }

  /**
   * The server will never take the in-flight operation (too large, not
   * valid): take it back out of the local text and keep every later edit,
   * transformed as if it had never been made. The next pending operation
   * goes out under a new seq.
   */
  refuseInflight(error) {
    const refused = this.inflight;
    if (!refused) return;
    let undo = invert(refused.op, this.baseDoc.toString());
    if (this.buffer) {
      const buffer = ot.transform(this.buffer, undo, 'left');
      undo = ot.transform(undo, this.buffer, 'right');
      this.buffer = buffer;
    }
    this.inflight = null;
    this.reloadRev = null;
    if (this.buffer !== null) {
      this.inflight = { seq: this.nextSeq++, op: this.buffer, sent: false, everSent: false, edits: this.bufferEdits };
      this.buffer = null;
      this.bufferEdits = 0;
    }
    if (this.cursor) this.cursor = transformSel(this.cursor, undo, false);
    const undone = this.doc.apply(undo);
    this.doc = undone.rope;
    this.placeOthers();
    this.lastError = error;
    this.emitText({ op: undo, changes: undone.changes, remote: true, user: null, refused: true });
    if (this.others.size) this.emitPresence();
    this.emit('pending');
    this.flush();
  }

  handleRemote(msg) {
    if (!Number.isInteger(msg.rev)) throw new Error('op without rev');
    // Our own operation seen in a welcome's catch-up list: its ack was
    // lost with the old connection. Ours only when the user matches too: a
    // client id is public, and another user may send under the same one.
    if (msg.client === this.clientId && msg.user === this.user?.id && this.inflight && msg.seq === this.inflight.seq) {
      return this.ackInflight(msg.rev);
    }
    if (msg.rev <= this.rev) return; // already have it
    if (msg.rev !== this.rev + 1) throw new Error(`gap: have rev ${this.rev}, got ${msg.rev}`);
    checkOp(msg.op);
    this.baseDoc = this.baseDoc.apply(msg.op).rope;
    let op = msg.op;
    if (this.inflight) {
      const pending = ot.transform(this.inflight.op, op, 'left');
      op = ot.transform(op, this.inflight.op, 'right');
      this.inflight.op = pending;
    }
    if (this.buffer) {
      const pending = ot.transform(this.buffer, op, 'left');
      op = ot.transform(op, this.buffer, 'right');
      this.buffer = pending;
    }
    const applied = this.doc.apply(op);
    this.doc = applied.rope;
    this.rev = msg.rev;
    if (this.cursor) this.cursor = transformSel(this.cursor, op, false);
    for (const [key, p] of this.others) {
      // The author's caret sits after their own insert. It moves through
      // the op as the server committed it (msg.op), so a concurrent insert
      // of ours at the same spot, which the server orders before theirs,
      // pushes it too once placeOthers shifts it past our pending edits.
      // Another tab of the same person is someone else: the rule is the
      // server's (ot.ownsCaret), user and client id together.
      if (p.srv) this.others.set(key, { ...p, srv: transformSel(p.srv, msg.op, ot.ownsCaret(p.user.id, p.client, msg.user, msg.client)) });
    }
    this.placeOthers();
    this.emitText({ op, changes: applied.changes, remote: true, user: msg.user ?? null });
    this.emit('commit', { rev: this.rev, op: msg.op });
    this.emit('revision', this.rev);
    if (this.others.size) this.emitPresence();
  }

  handlePresence(msg) {
    this.addPresence(msg);
    this.emitPresence();
  }

  addPresence(p) {
    const user = p && typeof p.user === 'object' && p.user ? p.user : null;
    if (!user || typeof user.id !== 'string') return;
    const key = typeof p.conn === 'string' && p.conn ? p.conn : user.id;
    if (this.conn ? key === this.conn : this.user && user.id === this.user.id) return; // ourselves
    let srv = validSel(p.cursor) ? p.cursor : null;
    if (srv) srv = clampSel(srv, this.baseDoc.cpLength);
    // client: the owner's client id (the runtime sends it), which with the
    // user decides whose operations move this caret as its owner's.
    const client = typeof p.client === 'string' ? p.client : '';
    const o = { user: { id: user.id, name: String(user.name || user.id), color: user.color || '' }, conn: key, client, srv, cursor: null };
    o.cursor = this.place(srv);
    this.others.set(key, o);
  }

  /**
   * The local position of a cursor kept on the server's text (srv, at
   * this.rev): shifted past our unacknowledged edits. Others' carets are
   * kept in server coordinates and moved only through committed ops in the
   * server's order, so they land where the server (and their owner) has
   * them even when we insert at the same spot concurrently.
   */
  place(srv) {
    let c = srv;
    if (c && this.inflight) c = transformSel(c, this.inflight.op, false);
    if (c && this.buffer) c = transformSel(c, this.buffer, false);
    return c ? clampSel(c, this.doc.cpLength) : null;
  }

  placeOthers() {
    for (const [key, p] of this.others) {
      if (p.srv) this.others.set(key, { ...p, cursor: this.place(p.srv) });
    }
  }

  handleLeave(msg) {
    const key = typeof msg.conn === 'string' && msg.conn ? msg.conn : msg.user;
    if (this.others.delete(key)) this.emitPresence();
  }

  handleError(msg) {
    const error = { code: String(msg.code || 'error'), message: String(msg.message || ''), seq: msg.seq };
    this.lastError = error;
    this.emit('error', error);
    if (FATAL_CODES.has(error.code) && !this.welcomed) {
      // Refused at hello. An expired token is worth one refresh: the close
      // (4001) that follows reconnects with a fresh one.
      if (error.code === 'unauthorized' && this.refreshTokenFn && !this.authRetry) return;
      this.fail(error);
      return;
    }
    if (FATAL_CODES.has(error.code) && msg.seq === undefined) {
      // On an open connection: a refused auth message (the current token
      // stays in force), or the token's expiry, which the close (4001)
      // that follows handles.
      return;
    }
    if (error.code === 'bad_revision' && msg.seq === undefined && !this.welcomed) {
      // The server does not know our revision (its history was reset):
      // nothing we hold can be rebased onto it. Start over from its text.
      this.dropPending(error, false);
      return;
    }
    if (msg.seq !== undefined && this.inflight && msg.seq === this.inflight.seq) {
      if (error.code === 'bad_revision') {
        // Not committed: its base fell outside what the server transforms
        // over. The server sent the operations we missed before this error
        // and each one has rebased the in-flight operation, so it goes again
        // at once on our current revision. Without progress since it was
        // sent, resynchronize: the welcome brings the missing operations
        // (or the text, onto which pending edits are rebased).
        this.inflight.sent = false;
        if (this.rev > this.inflight.rev) this.flush();
        else this.reconnectNow();
        return;
      }
      if (error.code === 'rate_limited' || error.code === 'unavailable') {
        // Not committed; send the same seq again after a pause. If it had
        // been committed after all, the server acknowledges it again.
        this.inflight.sent = false;
        this.setTimeout(() => this.flush(), BACKOFF_BASE_MS);
        return;
      }
      if (error.code === 'too_large' || error.code === 'bad_op') {
        // This operation will never be committed; the edits after it can.
        this.refuseInflight(error);
        return;
      }
      // The server refused the operation for a reason that holds for every
      // edit (read-only): drop local edits and take the server's text again.
      this.dropPending(error, false);
    }
  }

  // ---- token refresh ------------------------------------------------------

  /** Plans the next token refresh of this connection: ttlMs is what is left of its token. */
  scheduleRefresh(ttlMs) {
    this.cancelRefresh();
    if (!this.refreshTokenFn || !Number.isFinite(ttlMs) || ttlMs <= 0) return;
    this.authDeadline = this.now() + ttlMs;
    // A fifth of the token's life before it ends, at most a minute.
    this.armRefresh(ttlMs - Math.min(ttlMs / 5, 60000));
  }

  armRefresh(delay) {
    const s = this.socket;
    this.refreshTimer = this.setTimeout(() => {
      this.refreshTimer = null;
      if (this.socket === s) this.refreshNow(s);
    }, Math.max(0, delay));
  }

  cancelRefresh() {
    if (this.refreshTimer !== null) this.clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
  }

  refreshNow(s) {
    const retry = () => {
      // Again soon while the current token lasts; the server's auth reply
      // replaces this timer.
      const left = this.authDeadline === null ? 0 : this.authDeadline - this.now();
      this.armRefresh(Math.max(100, Math.min(left / 2, 5000)));
    };
    Promise.resolve()
      .then(() => this.refreshTokenFn())
      .then(
        (token) => {
          if (this.socket !== s) return;
          this.token = token;
          this.sendRaw({ type: 'auth', token });
          retry();
        },
        (err) => {
          if (this.socket !== s) return;
          this.lastError = { code: 'refresh', message: `could not refresh the token: ${err?.message || err}` };
          this.emit('error', this.lastError);
          retry();
        },
      );
  }

  // ---- outgoing ---------------------------------------------------------

  /** Sends the in-flight operation if the connection is ready for it. */
  flush() {
    if (!this.welcomed || !this.inflight || this.inflight.sent) return;
    this.fitInflight();
    const ok = this.sendRaw({ type: 'op', seq: this.inflight.seq, rev: this.rev, op: this.inflight.op });
    if (ok) {
      this.inflight.sent = true;
      this.inflight.everSent = true;
      this.inflight.rev = this.rev; // the base it was sent on
    }
  }

  /** Bytes one op frame may take: the server's message limit, or less after a 1009. */
  frameBudget() {
    return Math.min(this.limits.maxMessageBytes, this.frameLimit);
  }

  /**
   * Cuts the in-flight operation to the server's limits: the first part
   * stays in flight, the rest goes in front of the buffer and follows once
   * the first is acknowledged, so a 1 MB paste arrives as several
   * operations. An operation sent before is cut only when the server
   * refused it unread (1009): its fate is otherwise unknown, and it fit
   * the limits when it was sent.
   */
  fitInflight() {
    const inf = this.inflight;
    if (inf.everSent && !inf.resplit) return;
    inf.resplit = false;
    const parts = splitOp(inf.op, this.limits.maxOpBytes, this.frameBudget() - FRAME_OVERHEAD);
    if (!parts) return;
    const [first, rest] = parts;
    inf.op = first;
    this.buffer = this.buffer ? ot.compose(rest, this.buffer) : rest;
    // The edit is unsent until its last part is acknowledged.
    this.bufferEdits += inf.edits;
    inf.edits = 0;
  }

  schedulePresence(now = false) {
    if (!this.welcomed || !this.cursor) return;
    if (now) {
      this.sendPresence();
      return;
    }
    if (this.presenceTimer !== null) return;
    const t = this.now();
    const wait = Math.max(0, this.presenceDueAt - t);
    if (wait === 0) {
      this.sendPresence();
      return;
    }
    this.presenceTimer = this.setTimeout(() => {
      this.presenceTimer = null;
      this.sendPresence();
    }, wait);
  }

  sendPresence() {
    if (!this.welcomed || !this.cursor) return;
    // The cursor is sent with the revision its positions refer to, and the
    // server moves it through later operations. While our own edits are
    // unacknowledged the local positions fit no server revision, so the
    // update waits for the ack (see handleAck).
    if (!this.synchronized()) return;
    const c = this.cursor;
    if (this.lastPresenceSent && this.lastPresenceSent.anchor === c.anchor && this.lastPresenceSent.head === c.head) return;
    if (this.sendRaw({ type: 'presence', rev: this.rev, cursor: { anchor: c.anchor, head: c.head } })) {
      this.lastPresenceSent = { ...c };
      this.presenceDueAt = this.now() + this.presenceIntervalMs;
    }
  }

  /**
   * Tells listeners the text changed. ev.text is the whole new text,
   * built only when a listener reads it (a large document's string is a
   * copy); ev.doc is the new rope, and ev.changes (absent on a full
   * reload) the same edit in UTF-16 positions of the previous text.
   */
  emitText(ev) {
    const doc = this.doc;
    ev.doc = doc;
    Object.defineProperty(ev, 'text', { get: () => doc.toString(), enumerable: true });
    this.emit('text', ev);
  }

  emitPresence() {
    this.emit('presence', new Map(this.others));
  }

  /**
   * Calls the on<Name> property and every listener added with on(name).
   * A throwing listener is reported and does not stop the others or the
   * state machine.
   */
  emit(name, ev) {
    const prop = this['on' + name[0].toUpperCase() + name.slice(1)];
    const fns = this.listeners.get(name);
    for (const fn of fns ? [prop, ...fns] : [prop]) {
      if (typeof fn !== 'function') continue;
      try {
        fn.call(this, ev);
      } catch (err) {
        console.error(`tandem: ${name} listener failed`, err);
      }
    }
  }

  /**
   * Adds a listener for an event (state, text, presence, revision, error,
   * welcome, pending) besides the on<Name> property; returns a function
   * that removes it. Bindings use this so the page keeps the properties.
   */
  on(name, fn) {
    if (!this.listeners.has(name)) this.listeners.set(name, new Set());
    this.listeners.get(name).add(fn);
    return () => this.listeners.get(name)?.delete(fn);
  }
}

// ---- helpers --------------------------------------------------------------

/** Throws a descriptive error unless op is well formed (ot.validate may return or throw). */
function checkOp(op) {
  const r = ot.validate(op);
  if (r instanceof Error) throw r;
  if (typeof r === 'string' && r) throw new Error(r);
  if (r === false) throw new Error('invalid operation');
}

function isNoop(op) {
  return op.every((c) => typeof c === 'number');
}

function validSel(c) {
  return c && Number.isInteger(c.anchor) && Number.isInteger(c.head) && c.anchor >= 0 && c.head >= 0;
}

function clampSel(c, len) {
  return { anchor: Math.min(c.anchor, len), head: Math.min(c.head, len) };
}

/** The limits a welcome announces, each falling back to DEFAULT_LIMITS. */
export function parseLimits(l) {
  const out = { ...DEFAULT_LIMITS };
  if (!l || typeof l !== 'object') return out;
  for (const k of Object.keys(DEFAULT_LIMITS)) {
    if (Number.isSafeInteger(l[k]) && l[k] > 0) out[k] = l[k];
  }
  return out;
}

/** Bytes JSON.stringify spends on the UTF-16 unit(s) at s[i] once sent as UTF-8; [bytes, units]. */
function jsonCost(s, i) {
  const c = s.charCodeAt(i);
  if (c === 0x22 || c === 0x5c) return [2, 1];
  if (c < 0x20) return [c === 8 || c === 9 || c === 10 || c === 12 || c === 13 ? 2 : 6, 1];
  if (c < 0x80) return [1, 1];
  if (c < 0x800) return [2, 1];
  if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) return [4, 2];
  if (c >= 0xd800 && c <= 0xdfff) return [6, 1]; // a lone surrogate is escaped
  return [3, 1];
}

/**
 * Splits op so that its first part inserts at most maxInsert UTF-8 bytes
 * and takes at most maxJSON bytes as JSON. Returns null when op fits
 * as it is, else [first, rest] with compose(first, rest) equal to op. Text
 * is cut between code points; the first part always makes progress.
 */
export function splitOp(op, maxInsert, maxJSON) {
  let ins = 0; // UTF-8 bytes inserted by first
  let json = 2; // the brackets
  let out = 0; // code points of the result first has produced
  let inserted = false;
  const first = [];
  for (let k = 0; k < op.length; k++) {
    const c = op[k];
    if (typeof c !== 'string') {
      const cost = JSON.stringify(c).length + 1;
      if (json + cost > maxJSON && inserted) return [ot.normalize(first), ot.normalize([out, ...op.slice(k)])];
      first.push(c);
      json += cost;
      if (typeof c === 'number') out += c;
      continue;
    }
    // Walk the insert until a budget runs out.
    let i = 0;
    let cps = 0;
    let bytes = 0;
    let jbytes = 2; // its quotes
    while (i < c.length) {
      const [jb, units] = jsonCost(c, i);
      const u = c.charCodeAt(i);
      const ub = units === 2 ? 4 : u < 0x80 ? 1 : u < 0x800 ? 2 : 3;
      if (ins + bytes + ub > maxInsert || json + jbytes + jb + 1 > maxJSON) break;
      bytes += ub;
      jbytes += jb;
      i += units;
      cps++;
    }
    if (i === c.length) {
      first.push(c);
      ins += bytes;
      json += jbytes + 1;
      out += cps;
      inserted = true;
      continue;
    }
    if (i === 0 && !inserted) {
      i = jsonCost(c, 0)[1]; // at least one code point, or nothing ever goes
      cps = 1;
    }
    if (i > 0) {
      first.push(c.slice(0, i));
      out += cps;
    }
    return [ot.normalize(first), ot.normalize([out, c.slice(i), ...op.slice(k + 1)])];
  }
  return null;
}

/** The operation undoing op, which was made on text; it applies to op's result. */
export function invert(op, text) {
  const out = [];
  let i = 0; // UTF-16 offset in text
  for (const c of op) {
    if (typeof c === 'number') {
      out.push(c);
      i = ot.cpToUtf16Offset(text, i, c);
    } else if (typeof c === 'string') {
      out.push({ d: ot.cpLength(c) });
    } else {
      const j = ot.cpToUtf16Offset(text, i, c.d);
      out.push(text.slice(i, j));
      i = j;
    }
  }
  return ot.normalize(out);
}

/** Moves a selection {anchor, head} through an operation. */
export function transformSel(sel, op, own) {
  const [anchor, head] = ot.transformSelection(sel.anchor, sel.head, op, own);
  return { anchor, head };
}

/**
 * The smallest single-edit operation turning a into b (common prefix and
 * suffix, measured in code points so no surrogate pair is split).
 */
export function diffOp(a, b) {
  const ca = Array.from(a);
  const cb = Array.from(b);
  let pre = 0;
  const max = Math.min(ca.length, cb.length);
  while (pre < max && ca[pre] === cb[pre]) pre++;
  let suf = 0;
  while (suf < max - pre && ca[ca.length - 1 - suf] === cb[cb.length - 1 - suf]) suf++;
  const op = [];
  if (pre > 0) op.push(pre);
  const del = ca.length - pre - suf;
  if (del > 0) op.push({ d: del });
  const ins = cb.slice(pre, cb.length - suf).join('');
  if (ins) op.push(ins);
  if (suf > 0) op.push(suf);
  return op;
}
