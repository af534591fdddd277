// The editor page (/d/{docId}): binds a textarea to a Client, draws the
// people in the document and their carets and selections, and keeps the
// connection state visible.
//
// The textarea is the single source of what the person typed: each input
// event is diffed against the previous value into an operation. Remote
// operations replace the value and put the local selection back where it
// belongs (moved through the operation), so typing is never disturbed.
//
// Remote carets use the mirror technique: a div behind the transparent
// textarea with the same font, width and wrapping holds the same text, with
// marker spans at the remote positions; their offsets are where the carets
// go, and highlighted spans there show remote selections.

import { Client, State } from './client.js';
import { editOp, utf16ToCp, cpToUtf16, cleanField } from './edit.js';
import * as ot from './ot.js';

const $ = (id) => document.getElementById(id);

const ui = {
  title: $('doc-title'),
  people: $('people'),
  status: $('status'),
  statusText: $('status-text'),
  statusLive: $('status-live'),
  revision: $('revision'),
  banner: $('banner'),
  bannerText: $('banner-text'),
  bannerClose: $('banner-close'),
  wrap: $('editor-wrap'),
  mirror: $('mirror'),
  text: $('text'),
  overlay: $('overlay'),
  mode: $('mode'),
  me: $('me'),
  rename: $('rename'),
};

/** Human text for error codes the server sends (docs/protocol.md). */
const ERROR_TEXT = {
  unauthorized: 'You are not signed in for this document: the access token is missing, invalid or expired. Open the link you were given again.',
  forbidden: 'Your access does not allow this. Ask the owner for a link with access to this document.',
  too_large: 'That change is too large for this document: it was not saved and the document was reloaded.',
  rate_limited: 'You are typing faster than the server accepts; your edits will be sent in a moment.',
  bad_op: 'An edit could not be applied and was discarded; the document was reloaded.',
  bad_revision: 'This copy was out of step and was reloaded.',
  unavailable: 'The server is temporarily unavailable; your edits are kept and will be sent.',
  doc_full: 'This document has too many people connected right now. Retrying…',
  resync: 'Edits made while disconnected could not be merged and were discarded.',
  nul_removed: 'Null characters (U+0000) cannot be part of a document and were removed from what you typed or pasted.',
};

function docIdFromPath() {
  const m = location.pathname.match(/^\/d\/([^/]+)$/);
  return m ? decodeURIComponent(m[1]) : '';
}

function tokenFromHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  return params.get('token') || '';
}

// The anonymous identity this browser shows (name and colour), kept in
// localStorage so a reload or a restart does not turn the person into
// someone new. The server honours it in anonymous mode only.
const PROFILE_KEY = 'tandem.profile';
const MAX_NAME = 40; // auth.MaxNameRunes

function loadProfile() {
  try {
    const p = JSON.parse(localStorage.getItem(PROFILE_KEY) || 'null');
    if (p && typeof p.name === 'string' && typeof p.color === 'string') return { name: p.name, color: p.color };
  } catch {
    /* storage unavailable or corrupt: a generated identity it is */
  }
  return null;
}

function saveProfile(p) {
  try {
    localStorage.setItem(PROFILE_KEY, JSON.stringify({ name: p.name, color: p.color }));
  } catch {
    /* storage unavailable: the identity lasts as long as the tab */
  }
}

function initials(name) {
  const parts = String(name).trim().split(/\s+/).filter(Boolean);
  const first = parts[0] ? Array.from(parts[0])[0] : '?';
  const second = parts.length > 1 ? Array.from(parts[parts.length - 1])[0] : '';
  return (first + second).toUpperCase();
}

