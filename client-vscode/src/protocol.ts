// The whence/... messages of docs/lsp-protocol.md, as the client sees them. Type-only: this module
// must stay importable without `vscode`, so the pure renderers and their tests can use it.

/** An LSP position: 0-based line, UTF-16 character. */
export interface LspPosition {
  line: number;
  character: number;
}

export interface LspRange {
  start: LspPosition;
  end: LspPosition;
}

export type ServerState = 'loading' | 'ready' | 'error';

/** `whence/status`, both the notification and the request's answer. */
export interface WhenceStatus {
  state: ServerState;
  model?: string | null;
  device?: string | null;
  message?: string | null;
  /** 0..100 while the model loads. */
  progress?: number | null;
  /** Only in answers to the request. */
  stats?: { completionCacheHits?: number; attributionPending?: number; records?: number } | null;
  /** What the model is doing now ("generating…", "explaining 3/8"); absent when idle. */
  activity?: string | null;
  /** How long the last completion took, from request to answer. */
  lastCompletionMs?: number | null;
}

export interface MatrixToken {
  text: string;
  range: LspRange;
  prob: number;
  /** The user has edited this token since it was generated. */
  edited?: boolean;
}

export interface MatrixUnit {
  text: string;
  /** Where the source is shown: `line 12`, `line 40 (below)` or `utils.py:12`. */
  label?: string;
  /** 0-based line in its file. */
  line?: number;
  /** This document's lines have a range; another file's snippet has `uri` and `line` instead. */
  range?: LspRange;
  below?: boolean;
  path?: string;
  uri?: string;
}

/** `whence/attributionMatrix` answer: rows are generated tokens, columns context units. */
export interface AttributionMatrix {
  recordId: string;
  method: string;
  note?: string | null;
  tokens: MatrixToken[];
  units: MatrixUnit[];
  /** URI of the page that says how the method's scores were measured. */
  docs?: string | null;
  /** Signed; each computed row's absolute values sum to 1; null rows are not computed yet. */
  scores: (number[] | null)[];
  /**
   * Per row: how random-subset ablation verified it (the row in `scores` is then the ablation's),
   * or null while the row is the cheap estimate. Absent from older servers.
   */
  verified?: (RowVerification | null)[];
  /** Verification of this record is queued or running: estimated rows will be replaced. */
  verifying?: boolean;
  /**
   * The record's document lines as they read in the editor (the code before the cursor
   * included): what a completion line is labelled with. Absent from older servers.
   */
  lines?: { line: number; text: string }[];
  /** The matrix as the panel shows it, grouped and ranked by the server (report/matrix_view.py). */
  view: MatrixView;
}

/** One completion line of the view: the row a reader sees first; its tokens are the rows it expands to. */
export interface MatrixViewLine {
  /** 0-based document line. */
  line: number;
  /** The line as it reads in the editor, whitespace collapsed. */
  text: string;
  tokens: number[];
  /** Mean of its computed token rows, per unit; null while none is computed. */
  scores: number[] | null;
  /** Tokens of the line still waiting for their row. */
  pending: number;
  /** No text and nothing pending: not shown in the panel. */
  blank: boolean;
}

/** Why a token row has scores or not: `computing` ones are still to come. */
export type RowState = 'scored' | 'computing' | 'edited' | 'zero-width';

/** What the panel, the tint and Export render, made once on the server. */
export interface MatrixView {
  /** Units with any weight, strongest first. */
  columns: number[];
  /** Per unit: `line 12`, `line 40 (below)` or `utils.py:12`. */
  places: string[];
  /** Per unit: its first line of code, trimmed for a column label. */
  codes: string[];
  lines: MatrixViewLine[];
  /** Per token. */
  rowStates: RowState[];
  /** Per token: verified (✓) or estimated (~), with a sentence; null when not computed or not said. */
  truth: ({ mark: string; sentence: string } | null)[];
  /** "5 of 8 rows verified by 16 ablations, the rest estimated"; empty when there is nothing to say. */
  summary: string;
  /** Token rows still computing. */
  pending: number;
}

