// Unsent edits kept in the browser's storage, so that closing a tab or a
// crash loses nothing: the next time the document is opened in this
// browser the client takes over the saved edits under the same client id
// and seq numbers, and the server's dedupe applies each exactly once.
//
// Storage is localStorage (synchronous: what was written before a crash is
// there), two entries per client:
//   tandem.base:{doc}:{clientId}     the server's text at some revision
//                                    {rev, text}, written rarely (in idle
//                                    time after the text arrives, and when
//                                    the log below grows long)
//   tandem.pending:{doc}:{clientId}  the unsent edits and every committed
//                                    operation since that revision (the
//                                    log), small, written after every change
//                                    (once the next frame is painted), so a
//                                    tab killed while connected loses
//                                    nothing it had typed
// Together they give the server's text at the revision the unsent edits
// apply to, without writing the whole text on a key press.
// A tab that is still open owns its entries through a Web Lock named after
// its client id; another tab of the same document never takes them over.
// Where Web Locks are missing (plain http on a non-local host) an entry is
// taken over once its owner has not touched it for STALE_MS.

import { newClientId } from './client.js';
import { Rope } from './rope.js';

export const PENDING_PREFIX = 'tandem.pending:';
export const BASE_PREFIX = 'tandem.base:';
const STALE_MS = 15000;
// The log is folded into a new base once it holds this many operations or
// inserts this many UTF-16 units (a large paste): it is written on every
// change, so it must stay small.
const LOG_MAX = 400;
const LOG_MAX_UNITS = 16 << 10;

function lockName(clientId) {
  return `tandem.client:${clientId}`;
}

/**
 * Holds the Web Lock of clientId for the life of the page. Resolves true
 * when this page now holds it, false when someone else does. Without Web
 * Locks resolves true (the entry's age decides instead).
 */
function holdLock(locks, clientId) {
  if (!locks?.request) return Promise.resolve(true);
  return new Promise((resolve) => {
    locks
      .request(lockName(clientId), { ifAvailable: true }, (lock) => {
        if (!lock) {
          resolve(false);
          return undefined;
        }
        resolve(true);
        return new Promise(() => {}); // released when the page goes away
      })
      .catch(() => resolve(false));
  });
}

/**
 * Finds unsent edits a closed tab left for docKey (any string naming the
 * document, e.g. its WebSocket URL) and claims them for this page.
 * Resolves {clientId, snapshot}: pass both to new Client({clientId,
 * restore: snapshot}); snapshot is null when there was nothing to take
 * over (clientId is then a fresh one, already locked for this page).
 */
export async function claimPending(docKey, { storage = globalThis.localStorage, locks = globalThis.navigator?.locks, now = Date.now } = {}) {
  const prefix = `${PENDING_PREFIX}${docKey}:`;
  const found = [];
  try {
    for (let i = 0; i < storage.length; i++) {
      const k = storage.key(i);
      if (!k || !k.startsWith(prefix)) continue;
      let snap = null;
      try {
        snap = JSON.parse(storage.getItem(k));
      } catch {
        /* corrupt: skipped below */
      }
      found.push({ key: k, clientId: k.slice(prefix.length), snap });
    }
  } catch {
    return { clientId: await fresh(locks), snapshot: null }; // storage unavailable
  }
  found.sort((a, b) => (a.snap?.savedAt ?? 0) - (b.snap?.savedAt ?? 0));
  const basePrefix = `${BASE_PREFIX}${docKey}:`;
  for (const f of found) {
    if (!f.snap || f.snap.clientId !== f.clientId) {
      storage.removeItem(f.key);
      storage.removeItem(basePrefix + f.clientId);
      continue;
    }
    if (!locks?.request && now() - (f.snap.savedAt ?? 0) < STALE_MS) continue;
    if (await holdLock(locks, f.clientId)) {
      let snapshot = f.snap;
      if (snapshot.v === 2) {
        try {
          snapshot = withBase(snapshot, JSON.parse(storage.getItem(basePrefix + f.clientId)));
        } catch (err) {
          console.error('tandem: saved edits could not be put back together', err);
          storage.removeItem(f.key);
          storage.removeItem(basePrefix + f.clientId);
          continue;
        }
      }
      return { clientId: f.clientId, snapshot };
    }
  }
  await dropOrphanBases(storage, locks, basePrefix, new Set(found.map((f) => f.clientId)));
  return { clientId: await fresh(locks), snapshot: null };
}