class Editor {
  constructor(docId, token) {
    this.docId = docId;
    this.value = ''; // the textarea's value as of the last sync
    this.others = new Map();
    this.readOnly = true;
    this.state = State.CONNECTING;
    this.countdown = null;

    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    this.client = new Client({
      url: `${proto}//${location.host}/v1/docs/${encodeURIComponent(docId)}/ws`,
      connect: (url) => new WebSocket(url),
      token,
      profile: token ? null : loadProfile(),
    });
    this.anonymous = !token;
    this.client.onText = (ev) => this.onText(ev);
    this.client.onState = (ev) => this.onState(ev);
    this.client.onPresence = (others) => {
      this.others = others;
      this.renderPeople();
      this.renderRemote();
    };
    this.client.onRevision = (rev) => {
      ui.revision.textContent = `rev ${rev}`;
      this.renderStatus();
    };
    this.client.onWelcome = ({ user, perm }) => this.onWelcome(user, perm);
    this.client.onError = (err) => this.showError(err);

    ui.title.textContent = docId;
    document.title = `${docId} · Tandem`;
    this.bind();
  }

  start() {
    this.client.start();
    // Tests and the curious can look at the live state from the console.
    window.tandem = { client: this.client, editor: this };
  }

  bind() {
    const ta = ui.text;
    ta.addEventListener('input', () => this.onInput());
    // Selection changes have no event on the textarea itself in every
    // browser; selectionchange on the document covers keyboard and mouse.
    document.addEventListener('selectionchange', () => {
      if (document.activeElement === ta) this.sendCursor();
    });
    ta.addEventListener('select', () => this.sendCursor());
    ta.addEventListener('focus', () => this.sendCursor());
    ta.addEventListener('scroll', () => this.syncScroll());
    new ResizeObserver(() => this.layout()).observe(ta);
    window.addEventListener('online', () => this.client.setOnline(true));
    window.addEventListener('offline', () => this.client.setOnline(false));
    if (navigator.onLine === false) this.client.setOnline(false);
    ui.bannerClose.addEventListener('click', () => {
      ui.banner.hidden = true;
      ui.text.focus();
    });
    ui.rename.addEventListener('click', () => this.rename());
    ui.status.addEventListener('click', (e) => {
      if (e.target.closest('[data-action="retry"]')) {
        this.client.reconnectNow();
        // The button disappears with the state it belonged to; without
        // this, focus would fall to the page body.
        this.focusText();
      }
    });
    // Closing or reloading the tab while edits are unsent would lose them:
    // ask first. (Browsers show their own wording, not ours.)
    window.addEventListener('beforeunload', (e) => {
      if (this.client.unsentEdits() > 0) {
        e.preventDefault();
        e.returnValue = '';
      }
    });
  }

  // ---- text ---------------------------------------------------------------

  onInput() {
    const ta = ui.text;
    let next = ta.value;
    const clean = cleanField(next, ta.selectionStart, ta.selectionEnd);
    if (clean.removed > 0) {
      // A document cannot hold U+0000 (the server refuses it): take it out
      // of what was typed or pasted and say so, keeping the rest.
      ta.value = clean.value;
      ta.setSelectionRange(clean.start, clean.end, ta.selectionDirection);
      next = clean.value;
      this.showError({ code: 'nul_removed', message: '' });
    }
    const op = editOp(this.value, next, ta.selectionStart === ta.selectionEnd ? ta.selectionEnd : -1);
    if (!op) return;
    try {
      this.client.submit(op);
      this.value = next;
    } catch (err) {
      // Our view and the client disagree (should not happen): take the
      // client's text, which is what the server will converge to.
      console.error('tandem: local edit rejected', err);
      this.setValue(this.client.text, null);
    }
    this.sendCursor();
    this.renderRemote();
    this.renderStatus();
  }

  onText(ev) {
    if (!ev.remote) return; // our own edit: the textarea already shows it
    this.setValue(ev.text, ev.op);
    this.renderRemote();
  }