/** How a verified row was measured, and how far the estimate it replaced was from it. */
export interface RowVerification {
  /** Random masks (lines removed at random halves) the row was fitted on. */
  masks: number;
  /** `exact`, or `tail N`: only the context's last N tokens and the completion were run again under each mask. */
  mode?: string | null;
  /** The estimate's strongest line was the verified strongest line. */
  sameTop?: boolean | null;
  /** Where the verified strongest line stood in the estimate's ranking (1: first). */
  rankInEstimate?: number | null;
  /** Spearman of the estimate's predicted against the measured outcomes of these masks. */
  estimateLds?: number | null;
}

/** `whence/rowsReady` notification: rows of a record arrived (or failed); sent instead of being polled for. */
export interface RowsReady {
  recordId: string;
  uri: string;
  /** The tokens whose rows just arrived. */
  tokenIndexes: number[];
  /** Rows there now, of the rows the record will have. */
  done: number;
  total: number;
  /** The rows named are verified ones (ablation), replacing their estimates. */
  verified?: boolean;
  /** The record's rows failed; no more will come. */
  error?: string;
  /**
   * The record's whole `whence/attributionMatrix` answer as it is now, sent only for the record a
   * panel watches (`watch: true` in the request): the panel renders it without asking again.
   */
  matrix?: AttributionMatrix;
  /** The watched record's matrix comes in a later notification (the server builds it at most every 250 ms). */
  matrixFollows?: boolean;
}

export interface AttributionMatrixParams {
  textDocument: { uri: string };
  position?: LspPosition;
  recordId?: string;
  /** An open panel shows this record: its later rowsReady notifications carry the matrix. */
  watch?: boolean;
}

export interface ScoredUnit {
  range: LspRange;
  score: number;
}

/** `whence/tokenAttribution` answer: what drove the token under the cursor. */
export interface TokenAttribution {
  token: MatrixToken;
  /** Units with a zero score are left out. */
  units: ScoredUnit[];
  method: string;
  /** The row was not ready within the server's wait; `units` is empty then. */
  pending?: boolean;
  /** The tint is the verified row's (null or absent: the estimate's). */
  verified?: RowVerification | null;
  /** Which record and token this is: a pending row is announced by a `whence/rowsReady` naming them. */
  recordId?: string;
  tokenIndex?: number;
}

export interface TokenAttributionParams {
  textDocument: { uri: string };
  position: LspPosition;
}

/** `whence/tracedSource` answer for one trace hit. */
export interface TracedSource {
  uri: string;
  path: string;
  content: string;
  languageId: string;
  license: string;
  /** 1-based, inclusive lines of the matched span inside `content`. */
  startLine: number;
  endLine: number;
}

/** Result of `whence.explainLine`. */
export interface ExplainLineResult {
  recordId: string;
  range: LspRange;
}

export const Methods = {
  status: 'whence/status',
  attributionMatrix: 'whence/attributionMatrix',
  matrixHtml: 'whence/matrixHtml',
  /** client -> server: the matrix panel closed; its record's notifications need no matrix. */
  unwatchMatrix: 'whence/unwatchMatrix',
  feature: 'whence/feature',
  tokenAttribution: 'whence/tokenAttribution',
  tracedSource: 'whence/tracedSource',
  completionShown: 'whence/completionShown',
  rowsReady: 'whence/rowsReady',
  /** server -> client: a retention checkpoint was committed to the provenance log. */
  retention: 'whence/retention',
  retentionReport: 'whence/retentionReport',
} as const;

/** Commands the server executes (workspace/executeCommand). */
export const ServerCommands = {
  acceptCompletion: 'whence.acceptCompletion',
  explainLine: 'whence.explainLine',
  regenerate: 'whence.regenerate',
  openTracedSource: 'whence.openTracedSource',
  buildIndex: 'whence.buildIndex',
  /** "why this token and not the runner-up": linked from the hover, answered as a message. */
  explainContrast: 'whence.explainContrast',
} as const;

/**
 * Commands the server names in its code lenses / code actions but that the client carries out
 * (the contract calls showAttributionMatrix client-side, and openTracedSource is a server no-op
 * whose real work, opening the document, only a client can do).
 */
/** The client command a hover's "saw:" feature links run (the page of one SAE feature). */
export const SHOW_FEATURE_COMMAND = 'whence.showFeature';

export const ClientSideServerCommands = {
  showAttributionMatrix: 'whence.showAttributionMatrix',
  openTracedSource: 'whence.openTracedSource',
} as const;
