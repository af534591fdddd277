// Types of @tandem/client (the protocol client; see README.md and
// docs/protocol.md). Positions and lengths count Unicode code points.

/** An operation: retain n, insert "text", delete {d: n}, walking the text from the start. */
export type Op = Array<number | string | { d: number }>;

export interface Selection {
  anchor: number;
  head: number;
}

export interface User {
  id: string;
  name: string;
  color: string;
}

export interface Other {
  user: User;
  conn: string;
  /** Where this person's selection is in client.text (code points), or null. */
  cursor: Selection | null;
}

export interface Limits {
  /** Bytes one WebSocket message may have. */
  maxMessageBytes: number;
  /** UTF-8 bytes one operation may insert. */
  maxOpBytes: number;
  /** UTF-8 bytes the whole text may have (0: not announced). */
  maxDocBytes: number;
}

export declare const DEFAULT_LIMITS: Readonly<Limits>;

export declare const State: Readonly<{
  CONNECTING: 'connecting';
  CONNECTED: 'connected';
  RECONNECTING: 'reconnecting';
  OFFLINE: 'offline';
  FAILED: 'failed';
  CLOSED: 'closed';
}>;
export type StateName = (typeof State)[keyof typeof State];

export interface ClientError {
  code: string;
  message: string;
  seq?: number;
}

export interface StateEvent {
  state: StateName;
  /** When the next attempt starts (Date.now() clock), while reconnecting. */
  retryAt: number | null;
  attempt: number;
  error: ClientError | null;
}

/**
 * A text kept as chunks (rope.js): edits and position conversions cost
 * about a chunk, not a copy of the text. Immutable.
 */
export declare class Rope {
  static from(s: string): Rope;
  /** UTF-16 units. */
  readonly length: number;
  /** Code points. */
  readonly cpLength: number;
  /** UTF-8 bytes, as the server counts them. */
  readonly byteLength: number;
  toString(): string;
  cpToUtf16(cp: number): number;
  utf16ToCp(u16: number): number;
  slice(from: number, to?: number): string;
  /** The operation applied, and the same edit as UTF-16 changes on this text. */
  apply(op: Op): { rope: Rope; changes: Array<{ from: number; to: number; insert: string }> };
}

export interface TextEvent {
  /** The whole new text; built when read (a copy of a large text: prefer doc). */
  readonly text: string;
  /** The new text as a rope. */
  doc: Rope;
  /** What was applied to the previous text; null for a full reload. */
  op: Op | null;
  /** The same edit in UTF-16 positions of the previous text; absent on a full reload. */
  changes?: Array<{ from: number; to: number; insert: string }>;
  /** True for the server's edits (and for a local edit the server refused, taken back). */
  remote: boolean;
  user: string | null;
  refused?: boolean;
}

export interface WelcomeEvent {
  user: User | null;
  rev: number;
  perm: 'read' | 'write';
  conn: string | null;
}

/** What pendingSnapshot() returns: plain JSON, for storage. */
export interface PendingSnapshot {
  v: 1;
  clientId: string;
  rev: number;
  base: string;
  reloadRev: number | null;
  nextSeq: number;
  inflight: { seq: number; op: Op; everSent: boolean; edits: number };
  buffer: Op | null;
  bufferEdits: number;
}

/** The subset of WebSocket the client uses. */
export interface SocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: string }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export interface ClientOptions {
  /** The document's WebSocket URL: wss://host/v1/docs/{id}/ws */
  url: string;
  /** Opens a socket, e.g. (url) => new WebSocket(url). */
  connect: (url: string) => SocketLike;
  /** Bearer token sent in hello (omit in anonymous mode). */
  token?: string;
  /**
   * Returns a fresh token. Called shortly before the connection's token
   * expires (the fresh one is handed over on the open connection), and
   * once after a close as unauthorized (4001) before reconnecting.
   */
  refreshToken?: () => string | Promise<string>;
  /** Stable id of this client's submissions (default: random). */
  clientId?: string;
  /** Display name and colour to ask for (anonymous mode only). */
  profile?: { name: string; color?: string } | null;
  /** Unsent edits from pendingSnapshot() of an earlier client (see claimPending). */
  restore?: PendingSnapshot | null;
  presenceIntervalMs?: number;
  setTimeout?: (f: () => void, ms: number) => unknown;
  clearTimeout?: (h: unknown) => void;
  now?: () => number;
  random?: () => number;
}

