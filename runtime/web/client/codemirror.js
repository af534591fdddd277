// CodeMirror 6 binding for the Tandem client: keeps an EditorView and a
// Client showing the same text, sends the person's edits and selection,
// applies everyone else's edits, and draws their carets and selections.
//
//   import { Client } from '@tandem/client';
//   import { tandem } from '@tandem/client/codemirror';
//   new EditorView({ parent, extensions: [history(), keymap.of(historyKeymap), tandem(client)] });
//
// Positions: CodeMirror counts UTF-16 units, the protocol counts code
// points; the conversion happens here and nowhere else. The binding keeps
// the editor's text equal to client.text at all times (line separator
// "\n" only, so a "\r" in a document is kept as a character rather than
// silently turned into a line break).
//
// Undo: edits from the server are dispatched with addToHistory false, so
// CodeMirror's history() undoes the person's own edits only and maps them
// through everyone else's, which is what people expect in a shared text.

import { Annotation, EditorSelection, EditorState, StateEffect, StateField, Transaction, Compartment, RangeSetBuilder } from '@codemirror/state';
import { Decoration, EditorView, ViewPlugin, WidgetType } from '@codemirror/view';
import { cpToUtf16Offset } from './ot.js';
import { Rope } from './rope.js';
import { utf8Length } from './utf8.js';

/** Marks transactions the binding dispatches for the server's edits. */
export const remoteEdit = Annotation.define();

const setRemotes = StateEffect.define();

/**
 * Converts a CodeMirror ChangeSet made on text (UTF-16 positions; a string
 * or a Rope, which the binding passes so that no position costs a scan of
 * a large text) into a protocol operation (code points).
 */
export function changesToOp(changes, text) {
  const doc = typeof text === 'string' ? Rope.from(text) : text;
  const op = [];
  let last = 0; // code point position the op has reached
  changes.iterChanges((fromA, toA, _fromB, _toB, inserted) => {
    const from = doc.utf16ToCp(fromA);
    const to = toA === fromA ? from : doc.utf16ToCp(toA);
    if (from > last) op.push(from - last);
    if (to > from) op.push({ d: to - from });
    const ins = inserted.toString();
    if (ins) op.push(ins);
    last = to;
  });
  return op;
}

/**
 * Converts a protocol operation made on text (code points) into CodeMirror
 * change specs (UTF-16 positions on the same text).
 */
export function opToChanges(op, text) {
  const out = [];
  let u = 0;
  for (const c of op) {
    if (typeof c === 'number') {
      u = cpToUtf16Offset(text, u, c);
    } else if (typeof c === 'string') {
      out.push({ from: u, insert: c });
    } else {
      const to = cpToUtf16Offset(text, u, c.d);
      out.push({ from: u, to });
      u = to;
    }
  }
  return out;
}

/** The single change turning a into b (common prefix and suffix, never splitting a surrogate pair). */
export function diffChange(a, b) {
  let pre = 0;
  const max = Math.min(a.length, b.length);
  while (pre < max && a.charCodeAt(pre) === b.charCodeAt(pre)) pre++;
  if (pre > 0 && pre < max && (a.charCodeAt(pre - 1) & 0xfc00) === 0xd800) pre--;
  let suf = 0;
  while (suf < max - pre && a.charCodeAt(a.length - 1 - suf) === b.charCodeAt(b.length - 1 - suf)) suf++;
  if (suf > 0 && suf < max - pre && (a.charCodeAt(a.length - suf) & 0xfc00) === 0xdc00) suf--;
  return { from: pre, to: a.length - suf, insert: b.slice(pre, b.length - suf) };
}

// ---- remote carets and selections ----------------------------------------

class CaretWidget extends WidgetType {
  constructor(user) {
    super();
    this.user = user;
  }
  eq(other) {
    return other.user.id === this.user.id && other.user.name === this.user.name && other.user.color === this.user.color;
  }
  toDOM() {
    const el = document.createElement('span');
    el.className = 'cm-remote-caret';
    el.dataset.user = this.user.id;
    el.style.setProperty('--c', this.user.color || '#64748b');
    el.setAttribute('aria-hidden', 'true');
    const flag = document.createElement('span');
    flag.className = 'cm-remote-flag';
    flag.textContent = this.user.name; // text, never markup
    el.append(flag);
    return el;
  }
  ignoreEvent() {
    return true;
  }
}