  /** Replaces the textarea's value, moving the local selection through op. */
  setValue(text, op) {
    const ta = ui.text;
    // Input events are dispatched synchronously after each edit, so the
    // field still holds this.value here; the client's text already includes
    // every local edit, so overwriting loses nothing.
    const old = this.value;
    const focused = document.activeElement === ta;
    const dir = ta.selectionDirection;
    let start = utf16ToCp(old, ta.selectionStart);
    let end = utf16ToCp(old, ta.selectionEnd);
    if (op) [start, end] = ot.transformSelection(start, end, op, false);
    const top = ta.scrollTop;
    ta.value = text;
    this.value = text;
    const len = ot.cpLength(text);
    ta.setSelectionRange(cpToUtf16(text, Math.min(start, len)), cpToUtf16(text, Math.min(end, len)), dir);
    ta.scrollTop = top;
    if (!focused && document.activeElement === ta) ta.blur();
  }

  sendCursor() {
    if (!this.client.loaded()) return;
    const ta = ui.text;
    const v = ta.value;
    let anchor = utf16ToCp(v, ta.selectionStart);
    let head = utf16ToCp(v, ta.selectionEnd);
    if (ta.selectionDirection === 'backward') [anchor, head] = [head, anchor];
    this.client.setCursor(anchor, head);
  }

  // ---- connection -----------------------------------------------------------

  onWelcome(user, perm) {
    this.everLoaded = true;
    this.readOnly = perm === 'read';
    ui.me.textContent = user ? `You are ${user.name}` : '';
    if (this.anonymous && user) {
      // Keep what the server settled on (it ignores an invalid name), so
      // the next visit looks the same.
      this.client.profile = { name: user.name, color: user.color };
      saveProfile(this.client.profile);
    }
    ui.rename.hidden = !(this.anonymous && user);
    ui.mode.textContent = this.readOnly ? 'Read only: you can follow along but not edit.' : '';
    ui.text.readOnly = this.readOnly;
    ui.text.disabled = false;
    ui.text.placeholder = this.readOnly ? 'This document is empty.' : 'Start typing…';
    ui.text.setAttribute('aria-readonly', String(this.readOnly));
    document.body.classList.toggle('read-only', this.readOnly);
    this.hideBanner(['doc_full', 'unavailable', 'rate_limited']);
    this.renderPeople();
    // Ready to write on open and after every reconnect, unless the person
    // is busy elsewhere on the page (a button, the banner, a dialog).
    const active = document.activeElement;
    if (!active || active === document.body || active === ui.text) this.focusText();
  }

  /** Asks for a new display name (anonymous mode) and reconnects with it. */
  rename() {
    const cur = this.client.profile?.name || this.client.user?.name || '';
    const answer = window.prompt(`Your name as others see it (up to ${MAX_NAME} characters):`, cur);
    this.focusText();
    if (answer === null) return;
    // The same rules as the server's: no control or format characters.
    const name = answer.replace(/[\p{Cc}\p{Cf}]/gu, '').trim();
    if (!name || Array.from(name).length > MAX_NAME || name === cur) return;
    this.client.profile = { name, color: this.client.profile?.color || this.client.user?.color || '' };
    saveProfile(this.client.profile);
    // The server reads the name at hello; unsent edits survive a reconnect.
    this.client.reconnectNow();
  }

  /** Puts the keyboard focus in the text, keeping its selection. */
  focusText() {
    if (document.activeElement !== ui.text) ui.text.focus({ preventScroll: true });
  }

  onState(ev) {
    this.state = ev.state;
    this.stateEv = ev;
    clearInterval(this.countdown);
    this.countdown = null;
    if (ev.state === State.RECONNECTING) {
      this.countdown = setInterval(() => this.renderStatus(), 250);
    }
    if (ev.state === State.FAILED) {
      ui.text.readOnly = true;
      this.showError(ev.error || { code: 'unauthorized', message: '' });
    }
    if (ev.state === State.CONNECTING && !this.client.loaded()) {
      // Nothing to edit until the server's text arrives. Read-only rather
      // than disabled after the first load, so the field keeps focus.
      if (this.everLoaded) ui.text.readOnly = true;
      else ui.text.disabled = true;
    }
    // Limits that closed the connection deserve an explanation; a restart
    // or a network drop is explained by the status alone.
    if (ev.error && ev.state === State.RECONNECTING && ['doc_full', 'rate_limited', 'too_large'].includes(ev.error.code)) {
      this.showError(ev.error);
    }
    this.renderStatus();
    if (ev.state !== State.CONNECTED) this.renderPeople();
  }

