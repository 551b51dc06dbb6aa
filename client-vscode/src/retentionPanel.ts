// "whence: Show what I kept": the retention view. It asks the server for the report of the
// workspace's provenance log (acceptance, retention at each checkpoint, edit rate by flag score,
// the most rewritten completions), shows it in a webview, asks again when the server commits a
// retention checkpoint (`whence/retention`), opens linked completions, and exports the report as
// a standalone HTML file in the workspace's .whence/.

import { randomBytes } from 'node:crypto';
import * as vscode from 'vscode';
import { Methods } from './protocol';
import { parseRetentionMessage, parseRetentionReport, renderRetentionWebview, RetentionReport } from './retentionHtml';
import type { ServerSession } from './serverSession';

export const EXPORT_FILE = 'retention-report.html';

export class RetentionPanel implements vscode.Disposable {
  static readonly viewType = 'whence.retention';
  private panel: vscode.WebviewPanel | undefined;
  private report: RetentionReport | undefined;
  private refreshTimer: NodeJS.Timeout | undefined;
  private readonly subscription: vscode.Disposable;

  constructor(private readonly session: ServerSession, private readonly log: vscode.LogOutputChannel) {
    this.subscription = session.onRetention(() => this.scheduleRefresh());
  }

  async show(): Promise<void> {
    if (!(await this.fetch())) {
      return;
    }
    if (!this.panel) {
      this.panel = vscode.window.createWebviewPanel(RetentionPanel.viewType, 'whence: what I kept', vscode.ViewColumn.Beside,
        { enableScripts: true, localResourceRoots: [], retainContextWhenHidden: false });
      this.panel.onDidDispose(() => (this.panel = undefined));
      this.panel.webview.onDidReceiveMessage((message) => void this.onMessage(message));
    }
    this.render();
    this.panel.reveal(undefined, false);
  }

  /** Writes the standalone report next to the provenance log; returns its path. */
  async exportHtml(): Promise<vscode.Uri | undefined> {
    if (!(await this.fetch()) || !this.report) {
      return undefined;
    }
    const logUri = vscode.Uri.file(this.report.log);
    const target = vscode.Uri.joinPath(logUri, '..', EXPORT_FILE);
    await vscode.workspace.fs.writeFile(target, Buffer.from(this.report.page, 'utf8'));
    this.log.info(`Retention report exported to ${target.fsPath}`);
    void vscode.window.showInformationMessage(`whence: report exported to ${target.fsPath}`);
    return target;
  }

  dispose(): void {
    this.subscription.dispose();
    if (this.refreshTimer) {
      clearTimeout(this.refreshTimer);
    }
    this.panel?.dispose();
  }

  private async fetch(): Promise<boolean> {
    try {
      const report = parseRetentionReport(await this.session.sendRequest<unknown>(Methods.retentionReport, {}));
      if (!report) {
        throw new Error('the server answered something that is not a report');
      }
      this.report = report;
      return true;
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      this.log.error(`whence/retentionReport failed: ${message}`);
      void vscode.window.showErrorMessage(`whence: ${message}`);
      return false;
    }
  }

  private render(): void {
    if (this.panel && this.report) {
      this.panel.webview.html = renderRetentionWebview(this.report, this.panel.webview.cspSource, randomBytes(16).toString('base64'));
    }
  }

  /** Checkpoints come in bursts (a save checkpoints every completion of the file): one refresh each burst. */
  private scheduleRefresh(): void {
    if (!this.panel || this.refreshTimer) {
      return;
    }
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = undefined;
      void this.fetch().then((ok) => ok && this.render());
    }, 500);
  }

  private async onMessage(value: unknown): Promise<void> {
    const message = parseRetentionMessage(value);
    if (message?.kind === 'export') {
      await this.exportHtml();
    } else if (message?.kind === 'open') {
      const at = new vscode.Position(message.line, 0);
      await vscode.window.showTextDocument(vscode.Uri.parse(message.uri), { viewColumn: vscode.ViewColumn.One, selection: new vscode.Range(at, at) });
    }
  }
}