export interface ClientEvents {
  state: StateEvent;
  text: TextEvent;
  presence: Map<string, Other>;
  revision: number;
  error: ClientError;
  welcome: WelcomeEvent;
  /** Unsent edits changed (for storage). */
  pending: undefined;
  /** The server's text moved to rev by op (null: replaced whole, a reload). */
  commit: { rev: number; op: Op | null };
}

export declare class Client {
  constructor(opts: ClientOptions);
  readonly clientId: string;
  /** The local text: the server's at rev plus unacknowledged local edits (a string built on demand). */
  readonly text: string;
  /** The same text as a rope: what to read per key press. */
  readonly doc: Rope;
  readonly rev: number | null;
  readonly state: StateName;
  readonly user: User | null;
  readonly perm: 'read' | 'write' | null;
  readonly limits: Limits;
  profile: { name: string; color?: string } | null;

  onState: ((ev: StateEvent) => void) | null;
  onText: ((ev: TextEvent) => void) | null;
  onPresence: ((others: Map<string, Other>) => void) | null;
  onRevision: ((rev: number) => void) | null;
  onError: ((err: ClientError) => void) | null;
  onWelcome: ((ev: WelcomeEvent) => void) | null;
  onPending: (() => void) | null;
  onCommit: ((ev: { rev: number; op: Op | null }) => void) | null;

  /** Adds a listener besides the on<Name> property; returns its remover. */
  on<K extends keyof ClientEvents>(name: K, fn: (ev: ClientEvents[K]) => void): () => void;

  start(): void;
  close(): void;
  setOnline(online: boolean): void;
  reconnectNow(): void;
  /** Applies a local edit made on client.text; throws (changing nothing) when it does not fit. */
  submit(op: Op): void;
  setCursor(anchor: number, head?: number): void;
  loaded(): boolean;
  synchronized(): boolean;
  unsentCount(): number;
  unsentEdits(): number;
  /** UTF-8 bytes an insert may add before the server's document limit (Infinity when unknown). */
  roomForInsert(): number;
  /** With {text: false} the base text is left out (kept elsewhere). */
  pendingSnapshot(opts?: { text?: boolean }): PendingSnapshot | null;
}

export declare const CloseCodes: Readonly<Record<number, { code: string; fatal: boolean; message: string }>>;
export declare function backoffDelay(attempt: number, random?: () => number): number;
export declare function newClientId(random?: () => number): string;
export declare function withoutForbidden(s: string): string;
export declare function transformSel(sel: Selection, op: Op, own: boolean): Selection;
export declare function diffOp(a: string, b: string): Op;
export declare function splitOp(op: Op, maxInsert: number, maxJSON: number): [Op, Op] | null;
export declare function invert(op: Op, text: string): Op;
export declare function utf8Length(s: string): number;
export declare function parseLimits(l: unknown): Limits;

export declare const PENDING_PREFIX: string;
export interface StorageOptions {
  storage?: Storage;
  locks?: LockManager;
  now?: () => number;
}
/** Claims unsent edits a closed tab left for docKey; pass both fields to new Client. */
export declare function claimPending(docKey: string, opts?: StorageOptions): Promise<{ clientId: string; snapshot: PendingSnapshot | null }>;
/**
 * Keeps client's unsent edits in storage as they are made (connected or
 * not): the server's text rarely, in idle time, and the unacknowledged and
 * since-committed operations after every change (once the next frame is painted). Returns a
 * stop function.
 */
export declare function persistPending(
  client: Client,
  docKey: string,
  opts?: {
    storage?: Storage;
    target?: EventTarget;
    onError?: (err: unknown) => void;
    now?: () => number;
    idle?: (f: () => void) => unknown;
    cancelIdle?: (handle: unknown) => void;
  },
): () => void;
export declare const BASE_PREFIX: string;

export declare const ot: {
  apply(text: string, op: Op): string;
  transform(a: Op, b: Op, side: 'left' | 'right'): Op;
  compose(a: Op, b: Op): Op;
  normalize(op: Op): Op;
  cpLength(s: string): number;
  cpToUtf16(text: string, cp: number): number;
  utf16ToCp(text: string, u16: number): number;
  transformSelection(anchor: number, head: number, op: Op, own: boolean): [number, number];
};