/**
 * The restorable snapshot (Client.restore's, with the whole base text) of a
 * stored one: the base text at its revision, moved to the snapshot's
 * revision by the logged operations after it. Throws when they do not fit.
 */
export function withBase(snap, base) {
  if (!base || typeof base.text !== 'string' || !Number.isInteger(base.rev)) throw new Error('no saved text for the saved edits');
  if (base.rev < snap.baseRev || base.rev > snap.rev) throw new Error(`saved text at rev ${base.rev}, edits need ${snap.baseRev}..${snap.rev}`);
  let doc = Rope.from(base.text);
  let rev = base.rev;
  for (const e of snap.log || []) {
    if (e.rev <= rev) continue;
    if (e.rev !== rev + 1) throw new Error(`saved log skips from rev ${rev} to ${e.rev}`);
    doc = doc.apply(e.op).rope;
    rev = e.rev;
  }
  if (rev !== snap.rev) throw new Error(`saved log reaches rev ${rev}, edits are at ${snap.rev}`);
  const { log: _log, baseRev: _baseRev, ...rest } = snap;
  return { ...rest, v: 1, base: doc.toString() };
}

/** Removes saved texts no open tab owns and no saved edits need (left by a crash while synchronized). */
async function dropOrphanBases(storage, locks, prefix, keep) {
  const orphans = [];
  try {
    for (let i = 0; i < storage.length; i++) {
      const k = storage.key(i);
      if (k && k.startsWith(prefix) && !keep.has(k.slice(prefix.length))) orphans.push(k);
    }
  } catch {
    return;
  }
  for (const k of orphans) {
    if (!locks?.request) {
      let savedAt = 0;
      try {
        savedAt = JSON.parse(storage.getItem(k))?.savedAt ?? 0;
      } catch {
        /* corrupt: removed */
      }
      if (now() - savedAt < STALE_MS) continue;
      storage.removeItem(k);
      continue;
    }
    const free = await locks
      .request(lockName(k.slice(prefix.length)), { ifAvailable: true }, (lock) => !!lock)
      .catch(() => false);
    if (free) storage.removeItem(k);
  }
  function now() {
    return Date.now();
  }
}

async function fresh(locks) {
  const id = newClientId();
  await holdLock(locks, id);
  return id;
}

/**
 * Keeps client's unsent edits in storage for as long as there are any,
 * connected or not, so that neither closing the tab nor a crash loses
 * them: the server's text once (the base, in idle time after it arrives),
 * then after every change (once the next frame is painted) a small entry
 * with the unsent operations and the operations committed since the base.
 * Removes both when the page goes away with everything acknowledged.
 * Returns a function that stops. onError(err) hears about writes the browser
 * refused (storage full). Options idle(f) and cancelIdle(h) schedule the
 * base writes (default requestIdleCallback, else a timer).
 */
