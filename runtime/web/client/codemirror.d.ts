// Types of @tandem/client/codemirror, the CodeMirror 6 binding.
import type { Annotation, ChangeSet, EditorState, Extension } from '@codemirror/state';
import type { Client, Op } from './index.js';

export interface TandemOptions {
  /** A local insert was not taken in: the document would exceed the server's size limit. */
  onRefused?: (info: { bytes: number; room: number }) => void;
  /** Typed or pasted text lost U+0000 characters (nul) or had "\r" line breaks made "\n" (cr). */
  onCleaned?: (info: { nul: number; cr: number }) => void;
}

/** Binds a view to client: text, local edits, others' carets and selections, read-only state. */
export declare function tandem(client: Client, options?: TandemOptions): Extension;
/** Present on the transactions the binding makes for the server's edits. */
export declare const remoteEdit: Annotation<boolean>;
export declare function changesToOp(changes: ChangeSet, text: string): Op;
export declare function opToChanges(op: Op, text: string): Array<{ from: number; to?: number; insert?: string }>;
export declare function diffChange(a: string, b: string): { from: number; to: number; insert: string };
export declare function docLength(state: EditorState): number;
/** Where the editor draws others' carets (UTF-16 positions). */
export declare function remoteCarets(state: EditorState): Array<{ user: string; pos: number }>;