/** The decorations for others' {user, anchor, head} (UTF-16 positions of doc), sorted. */
function remoteItems(remotes, docLength) {
  const items = [];
  for (const r of remotes) {
    const a = Math.min(r.anchor, docLength);
    const h = Math.min(r.head, docLength);
    const from = Math.min(a, h);
    const to = Math.max(a, h);
    if (from < to) {
      items.push({
        from,
        to,
        // The colour comes from a constructed style sheet keyed by user
        // (see userColors): a style attribute would break a strict CSP.
        deco: Decoration.mark({ class: 'cm-remote-selection', attributes: { 'data-user': r.user.id } }),
      });
    }
    items.push({ from: h, to: h, deco: Decoration.widget({ widget: new CaretWidget(r.user), side: h === to && from < to ? -1 : 1 }) });
  }
  items.sort((x, y) => x.from - y.from || x.deco.startSide - y.deco.startSide);
  return items;
}

function remoteDecorations(items) {
  const b = new RangeSetBuilder();
  for (const it of items) b.add(it.from, it.to, it.deco);
  return b.finish();
}

/** What a remote decoration shows, as a string to compare (who, what, where). */
function drawnKey(from, to, deco) {
  const w = deco.spec.widget;
  if (w instanceof CaretWidget) return `c ${from} ${JSON.stringify([w.user.id, w.user.name, w.user.color])}`;
  return `s ${from} ${to} ${deco.spec.attributes['data-user']}`;
}

/** Whether deco (the field's decorations) already draws items. */
function drawsAlready(deco, items) {
  const have = [];
  for (let it = deco.iter(); it.value; it.next()) have.push(drawnKey(it.from, it.to, it.value));
  if (have.length !== items.length) return false;
  const want = items.map((it) => drawnKey(it.from, it.to, it.deco));
  have.sort();
  want.sort();
  return have.every((k, i) => k === want[i]);
}

const remoteField = StateField.define({
  create: () => Decoration.none,
  update(deco, tr) {
    for (const e of tr.effects) if (e.is(setRemotes)) return remoteDecorations(e.value);
    return tr.docChanged ? deco.map(tr.changes) : deco;
  },
  provide: (f) => EditorView.decorations.from(f),
});

const baseTheme = EditorView.baseTheme({
  '.cm-remote-selection': { backgroundColor: 'color-mix(in srgb, var(--c, #64748b) 22%, transparent)' },
  '.cm-remote-caret': {
    position: 'relative',
    borderLeft: '2px solid var(--c)',
    marginLeft: '-1px',
    marginRight: '-1px',
    pointerEvents: 'none',
  },
  '.cm-remote-flag': {
    position: 'absolute',
    left: '-2px',
    bottom: '100%',
    background: 'var(--c)',
    color: '#fff',
    font: '600 11px/1.4 system-ui, sans-serif',
    padding: '0 4px',
    borderRadius: '3px 3px 3px 0',
    whiteSpace: 'nowrap',
    userSelect: 'none',
    zIndex: '5',
  },
});

/**
 * Keeps one constructed style sheet in root with each remote user's colour
 * as --c on their selection marks. Constructed sheets are not inline
 * styles, so the page's CSP (style-src 'self') allows them.
 */
class UserColors {
  constructor(root) {
    this.root = root;
    this.sheet = null;
    this.css = '';
  }
  set(users) {
    const rules = [];
    for (const u of users) {
      const color = typeof CSS !== 'undefined' && CSS.supports?.('color', u.color) ? u.color : '#64748b';
      rules.push(`.cm-remote-selection[data-user="${CSS.escape(u.id)}"] { --c: ${color}; }`);
    }
    const css = rules.sort().join('\n');
    if (css === this.css) return;
    this.css = css;
    if (!this.sheet) {
      if (typeof CSSStyleSheet === 'undefined' || !this.root?.adoptedStyleSheets) return;
      this.sheet = new CSSStyleSheet();
      this.root.adoptedStyleSheets = [...this.root.adoptedStyleSheets, this.sheet];
    }
    this.sheet.replaceSync(css);
  }
  destroy() {
    if (this.sheet && this.root?.adoptedStyleSheets) this.root.adoptedStyleSheets = this.root.adoptedStyleSheets.filter((s) => s !== this.sheet);
  }
}

