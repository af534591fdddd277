// @tandem/client: the browser client of tandem-runtime. See README.md.
//
// The protocol client (Jupiter OT state machine, reconnection, presence,
// limits) and the storage of unsent edits have no dependencies; the
// CodeMirror 6 binding is a separate entry point, '@tandem/client/codemirror',
// so applications with another editor do not load CodeMirror.

export {
  Client,
  State,
  CloseCodes,
  DEFAULT_LIMITS,
  backoffDelay,
  newClientId,
  withoutForbidden,
  transformSel,
  diffOp,
  splitOp,
  invert,
  utf8Length,
  parseLimits,
} from './client.js';
export { Rope } from './rope.js';
export { claimPending, persistPending, PENDING_PREFIX, BASE_PREFIX } from './storage.js';
export * as ot from './ot.js';