  renderStatus() {
    const s = this.state;
    const unsent = this.client.unsentEdits();
    let text;
    let action = '';
    switch (s) {
      case State.CONNECTED:
        text = 'Connected';
        break;
      case State.CONNECTING:
        text = this.client.loaded() ? 'Reconnecting…' : 'Connecting…';
        if (unsent) text += ` · ${unsent} unsent`;
        break;
      case State.RECONNECTING: {
        const secs = Math.max(0, Math.ceil(((this.stateEv?.retryAt ?? Date.now()) - Date.now()) / 1000));
        text = `Reconnecting in ${secs} s`;
        if (unsent) text += ` · ${unsent} unsent`;
        action = 'Retry now';
        break;
      }
      case State.OFFLINE:
        text = `Offline · ${unsent} unsent edit${unsent === 1 ? '' : 's'}`;
        break;
      case State.FAILED:
        text = 'Disconnected';
        break;
      default:
        text = 'Closed';
    }
    ui.status.dataset.state = s === State.CONNECTING && this.client.loaded() ? State.RECONNECTING : s;
    ui.status.dataset.unsent = String(unsent);
    ui.statusText.textContent = text;
    // Screen readers hear state changes, not every tick of the countdown.
    const spoken = { connected: 'Connected', connecting: 'Connecting', reconnecting: 'Connection lost, reconnecting', offline: 'Offline, edits are kept', failed: 'Disconnected' }[s] || '';
    if (ui.statusLive.textContent !== spoken) ui.statusLive.textContent = spoken;
    let btn = ui.status.querySelector('[data-action="retry"]');
    if (action && !btn) {
      btn = document.createElement('button');
      btn.type = 'button';
      btn.className = 'link retry';
      btn.dataset.action = 'retry';
      btn.textContent = action;
      ui.status.append(btn);
    } else if (!action && btn) {
      btn.remove();
    }
  }

  showError(err) {
    const text = ERROR_TEXT[err.code] || err.message || `Error: ${err.code}`;
    const detail = err.message && ERROR_TEXT[err.code] && !text.includes(err.message) ? ` (${err.message})` : '';
    ui.banner.dataset.code = err.code;
    ui.banner.dataset.kind = err.code === 'unauthorized' || err.code === 'forbidden' ? 'fatal' : 'warn';
    ui.bannerText.textContent = text + detail;
    ui.banner.hidden = false;
  }

  hideBanner(codes) {
    if (codes.includes(ui.banner.dataset.code)) ui.banner.hidden = true;
  }

  // ---- presence ---------------------------------------------------------

  renderPeople() {
    const list = ui.people;
    const items = [];
    const me = this.client.user;
    const connected = this.state === State.CONNECTED;
    if (me) items.push({ user: me, self: true });
    if (connected) {
      // One avatar per person even with several tabs open.
      const seen = new Set(me ? [me.id] : []);
      for (const p of this.others.values()) {
        if (seen.has(p.user.id)) continue;
        seen.add(p.user.id);
        items.push({ user: p.user, self: false });
      }
    }
    // A crowd would push the status off screen: show the first few and
    // say how many more there are.
    const MAX = 6;
    const hidden = items.length > MAX ? items.splice(MAX - 1) : [];
    const more = [];
    if (hidden.length) {
      const li = document.createElement('li');
      li.className = 'avatar more';
      li.textContent = `+${hidden.length}`;
      li.title = hidden.map((h) => h.user.name).join(', ');
      li.setAttribute('aria-label', `${hidden.length} more: ${li.title}`);
      more.push(li);
    }
    list.replaceChildren(
      ...items.map(({ user, self }) => {
        const li = document.createElement('li');
        li.className = self ? 'avatar self' : 'avatar';
        li.dataset.user = user.id;
        li.style.setProperty('--c', user.color || '#64748b');
        li.textContent = initials(user.name);
        li.title = self ? `${user.name} (you)` : user.name;
        li.setAttribute('aria-label', li.title);
        return li;
      }),
      ...more,
    );
  }

