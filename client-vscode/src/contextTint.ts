// Tints the context tokens that drove the generated token under the cursor, in proportion to
// their scores (whence/tokenAttribution). Requests follow the cursor with a short debounce, and
// an answer that arrives after the cursor moved on is dropped.

import * as vscode from 'vscode';
import { toLspPosition, toVsRange } from './lspRange';
import { Methods, TokenAttribution } from './protocol';
import type { ServerSession } from './serverSession';
import { SERVED_LANGUAGES } from './serverSession';
import { DEFAULT_TINT_OPTIONS, tintBuckets, tintColor } from './tintBuckets';

const DEBOUNCE_MS = 150;
const PENDING_RETRY_MS = 2_000;
/** Five minutes of asking; a token whose row never arrives stops costing requests. */
const MAX_PENDING_RETRIES = 150;
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
  private pendingRetries = 0;

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
    this.pendingRetries = 0;
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
    }
    if (generation !== this.generation) {
      return;
    }
    this.clear();
    if (!answer || !Array.isArray(answer.units)) {
      return;
    }
    if (answer.pending) {
      // A generated token whose row is still being computed in the background: look again
      // while the cursor stays where it is.
      this.retryWhileStill(editor, generation);
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

  private retryWhileStill(editor: vscode.TextEditor, generation: number): void {
    const position = editor.selection.active;
    if (++this.pendingRetries > MAX_PENDING_RETRIES) {
      return;
    }
    if (this.timer) {
      clearTimeout(this.timer);
    }
    this.timer = setTimeout(() => {
      const unchanged =
        generation === this.generation && vscode.window.activeTextEditor === editor && editor.selection.active.isEqual(position);
      if (unchanged && this.enabled) {
        void this.update(editor);
      }
    }, PENDING_RETRY_MS);
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
