// Unsent edits kept in the browser's storage, so that closing a tab or a
// crash loses nothing: the next time the document is opened in this
// browser the client takes over the saved edits under the same client id
// and seq numbers, and the server's dedupe applies each exactly once.
//
// Storage is localStorage (synchronous, so the last state is written even
// from pagehide), one entry per client: tandem.pending:{doc}:{clientId}.
// A tab that is still open owns its entry through a Web Lock named after
// its client id; another tab of the same document never takes it over.
// Where Web Locks are missing (plain http on a non-local host) an entry is
// taken over once its owner has not touched it for STALE_MS.

import { newClientId } from './client.js';

export const PENDING_PREFIX = 'tandem.pending:';
const STALE_MS = 15000;

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
  for (const f of found) {
    if (!f.snap || f.snap.clientId !== f.clientId) {
      storage.removeItem(f.key);
      continue;
    }
    if (!locks?.request && now() - (f.snap.savedAt ?? 0) < STALE_MS) continue;
    if (await holdLock(locks, f.clientId)) return { clientId: f.clientId, snapshot: f.snap };
  }
  return { clientId: await fresh(locks), snapshot: null };
}

async function fresh(locks) {
  const id = newClientId();
  await holdLock(locks, id);
  return id;
}

/**
 * Writes client's unsent edits to storage: at once when the connection is
 * lost with edits unsent, then within 300 ms of every change while
 * disconnected, and on pagehide (closing or reloading the tab); removes
 * the entry once everything is acknowledged. While connected, edits are
 * acknowledged within a round trip, so nothing is written per key press:
 * a snapshot holds the document's text, and writing a large text to
 * localStorage takes long enough to be felt while typing. Returns a
 * function that stops. onError(err) hears about writes the browser
 * refused (storage full).
 */
export function persistPending(client, docKey, { storage = globalThis.localStorage, target = globalThis, onError = null, now = Date.now } = {}) {
  const key = () => `${PENDING_PREFIX}${docKey}:${client.clientId}`;
  let timer = null;
  let written = false;
  const save = () => {
    if (timer !== null) clearTimeout(timer);
    timer = null;
    const snap = client.pendingSnapshot();
    try {
      if (snap) {
        storage.setItem(key(), JSON.stringify({ ...snap, savedAt: now() }));
        written = true;
      } else if (written || storage.getItem(key()) !== null) {
        storage.removeItem(key());
        written = false;
      }
    } catch (err) {
      onError?.(err);
    }
  };
  const off = client.on('pending', () => {
    if (timer !== null) return;
    if (client.state === 'connected') {
      // Only to remove an entry once its edits are acknowledged.
      if (written && client.synchronized()) timer = setTimeout(save, 300);
      return;
    }
    timer = setTimeout(save, 300);
  });
  const offState = client.on('state', (ev) => {
    // Losing the connection with edits unsent: write them down now.
    if (ev.state !== 'connected' && !client.synchronized()) save();
  });
  const onHide = () => save();
  target.addEventListener?.('pagehide', onHide);
  // A restored client already has pending edits: keep them written.
  if (!client.synchronized()) save();
  return () => {
    off();
    offState();
    target.removeEventListener?.('pagehide', onHide);
    if (timer !== null) clearTimeout(timer);
  };
}
