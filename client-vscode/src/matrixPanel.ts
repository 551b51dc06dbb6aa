// The "Show attribution matrix" webview. It asks the server for the matrix of the record under
// the cursor (or a given record), watching it, and renders it with matrixHtml; the server's
// `whence/rowsReady` for that record then carries the matrix as it now is (rows still computing
// fill in as they arrive, with no polling and no second request; `matrixFollows` says it comes
// in the next one; a notification with neither, from a server that does not push it, makes the
// panel ask again). It reveals units and tokens
// in the editor when the page asks.

import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { toLspPosition, toVsRange } from './lspRange';
import { hasPendingRows, parseMatrixPageMessage, renderMatrixHtml, sameMatrixContent } from './matrixHtml';
import { AttributionMatrix, AttributionMatrixParams, Methods, RowsReady } from './protocol';
import { rowsConcern } from './rowsReady';
import type { ServerSession } from './serverSession';

interface MatrixTarget {
  documentUri: vscode.Uri;
  params: AttributionMatrixParams;
  /** The editor column to reveal units in: where the user was, not the panel's column. */
  editorColumn: vscode.ViewColumn;
}

export class AttributionMatrixPanel implements vscode.Disposable {
  static readonly viewType = 'whence.attributionMatrix';
  private panel: vscode.WebviewPanel | undefined;
  private matrix: AttributionMatrix | undefined;
  private target: MatrixTarget | undefined;
  /** rowsReady notifications seen, of any record: one that came while a fetch was answered is not lost. */
  private arrivals = 0;
  private refreshing: Promise<void> | undefined;
  private refreshAgain = false;
  private readonly subscription: vscode.Disposable;

  constructor(private readonly session: ServerSession, private readonly log: vscode.LogOutputChannel) {
    this.subscription = session.onRowsReady((rows) => this.onRowsReady(rows));
  }

  /**
   * Entry point for the palette command and for `whence.showAttributionMatrix` from the server.
   * Accepts `{recordId, uri}` (or `{recordId, textDocument: {uri}}`) as its first argument;
   * without one it uses the cursor of the active editor.
   */
  async show(...args: unknown[]): Promise<void> {
    const target = this.targetFrom(args[0]);
    if (!target) {
      void vscode.window.showWarningMessage('whence: open a file and put the cursor on a completion or explained line first.');
      return;
    }
    const arrivalsBefore = this.arrivals;
    const matrix = await this.fetch({ ...target.params, watch: true });
    if (!matrix) {
      void vscode.window.showInformationMessage(
        'whence: no attribution here. Accept a completion or run "whence: Explain this line", then put the cursor on it.',
      );
      return;
    }
    this.target = { ...target, params: { textDocument: target.params.textDocument, recordId: matrix.recordId, watch: true } };
    this.matrix = matrix;
    this.ensurePanel(target.editorColumn);
    this.render();
    if (this.arrivals !== arrivalsBefore && hasPendingRows(matrix)) {
      void this.refresh(); // rows were announced while the first answer was on its way
    }
  }

  dispose(): void {
    this.subscription.dispose();
    this.panel?.dispose();
  }

  private onRowsReady(rows: RowsReady): void {
    this.arrivals += 1;
    if (!this.panel || !this.matrix || !rowsConcern(rows, this.matrix.recordId)) {
      return;
    }
    if (rows.matrix && !this.refreshing) {
      // the server sent the matrix as it is now: render it, nothing to ask
      if (!sameMatrixContent(rows.matrix, this.matrix)) {
        this.matrix = rows.matrix;
        this.render();
      }
      return;
    }
    if (rows.matrixFollows && !this.refreshing) {
      return; // the server sends this record's matrix in a moment: no request for it
    }
    void this.refresh();
  }

  /** Ask for the shown record's matrix again; rows announced meanwhile get one more ask, not one each. */
  private async refresh(): Promise<void> {
    if (this.refreshing) {
      this.refreshAgain = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      do {
        this.refreshAgain = false;
        if (!this.panel || !this.matrix || !this.target) {
          return;
        }
        const matrix = await this.fetch(this.target.params, true);
        // Re-rendering replaces the page (and resets its scroll and hover), so only do it when
        // the server has actually filled in something new.
        if (matrix && this.panel && !sameMatrixContent(matrix, this.matrix)) {
          this.matrix = matrix;
          this.render();
        }
      } while (this.refreshAgain);
    })().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  private targetFrom(arg: unknown): MatrixTarget | undefined {
    const editor = vscode.window.activeTextEditor;
    const editorColumn = editor?.viewColumn ?? vscode.ViewColumn.One;
    if (typeof arg === 'object' && arg !== null && typeof (arg as { recordId?: unknown }).recordId === 'string') {
      const given = arg as { recordId: string; uri?: string; textDocument?: { uri?: string } };
      const uriText = given.uri ?? given.textDocument?.uri ?? editor?.document.uri.toString();
      if (!uriText) {
        return undefined;
      }
      return {
        documentUri: vscode.Uri.parse(uriText),
        params: { textDocument: { uri: uriText }, recordId: given.recordId },
        editorColumn,
      };
    }
    if (!editor) {
      return undefined;
    }
    return {
      documentUri: editor.document.uri,
      params: { textDocument: { uri: editor.document.uri.toString() }, position: toLspPosition(editor.selection.active) },
      editorColumn,
    };
  }