// ---- the binding -----------------------------------------------------------

/**
 * The CodeMirror extension that binds a view to client (a Client from
 * '@tandem/client'). Options:
 *   onRefused(info)   called when a local edit cannot be taken in because
 *                     the document would exceed the server's size limit
 *                     (info: {bytes, room}); the edit is not applied.
 *   onCleaned(info)   called when typed or pasted text lost characters a
 *                     document cannot hold (U+0000) or had "\r\n" line
 *                     breaks turned into "\n" (info: {nul, cr}).
 * Read-only until the client has the text, and while the connection's
 * permission is read.
 */
export function tandem(client, options = {}) {
  const editable = new Compartment();
  const lockedFor = () => !client.loaded() || client.perm === 'read';
  const lockExt = (locked) => [EditorState.readOnly.of(locked), EditorView.editable.of(client.perm !== 'read')];

  // Local input is cleaned and size-checked before it reaches the text.
  const filter = EditorState.transactionFilter.of((tr) => {
    if (!tr.docChanged || tr.annotation(remoteEdit)) return tr;
    let nul = 0;
    let cr = 0;
    let bytes = 0;
    let dirty = false;
    let deleted = 0; // UTF-16 units: at least the code points the server counts
    tr.changes.iterChanges((fa, ta, _fb, _tb, ins) => {
      deleted += ta - fa;
      if (ins.length === 0) return;
      const s = ins.toString();
      if (s.includes('\u0000') || s.includes('\r')) dirty = true;
      bytes += utf8Length(s);
    });
    const room = client.roomForInsert() + deleted;
    if (bytes > 0 && bytes > room) {
      // Refused here, whole: half a paste is worse than a clear no.
      options.onRefused?.({ bytes, room });
      return [];
    }
    if (!dirty) return tr;
    const specs = [];
    tr.changes.iterChanges((fromA, toA, _fb, _tb, ins) => {
      let s = ins.toString();
      const before = s.length;
      s = s.replaceAll('\u0000', '');
      nul += before - s.length;
      cr += s.match(/\r/g)?.length ?? 0;
      s = s.replace(/\r\n?/g, '\n');
      specs.push({ from: fromA, to: toA, insert: s });
    });
    options.onCleaned?.({ nul, cr });
    const changes = tr.startState.changes(specs);
    const head = changes.mapPos(tr.startState.selection.main.head, 1);
    return { changes, selection: EditorSelection.cursor(head), scrollIntoView: true, userEvent: tr.annotation(Transaction.userEvent) };
  });

  const plugin = ViewPlugin.fromClass(
    class {
      constructor(view) {
        this.view = view;
        // Positions convert through client.doc, the client's rope, which
        // holds the same text as the editor between updates.
        this.busy = 0; // > 0 while this binding is inside an update
        this.queued = [];
        this.others = new Map();
        this.colors = new UserColors(view.root);
        this.off = [
          client.on('text', (ev) => this.onText(ev)),
          client.on('presence', (others) => {
            this.others = others;
            this.drawRemotes();
          }),
          client.on('welcome', () => this.relock()),
          client.on('state', () => this.relock()),
        ];
        // The client may already hold text (restored or loaded before the
        // view existed): show it once the view is set up.
        this.later(() => {
          this.sync(client.text);
          this.relock();
          this.drawRemotes();
        });
      }

      /** Runs f now, or after the current update when called from inside one. */
      later(f) {
        this.queued.push(f);
        if (this.queued.length === 1) queueMicrotask(() => this.runQueued());
      }

      runQueued() {
        const q = this.queued;
        this.queued = [];
        for (const f of q) f();
      }

      dispatch(spec) {
        if (this.busy) this.later(() => this.view.dispatch(spec));
        else this.view.dispatch(spec);
      }

      relock() {
        const locked = lockedFor();
        if (this.locked === locked && this.perm === client.perm) return;
        this.locked = locked;
        this.perm = client.perm;
        this.dispatch({ effects: editable.reconfigure(lockExt(locked)) });
      }

      /** Makes the editor show text (a full reload), changing only what differs. */
      sync(text) {
        const cur = this.view.state.doc.toString();
        if (cur === text) return;
        const c = diffChange(cur, text);
        this.view.dispatch({
          changes: c,
          annotations: [remoteEdit.of(true), Transaction.remote.of(true), Transaction.addToHistory.of(false)],
        });
      }

      onText(ev) {
        if (!ev.remote) return; // ours: the editor already shows it
        if (this.busy) {
          // Cannot happen with today's client (remote text arrives from the
          // socket), but never dispatch inside an update.
          this.later(() => this.sync(client.text));
          return;
        }
        // The client gives the edit in UTF-16 positions of the text before
        // it, which the editor shows unless something went wrong.
        const changes = ev.changes;
        let before = ev.doc.length;
        for (const c of changes || []) before += c.to - c.from - c.insert.length;
        if (!changes || this.view.state.doc.length !== before) {
          this.sync(ev.text);
          return;
        }
        this.view.dispatch({
          changes,
          annotations: [remoteEdit.of(true), Transaction.remote.of(true), Transaction.addToHistory.of(false)],
        });
        if (this.view.state.doc.length !== ev.doc.length) this.sync(ev.text); // never drift
      }

      update(update) {
        this.busy++;
        try {
          this.take(update);
        } finally {
          this.busy--;
        }
      }

      take(update) {
        if (update.docChanged) {
          for (const tr of update.transactions) {
            if (!tr.docChanged || tr.annotation(remoteEdit)) continue;
            try {
              // client.doc is the text this transaction started from.
              if (client.doc.length !== tr.startState.doc.length) throw new Error('the editor and the client hold different texts');
              client.submit(changesToOp(tr.changes, client.doc));
            } catch (err) {
              // The editor and the client disagree (should not happen):
              // the client's text is what the server converges to.
              console.error('tandem: local edit not taken', err);
              this.later(() => this.sync(client.text));
            }
          }
        }
        if (update.selectionSet || (update.docChanged && update.transactions.some((tr) => !tr.annotation(remoteEdit)))) {
          this.sendSelection(update.state);
        }
      }

      sendSelection(state) {
        if (!client.loaded()) return;
        const { anchor, head } = state.selection.main;
        if (client.doc.length !== state.doc.length) return; // out of step: the resync sends it
        const a = client.doc.utf16ToCp(anchor);
        client.setCursor(a, head === anchor ? a : client.doc.utf16ToCp(head));
      }

      drawRemotes() {
        const doc = client.doc;
        const list = [];
        for (const p of this.others.values()) {
          if (!p.cursor) continue;
          // Others' positions are code points of client.text, which the
          // editor shows; convert both ends.
          list.push({ user: p.user, anchor: doc.cpToUtf16(p.cursor.anchor), head: doc.cpToUtf16(p.cursor.head) });
        }
        this.colors.set(list.map((r) => r.user));
        const send = () => {
          const items = remoteItems(list, this.view.state.doc.length);
          // A local edit moves the decorations with it, mostly to where the
          // client puts them too: then there is nothing to redraw, and the
          // key press costs no second update of the editor.
          if (!drawsAlready(this.view.state.field(remoteField), items)) this.view.dispatch({ effects: setRemotes.of(items) });
        };
        if (this.busy) this.later(send);
        else send();
      }

      destroy() {
        for (const off of this.off) off();
        this.colors.destroy();
      }
    },
  );

  return [
    EditorState.lineSeparator.of('\n'),
    editable.of(lockExt(lockedFor())),
    filter,
    remoteField,
    baseTheme,
    plugin,
  ];
}

/**
 * Where the editor draws others' carets: [{user, pos}] with pos a UTF-16
 * position of state.doc (for tests and status lines).
 */
export function remoteCarets(state) {
  const out = [];
  const deco = state.field(remoteField, false);
  if (!deco) return out;
  for (let it = deco.iter(); it.value; it.next()) {
    const w = it.value.spec.widget;
    if (w instanceof CaretWidget) out.push({ user: w.user.id, pos: it.from });
  }
  return out;
}

/** The code point length of the editor's text (for status lines and tests; a scan of the text). */
export function docLength(state) {
  return Rope.from(state.doc.toString()).cpLength;
}