export function persistPending(client, docKey, { storage = globalThis.localStorage, target = globalThis, onError = null, now = Date.now, idle = defaultIdle, cancelIdle = defaultCancelIdle } = {}) {
  const pendingKey = () => `${PENDING_PREFIX}${docKey}:${client.clientId}`;
  const baseKey = () => `${BASE_PREFIX}${docKey}:${client.clientId}`;
  let baseRev = null; // revision of the stored base; null: none that the log reaches
  let log = []; // [{rev, op}] committed after baseRev, in order
  let logUnits = 0; // UTF-16 units the log's operations insert
  let written = false; // a pending entry is in storage
  let queued = false;
  let idleHandle = null;

  const fail = (err) => onError?.(err);

  /**
   * Writes the server's text at client.rev as the base; the log starts
   * over. A refused write is reported only when edits wait for it
   * (report): ahead of time, a text too large for the storage is not yet
   * anyone's problem.
   */
  const writeBase = (report = false) => {
    if (idleHandle !== null) cancelIdle(idleHandle);
    idleHandle = null;
    if (client.rev === null) return false;
    try {
      storage.setItem(baseKey(), JSON.stringify({ rev: client.rev, text: client.baseDoc.toString(), savedAt: now() }));
    } catch (err) {
      if (report) fail(err);
      else console.warn('tandem: the text could not be kept for unsent edits', err);
      return false;
    }
    // The pending entry written before still names the old base; the
    // claim takes the log from whichever base it finds (see withBase).
    baseRev = client.rev;
    log = [];
    logUnits = 0;
    return true;
  };

  const wantBase = () => {
    if (idleHandle !== null || client.perm === 'read') return;
    idleHandle = idle(() => {
      idleHandle = null;
      if (client.rev !== null && (baseRev === null || log.length > 0)) {
        writeBase();
        save();
      }
    });
  };

  const save = () => {
    queued = false;
    const snap = client.pendingSnapshot({ text: false });
    try {
      if (snap) {
        if (baseRev === null && !writeBase(true)) return;
        storage.setItem(pendingKey(), JSON.stringify({ ...snap, v: 2, baseRev, log, savedAt: now() }));
        written = true;
      } else if (written || storage.getItem(pendingKey()) !== null) {
        storage.removeItem(pendingKey());
        written = false;
      }
    } catch (err) {
      fail(err);
    }
  };

  // Everything that changes a snapshot is written right after the next
  // frame is painted (the events of one change coalesced into one write),
  // so that the write never delays showing the key press; the window a
  // crash can fall into is a frame long.
  const soon = () => {
    if (queued) return;
    queued = true;
    afterPaint(save);
  };

  const offCommit = client.on('commit', ({ rev, op }) => {
    if (op === null) {
      // The text was replaced whole: the log cannot reach it.
      baseRev = null;
      log = [];
      logUnits = 0;
      if (!client.synchronized()) writeBase(true);
      wantBase();
      return;
    }
    if (baseRev === null) {
      wantBase();
      return;
    }
    log.push({ rev, op });
    for (const c of op) if (typeof c === 'string') logUnits += c.length;
    if (log.length >= LOG_MAX || logUnits >= LOG_MAX_UNITS) wantBase();
  });
  const offPending = client.on('pending', soon);
  const offState = client.on('state', soon);
  const onHide = () => {
    save();
    // Nothing unsent: the text need not stay behind this page.
    if (client.synchronized()) {
      try {
        storage.removeItem(baseKey());
      } catch {
        /* storage unavailable */
      }
      baseRev = null;
      log = [];
      logUnits = 0;
    }
  };
  target.addEventListener?.('pagehide', onHide);
  const onShow = (ev) => {
    // Back from the back/forward cache: the base was removed on pagehide.
    if (ev?.persisted) wantBase();
  };
  target.addEventListener?.('pageshow', onShow);
  // A restored client already has pending edits and the text they apply to.
  if (client.rev !== null) {
    writeBase(true);
    save();
  } else wantBase();
  return () => {
    offCommit();
    offPending();
    offState();
    target.removeEventListener?.('pagehide', onHide);
    target.removeEventListener?.('pageshow', onShow);
    if (idleHandle !== null) cancelIdle(idleHandle);
  };
}

/** Runs f after the next frame is painted (at once-ish where nothing paints). */
function afterPaint(f) {
  if (typeof globalThis.requestAnimationFrame === 'function' && globalThis.document?.visibilityState !== 'hidden') {
    globalThis.requestAnimationFrame(() => setTimeout(f, 0));
  } else setTimeout(f, 0);
}

function defaultIdle(f) {
  if (typeof globalThis.requestIdleCallback === 'function') return { idle: globalThis.requestIdleCallback(f, { timeout: 2000 }) };
  return { timer: setTimeout(f, 500) };
}

function defaultCancelIdle(h) {
  if (h.idle !== undefined) globalThis.cancelIdleCallback(h.idle);
  else clearTimeout(h.timer);
}
