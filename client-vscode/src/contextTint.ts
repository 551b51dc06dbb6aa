// Tints the context tokens that drove the generated token under the cursor, in proportion to
// their scores (whence/tokenAttribution). Requests follow the cursor with a short debounce, and
// an answer that arrives after the cursor moved on is dropped. A token whose row is still being
// computed is asked about again when the server announces its row (whence/rowsReady), not on a
// timer: every ask used to reach the server's queue, which is busy with that very row.

import * as vscode from 'vscode';
import { toLspPosition, toVsRange } from './lspRange';
import { Methods, RowsReady, TokenAttribution } from './protocol';
import { rowsConcern } from './rowsReady';
import type { ServerSession } from './serverSession';
import { SERVED_LANGUAGES } from './serverSession';
import { DEFAULT_TINT_OPTIONS, tintBuckets, tintColor } from './tintBuckets';

const DEBOUNCE_MS = 150;
export const TINT_SETTING = 'client.tintContext';

export class ContextTint implements vscode.Disposable {
  private readonly bandTypes = new Map<string, vscode.TextEditorDecorationType>();
  private readonly tokenType = vscode.window.createTextEditorDecorationType({
    border: '1px solid',
    borderColor: new vscode.ThemeColor('editorInfo.foreground'),
  });
  private readonly disposables: vscode.Disposable[] = [];
  private timer: NodeJS.Timeout | undefined;
  private generation = 0;
  private inFlight: vscode.CancellationTokenSource | undefined;
  private tintedEditor: vscode.TextEditor | undefined;
  /** The pending token under the cursor, tinted once the server announces its row. */
  private waiting: { editor: vscode.TextEditor; position: vscode.Position; generation: number; recordId: string; tokenIndex: number } | undefined;
  /** rowsReady notifications that came while a request was out: one is not lost to the answer's trip. */
  private arrivals: RowsReady[] = [];

  constructor(private readonly session: ServerSession, private readonly log: vscode.LogOutputChannel) {
    for (const sign of ['positive', 'negative'] as const) {
      for (let level = 1; level <= DEFAULT_TINT_OPTIONS.levels; level++) {
        this.bandTypes.set(
          `${sign}:${level}`,
          vscode.window.createTextEditorDecorationType({
            backgroundColor: tintColor(sign, level, DEFAULT_TINT_OPTIONS.levels),
            overviewRulerColor: level === DEFAULT_TINT_OPTIONS.levels ? tintColor(sign, level, DEFAULT_TINT_OPTIONS.levels) : undefined,
            overviewRulerLane: vscode.OverviewRulerLane.Center,
          }),
        );
      }
    }
    this.disposables.push(
      session.onRowsReady((rows) => this.onRowsReady(rows)),
      vscode.window.onDidChangeTextEditorSelection((event) => this.schedule(event.textEditor)),
      vscode.window.onDidChangeActiveTextEditor(() => this.clear()),
      vscode.workspace.onDidChangeTextDocument((event) => {
        // Ranges from before an edit no longer point at the right text.
        if (this.tintedEditor?.document === event.document) {
          this.clear();
        }
      }),
      vscode.workspace.onDidChangeConfiguration((event) => {
        if (event.affectsConfiguration(`whence.${TINT_SETTING}`) && !this.enabled) {
          this.clear();
        }
      }),
    );
  }

  private get enabled(): boolean {
    return vscode.workspace.getConfiguration('whence').get<boolean>(TINT_SETTING, true);
  }

  private schedule(editor: vscode.TextEditor): void {
    if (this.timer) {
      clearTimeout(this.timer);
    }
    this.waiting = undefined;
    if (!this.enabled || !SERVED_LANGUAGES.includes(editor.document.languageId) || editor.document.uri.scheme !== 'file') {
      return;
    }
    this.timer = setTimeout(() => void this.update(editor), DEBOUNCE_MS);
  }

  private async update(editor: vscode.TextEditor): Promise<void> {
    if (!this.session.isReady) {
      return;
    }
    const generation = ++this.generation;
    this.inFlight?.cancel();
    const cancellation = new vscode.CancellationTokenSource();
    this.inFlight = cancellation;
    this.waiting = undefined;
    this.arrivals = [];
    let answer: TokenAttribution | null;
    try {
      answer = await this.session.sendRequest<TokenAttribution | null>(
        Methods.tokenAttribution,
        { textDocument: { uri: editor.document.uri.toString() }, position: toLspPosition(editor.selection.active) },
        cancellation.token,
      );
    } catch (error) {
      if (!cancellation.token.isCancellationRequested) {
        this.log.warn(`whence/tokenAttribution failed: ${error instanceof Error ? error.message : String(error)}`);
      }
      return;
    } finally {
      cancellation.dispose();
      if (this.inFlight === cancellation) {
        this.inFlight = undefined;
      }
    }
    if (generation !== this.generation) {
      return;
    }
    this.clear();
    if (!answer || !Array.isArray(answer.units)) {
      return;
    }
    if (answer.pending) {
      // A generated token whose row is still being computed in the background: look again when
      // the server says it is there, while the cursor stays where it is.
      if (typeof answer.recordId === 'string' && typeof answer.tokenIndex === 'number') {
        const waiting = { editor, position: editor.selection.active, generation, recordId: answer.recordId, tokenIndex: answer.tokenIndex };
        this.waiting = waiting;
        if (this.arrivals.some((rows) => rowsConcern(rows, waiting.recordId, waiting.tokenIndex))) {
          this.onRowsReady(undefined); // announced while the answer was on its way
        }
      }
      return;
    }
    const buckets = tintBuckets(answer.units);
    for (const bucket of buckets) {
      const type = this.bandTypes.get(`${bucket.sign}:${bucket.level}`);
      type && editor.setDecorations(type, bucket.ranges.map(toVsRange));
    }
    editor.setDecorations(this.tokenType, [toVsRange(answer.token.range)]);
    this.tintedEditor = editor;
  }

  private onRowsReady(rows: RowsReady | undefined): void {
    if (rows && this.inFlight) {
      this.arrivals.push(rows); // kept only while a request is out, for the answer to check
    }
    const waiting = this.waiting;
    if (!waiting || (rows && !rowsConcern(rows, waiting.recordId, waiting.tokenIndex))) {
      return;
    }
    this.waiting = undefined;
    const { editor, position, generation } = waiting;
    const unchanged =
      generation === this.generation && vscode.window.activeTextEditor === editor && editor.selection.active.isEqual(position);
    if (unchanged && this.enabled) {
      void this.update(editor);
    }
  }

  clear(): void {
    const editor = this.tintedEditor;
    this.tintedEditor = undefined;
    if (!editor) {
      return;
    }
    for (const type of this.bandTypes.values()) {
      editor.setDecorations(type, []);
    }
    editor.setDecorations(this.tokenType, []);
  }

  dispose(): void {
    if (this.timer) {
      clearTimeout(this.timer);
    }
    this.inFlight?.cancel();
    this.disposables.forEach((disposable) => disposable.dispose());
    this.bandTypes.forEach((type) => type.dispose());
    this.tokenType.dispose();
  }
}
