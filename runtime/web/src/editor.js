// The editor page (/d/{docId}): a CodeMirror editor bound to a Client by
// the @tandem/client package (this page is its first user), the people in
// the document, and the connection state.
//
// The package does the work: the protocol, the binding between the editor
// and the client (remote edits outside the undo history, remote carets and
// selections as decorations), and unsent edits kept in localStorage across
// reloads. This file is the page around it: status, banners, people,
// identity.

import { Client, State, claimPending, persistPending } from '@tandem/client';
import { tandem, remoteCarets } from '@tandem/client/codemirror';
import { EditorState } from '@codemirror/state';
import { EditorView, keymap, highlightSpecialChars, placeholder } from '@codemirror/view';
import { history, historyKeymap, defaultKeymap, indentWithTab } from '@codemirror/commands';

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
  host: $('text'),
  mode: $('mode'),
  me: $('me'),
  rename: $('rename'),
};

/** Human text for error codes the server sends (docs/protocol.md). */
const ERROR_TEXT = {
  unauthorized: 'You are not signed in for this document: the access token is missing, invalid or expired. Open the link you were given again.',
  forbidden: 'Your access does not allow this. Ask the owner for a link with access to this document.',
  too_large: 'That change is too large for this document, so it was not saved. Everything else you typed is kept.',
  rate_limited: 'You are typing faster than the server accepts; your edits will be sent in a moment.',
  bad_op: 'An edit could not be applied and was taken back. Everything else you typed is kept.',
  bad_revision: 'This copy was out of step and was reloaded.',
  unavailable: 'The server is temporarily unavailable; your edits are kept and will be sent.',
  doc_full: 'This document has too many people connected right now. Retrying…',
  resync: 'Edits made while disconnected could not be merged and were discarded.',
  nul_removed: 'Null characters (U+0000) cannot be part of a document and were removed from what you typed or pasted.',
  storage: 'Unsent edits could not be kept in this browser (its storage is full); keep this tab open until they are sent.',
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
  constructor(docId, token, claimed) {
    this.docId = docId;
    this.others = new Map();
    this.readOnly = true;
    this.state = State.CONNECTING;
    this.countdown = null;
    this.anonymous = !token;

    let restore = claimed.snapshot;
    this.client = null;
    const opts = {
      url: wsURL(docId),
      connect: (url) => new WebSocket(url),
      token,
      clientId: claimed.clientId,
      profile: token ? null : loadProfile(),
    };
    try {
      this.client = new Client({ ...opts, restore });
    } catch (err) {
      // A saved state that does not fit together cannot be resubmitted.
      console.error('tandem: saved edits could not be restored', err);
      restore = null;
      this.client = new Client(opts);
    }
    this.restored = !!restore;
    this.client.onState = (ev) => this.onState(ev);
    this.client.onPresence = (others) => {
      this.others = others;
      this.renderPeople();
    };
    // Every key press changes the unsent count (and its ack the revision):
    // shown once the key press is painted, not on its way to the screen.
    this.client.onRevision = () => this.renderSoon();
    this.client.onPending = () => this.renderSoon();
    this.client.onWelcome = ({ user, perm }) => this.onWelcome(user, perm);
    this.client.onError = (err) => this.showError(err);
    persistPending(this.client, docKey(docId), { onError: () => this.showError({ code: 'storage', message: '' }) });

    this.view = new EditorView({
      parent: ui.host,
      state: EditorState.create({
        doc: this.client.text,
        extensions: [
          // The page's CSP allows CodeMirror's <style> element by this nonce.
          EditorView.cspNonce.of(document.querySelector('meta[name="tandem-style-nonce"]')?.content || ''),
          history(),
          // No drawSelection(): the browser's own caret and selection. The
          // drawn cursor restarts its blink animation on every key press,
          // which cost an extra task with a forced style and layout
          // recalculation between the key press and its frame, and its
          // layers another layout pass in the frame (about 2 ms a key press
          // on the test machine; hack/bench-notes.md, "Editor input to
          // paint"). One selection range is all this editor uses.
          highlightSpecialChars(),
          EditorView.lineWrapping,
          placeholder('Start typing…'),
          keymap.of([...defaultKeymap, ...historyKeymap, indentWithTab]),
          // Focusable also when read-only, so a reader can move and select with
          // the keyboard (and copy).
          EditorView.contentAttributes.of({ 'aria-label': 'Document text', spellcheck: 'false', autocapitalize: 'off', autocorrect: 'off', tabindex: '0' }),
          tandem(this.client, {
            onRefused: ({ bytes, room }) =>
              this.showError({ code: 'too_large', message: `${formatBytes(bytes)} does not fit: the document has room for ${formatBytes(room)} more`, local: true }),
            onCleaned: ({ nul }) => {
              if (nul > 0) this.showError({ code: 'nul_removed', message: '' });
            },
          }),
        ],
      }),
    });

    ui.title.textContent = docId;
    document.title = `${docId} · Tandem`;
    this.bind();
  }

  start() {
    this.client.start();
    const view = this.view;
    // Tests and the curious can look at the live state from the console.
    window.tandem = {
      client: this.client,
      editor: this,
      view,
      text: () => view.state.doc.toString(),
      selection: () => ({ anchor: view.state.selection.main.anchor, head: view.state.selection.main.head }),
      ready: () => this.client.loaded() && !view.state.readOnly,
      remoteCarets: () => remoteCarets(view.state),
    };
    if (this.restored) this.renderStatus();
  }

  bind() {
    window.addEventListener('online', () => this.client.setOnline(true));
    window.addEventListener('offline', () => this.client.setOnline(false));
    if (navigator.onLine === false) this.client.setOnline(false);
    ui.bannerClose.addEventListener('click', () => {
      ui.banner.hidden = true;
      this.focusText();
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
    // Unsent edits are also kept in localStorage, but a person closing the
    // tab should still know they have not reached anyone yet.
    window.addEventListener('beforeunload', (e) => {
      if (this.client.unsentEdits() > 0) {
        e.preventDefault();
        e.returnValue = '';
      }
    });
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
    document.body.classList.toggle('read-only', this.readOnly);
    document.body.classList.add('loaded');
    this.hideBanner(['doc_full', 'unavailable', 'rate_limited']);
    this.renderPeople();
    // Ready to write on open and after every reconnect, unless the person
    // is busy elsewhere on the page (a button, the banner, a dialog).
    const active = document.activeElement;
    if (!active || active === document.body || this.view.dom.contains(active)) this.focusText();
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
    if (document.activeElement !== this.view.contentDOM) this.view.focus();
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
      this.showError(ev.error || { code: 'unauthorized', message: '' });
    }
    // Limits that closed the connection deserve an explanation; a restart
    // or a network drop is explained by the status alone. (A frame too
    // large for the server, 1009, is the client's problem: it sends the
    // edit in smaller pieces and says so on the console.)
    if (ev.error && ev.state === State.RECONNECTING && ['doc_full', 'rate_limited'].includes(ev.error.code)) {
      this.showError(ev.error);
    }
    this.renderStatus();
    if (ev.state !== State.CONNECTED) this.renderPeople();
  }

  /**
   * Renders the status and revision right after the next frame is painted
   * (at once-ish in a hidden tab), the events of a key press and its ack
   * coalesced into one render.
   */
  renderSoon() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    const render = () => {
      this.renderQueued = false;
      this.renderStatus();
    };
    if (document.visibilityState === 'hidden') setTimeout(render, 0);
    else requestAnimationFrame(() => setTimeout(render, 0));
  }

  renderStatus() {
    const rev = this.client.rev;
    setText(ui.revision, `rev ${rev === null ? '–' : rev}`);
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
    // Only what changed is written: a write, even of the same value, makes
    // the browser recompute style and layout for the next frame.
    setData(ui.status, 'state', s === State.CONNECTING && this.client.loaded() ? State.RECONNECTING : s);
    setData(ui.status, 'unsent', String(unsent));
    setText(ui.statusText, text);
    // Screen readers hear state changes, not every tick of the countdown.
    const spoken = { connected: 'Connected', connecting: 'Connecting', reconnecting: 'Connection lost, reconnecting', offline: 'Offline, edits are kept', failed: 'Disconnected' }[s] || '';
    setText(ui.statusLive, spoken);
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
    // Presence comes with every move of anyone's caret, and with every key
    // press while someone else is in the document (the edit moves their
    // caret): rebuilding the same list each time cost the key press script
    // time and its frame a style and layout pass of the top bar.
    const key = JSON.stringify([items.map(({ user, self }) => [user.id, user.name, user.color, self]), hidden.map((h) => h.user.name)]);
    if (key === this.peopleKey) return;
    this.peopleKey = key;
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
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function setData(el, key, value) {
  if (el.dataset[key] !== value) el.dataset[key] = value;
}

/** The WebSocket URL of a document on this server. */
function wsURL(docId) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}/v1/docs/${encodeURIComponent(docId)}/ws`;
}

/** What names a document's saved edits in this browser's storage. */
function docKey(docId) {
  return `${location.host}/${docId}`;
}

function formatBytes(n) {
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MB`;
  if (n >= 1 << 10) return `${Math.round(n / (1 << 10))} KB`;
  return `${n} bytes`;
}

const docId = docIdFromPath();
if (!docId) {
  location.replace('/');
} else {
  // Take over edits a closed tab of this document left unsent (same
  // client id and seq, so the server applies each once), then start.
  claimPending(docKey(docId)).then((claimed) => new Editor(docId, tokenFromHash(), claimed).start());
}