  /** `background`: a refresh on rowsReady, whose failure is logged but not shown each time. */
  private async fetch(params: AttributionMatrixParams, background = false): Promise<AttributionMatrix | undefined> {
    try {
      const matrix = await this.session.sendRequest<AttributionMatrix | null>(Methods.attributionMatrix, params);
      return matrix && Array.isArray(matrix.tokens) && matrix.tokens.length > 0 ? matrix : undefined;
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      this.log.error(`whence/attributionMatrix failed: ${message}`);
      if (!background) {
        void vscode.window.showErrorMessage(`whence: could not get the attribution matrix: ${message}`);
      }
      return undefined;
    }
  }

  /** What the attribution scores mean and how well they agree with removing lines: the docs page the server names. */
  private async openDocs(): Promise<void> {
    const docs = this.matrix?.docs;
    if (!docs) {
      void vscode.window.showInformationMessage(`whence: ${this.matrix?.note ?? 'no documentation for this method'}`);
      return;
    }
    const uri = vscode.Uri.parse(docs);
    if (uri.path.endsWith('.md')) {
      await vscode.commands.executeCommand('markdown.showPreview', uri);
    } else {
      await vscode.commands.executeCommand('vscode.open', uri);
    }
  }

  /** A self-contained HTML page of this record (the server renders it, as `whence-ls explain --html` does). */
  private async exportHtml(): Promise<void> {
    if (!this.target || !this.matrix) {
      return;
    }
    let answer: { html: string } | null = null;
    try {
      answer = await this.session.sendRequest<{ html: string } | null>(Methods.matrixHtml, {
        textDocument: this.target.params.textDocument,
        recordId: this.matrix.recordId,
      });
    } catch (error) {
      void vscode.window.showErrorMessage(`whence: could not export the matrix: ${error instanceof Error ? error.message : String(error)}`);
      return;
    }
    if (!answer?.html) {
      return;
    }
    const base = path.basename(this.target.documentUri.path).replace(/\.[^.]+$/, '');
    const folder = vscode.workspace.getWorkspaceFolder(this.target.documentUri)?.uri ?? vscode.Uri.joinPath(this.target.documentUri, '..');
    const destination = await vscode.window.showSaveDialog({
      defaultUri: vscode.Uri.joinPath(folder, `${base}-attribution.html`),
      filters: { HTML: ['html'] },
    });
    if (!destination) {
      return;
    }
    await vscode.workspace.fs.writeFile(destination, Buffer.from(answer.html, 'utf8'));
    void vscode.window.showInformationMessage(`whence: attribution matrix saved to ${vscode.workspace.asRelativePath(destination)}`);
  }

  private ensurePanel(editorColumn: vscode.ViewColumn): void {
    if (this.panel) {
      this.panel.reveal(undefined, true);
      return;
    }
    this.panel = vscode.window.createWebviewPanel(
      AttributionMatrixPanel.viewType,
      'whence: attribution matrix',
      { viewColumn: editorColumn === vscode.ViewColumn.One ? vscode.ViewColumn.Two : vscode.ViewColumn.One, preserveFocus: true },
      { enableScripts: true, localResourceRoots: [] },
    );
    this.panel.webview.onDidReceiveMessage((message) => void this.onPageMessage(message));
    this.panel.onDidDispose(() => {
      this.panel = undefined;
      if (this.matrix) {
        // the server builds the watched record's matrix for each of its rowsReady: not for a closed panel
        this.session.notify(Methods.unwatchMatrix, { recordId: this.matrix.recordId });
      }
      this.matrix = undefined;
      this.target = undefined;
    });
  }

  private render(): void {
    if (!this.panel || !this.matrix || !this.target) {
      return;
    }
    this.panel.title = `whence: attribution matrix (${path.basename(this.target.documentUri.path)})`;
    this.panel.webview.html = renderMatrixHtml(this.matrix, {
      cspSource: this.panel.webview.cspSource,
      nonce: randomBytes(16).toString('base64'),
      documentLabel: vscode.workspace.asRelativePath(this.target.documentUri),
    });
  }

  private async onPageMessage(raw: unknown): Promise<void> {
    if (!this.matrix || !this.target) {
      return;
    }
    const message = parseMatrixPageMessage(raw, this.matrix);
    if (!message) {
      return;
    }
    if (message.type === 'openDocs') {
      await this.openDocs();
      return;
    }
    if (message.type === 'exportHtml') {
      await this.exportHtml();
      return;
    }
    const unit = message.type === 'revealUnit' ? this.matrix.units[message.unit] : undefined;
    if (unit && !unit.range) {
      // another file's snippet: open that file at the source's line
      if (unit.uri) {
        const line = new vscode.Position(unit.line ?? 0, 0);
        await vscode.window.showTextDocument(vscode.Uri.parse(unit.uri), {
          viewColumn: this.target.editorColumn,
          selection: new vscode.Range(line, line),
          preserveFocus: false,
        });
      }
      return;
    }
    const range =
      message.type === 'revealUnit'
        ? toVsRange(unit?.range ?? this.matrix.tokens[0].range)
        : toVsRange(this.matrix.tokens[message.token].range);
    const editor = await vscode.window.showTextDocument(this.target.documentUri, {
      viewColumn: this.target.editorColumn,
      selection: range,
      preserveFocus: false,
    });
    editor.revealRange(range, vscode.TextEditorRevealType.InCenterIfOutsideViewport);
  }
}
