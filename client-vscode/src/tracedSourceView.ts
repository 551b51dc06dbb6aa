// "Open traced source": asks the server for the snippet behind a trace hit and shows it as a
// read-only virtual document (scheme whence-trace), the license in the tab title and the
// matched lines highlighted. A content provider, not a temp file, so nothing can be edited or
// saved by accident and nothing is left on disk.

import * as vscode from 'vscode';
import { Methods, TracedSource } from './protocol';
import type { ServerSession } from './serverSession';
import { matchedLines, TRACE_SCHEME, tracedSourceTitle } from './tracedSourceDoc';

/** Old snippets are dropped beyond this many; reopening one asks the server again. */
const MAX_KEPT = 50;

export class TracedSourceView implements vscode.Disposable, vscode.TextDocumentContentProvider {
  private readonly sources = new Map<string, TracedSource>();
  private nextId = 1;
  private readonly matchedLineType = vscode.window.createTextEditorDecorationType({
    isWholeLine: true,
    backgroundColor: new vscode.ThemeColor('editor.findMatchHighlightBackground'),
    overviewRulerColor: new vscode.ThemeColor('editorOverviewRuler.findMatchForeground'),
    overviewRulerLane: vscode.OverviewRulerLane.Full,
  });
  /** Matched span per open trace document: decorations belong to an editor, so they are put back when one reappears. */
  private readonly matchedRanges = new Map<string, vscode.Range>();
  private readonly registrations: vscode.Disposable[];

  constructor(private readonly session: ServerSession, private readonly log: vscode.LogOutputChannel) {
    this.registrations = [
      vscode.workspace.registerTextDocumentContentProvider(TRACE_SCHEME, this),
      vscode.window.onDidChangeVisibleTextEditors((editors) => editors.forEach((editor) => this.decorate(editor))),
    ];
  }

  private decorate(editor: vscode.TextEditor): void {
    const range = this.matchedRanges.get(editor.document.uri.toString());
    if (range) {
      editor.setDecorations(this.matchedLineType, [range]);
    }
  }

  provideTextDocumentContent(uri: vscode.Uri): string {
    const source = this.sources.get(new URLSearchParams(uri.query).get('id') ?? '');
    return source
      ? source.content
      : '(whence: this traced source is no longer cached; open it again from its code lens.)';
  }

  /** Handler of `whence.openTracedSource`; its argument is the server's trace hit, passed through. */
  async open(...args: unknown[]): Promise<void> {
    const hit = args[0];
    if (hit === undefined || hit === null) {
      void vscode.window.showErrorMessage('whence: "Open traced source" needs a trace hit; use it from a code lens or code action.');
      return;
    }
    let source: TracedSource | null;
    try {
      source = await this.session.sendRequest<TracedSource | null>(Methods.tracedSource, { hit });
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      this.log.error(`whence/tracedSource failed: ${message}`);
      void vscode.window.showErrorMessage(`whence: could not open the traced source: ${message}`);
      return;
    }
    if (!source || typeof source.content !== 'string') {
      void vscode.window.showInformationMessage('whence: the server has no source for this trace hit.');
      return;
    }
    const id = String(this.nextId++);
    this.sources.set(id, source);
    if (this.sources.size > MAX_KEPT) {
      this.sources.delete(this.sources.keys().next().value as string);
      this.matchedRanges.delete(this.matchedRanges.keys().next().value as string);
    }
    const uri = vscode.Uri.from({ scheme: TRACE_SCHEME, path: `/${tracedSourceTitle(source)}`, query: `id=${id}` });
    let document = await vscode.workspace.openTextDocument(uri);
    if (source.languageId) {
      document = await vscode.languages.setTextDocumentLanguage(document, source.languageId).then(
        (withLanguage) => withLanguage,
        () => document, // a language VS Code does not know: plain text is still readable
      );
    }
    const { first, last } = matchedLines(source);
    const matched = new vscode.Range(first, 0, last, document.lineAt(last).text.length);
    this.matchedRanges.set(uri.toString(), matched);
    const editor = await vscode.window.showTextDocument(document, {
      viewColumn: vscode.ViewColumn.Beside,
      preview: true,
      selection: new vscode.Range(first, 0, first, 0),
    });
    this.decorate(editor);
    editor.revealRange(matched, vscode.TextEditorRevealType.InCenter);
  }

  dispose(): void {
    this.registrations.forEach((registration) => registration.dispose());
    this.matchedLineType.dispose();
    this.sources.clear();
    this.matchedRanges.clear();
  }
}