  /** Draws remote selections in the mirror and remote carets in the overlay. */
  renderRemote() {
    const others = [...this.others.values()].filter((p) => p.cursor);
    if (others.length === 0) {
      // Nobody to draw: skip copying the whole text into the mirror.
      if (ui.mirror.firstChild) ui.mirror.replaceChildren();
      if (ui.overlay.firstChild) ui.overlay.replaceChildren();
      return;
    }
    const text = ui.text.value;
    const len = ot.cpLength(text);
    // Boundaries of every remote selection and caret, in UTF-16 offsets.
    const marks = others.map((p) => {
      const a = Math.min(p.cursor.anchor, len);
      const h = Math.min(p.cursor.head, len);
      return {
        p,
        from: cpToUtf16(text, Math.min(a, h)),
        to: cpToUtf16(text, Math.max(a, h)),
        caret: cpToUtf16(text, h),
      };
    });
    const cuts = new Set([0, text.length]);
    for (const m of marks) {
      cuts.add(m.from);
      cuts.add(m.to);
      cuts.add(m.caret);
    }
    const points = [...cuts].sort((x, y) => x - y);
    const frag = document.createDocumentFragment();
    const caretEls = new Map();
    for (let i = 0; i < points.length; i++) {
      const at = points[i];
      for (const m of marks) {
        if (m.caret === at) {
          const s = document.createElement('span');
          s.className = 'caret-anchor';
          frag.append(s);
          caretEls.set(m, s);
        }
      }
      if (i + 1 < points.length) {
        const seg = text.slice(at, points[i + 1]);
        const cover = marks.find((m) => m.from <= at && points[i + 1] <= m.to && m.from !== m.to);
        if (cover) {
          const mk = document.createElement('mark');
          mk.style.setProperty('--c', cover.p.user.color || '#64748b');
          mk.textContent = seg;
          frag.append(mk);
        } else {
          frag.append(seg);
        }
      }
    }
    // A trailing newline needs something after it to take up a line.
    frag.append('\u200b');
    ui.mirror.replaceChildren(frag);
    this.layout(false);

    const carets = [];
    for (const m of marks) {
      const anchor = caretEls.get(m);
      const el = document.createElement('div');
      el.className = 'remote-caret';
      el.dataset.user = m.p.user.id;
      el.style.setProperty('--c', m.p.user.color || '#64748b');
      el.style.setProperty('--x', `${anchor.offsetLeft}px`);
      el.style.setProperty('--y', `${anchor.offsetTop}px`);
      el.style.setProperty('--h', `${anchor.offsetHeight || 24}px`);
      const flag = document.createElement('span');
      flag.className = 'flag';
      flag.textContent = m.p.user.name;
      el.append(flag);
      carets.push(el);
    }
    ui.overlay.replaceChildren(...carets);
    this.syncScroll();
  }

  /** Makes the mirror and overlay match the textarea's box exactly. */
  layout(rerender = true) {
    const ta = ui.text;
    for (const el of [ui.mirror, ui.overlay]) {
      el.style.setProperty('--w', `${ta.clientWidth}px`);
      el.style.setProperty('--hgt', `${ta.clientHeight}px`);
      el.style.setProperty('--l', `${ta.offsetLeft + ta.clientLeft}px`);
      el.style.setProperty('--t', `${ta.offsetTop + ta.clientTop}px`);
    }
    if (rerender && this.others.size) this.renderRemote();
  }

  syncScroll() {
    const ta = ui.text;
    ui.mirror.scrollTop = ta.scrollTop;
    ui.mirror.scrollLeft = ta.scrollLeft;
    ui.overlay.style.setProperty('--sy', `${-ta.scrollTop}px`);
    ui.overlay.style.setProperty('--sx', `${-ta.scrollLeft}px`);
  }
}

const docId = docIdFromPath();
if (!docId) {
  location.replace('/');
} else {
  new Editor(docId, tokenFromHash()).start();
}
