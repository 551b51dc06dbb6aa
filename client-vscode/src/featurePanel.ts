// The page of one sparse-autoencoder feature in a webview, opened from the "saw:" links of a
// hover; featureHtml.ts renders it.

import { randomBytes } from 'node:crypto';
import * as vscode from 'vscode';
import { FeaturePage, parseFeatureArguments, renderFeatureHtml } from './featureHtml';
import { Methods } from './protocol';
import type { ServerSession } from './serverSession';

export { SHOW_FEATURE_COMMAND } from './protocol';

export class FeaturePanel implements vscode.Disposable {
  private panel: vscode.WebviewPanel | undefined;
  private page: FeaturePage | undefined;

  constructor(private readonly session: ServerSession, private readonly log: vscode.LogOutputChannel) {}

  async show(arg: unknown): Promise<void> {
    const args = parseFeatureArguments(arg);
    if (!args) {
      return;
    }
    try {
      this.page = await this.session.sendRequest<FeaturePage>(Methods.feature, args);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      this.log.error(`whence/feature failed: ${message}`);
      void vscode.window.showErrorMessage(`whence: ${message}`);
      return;
    }
    if (!this.panel) {
      this.panel = vscode.window.createWebviewPanel('whence.feature', 'whence: feature', { viewColumn: vscode.ViewColumn.Beside, preserveFocus: true },
        { enableScripts: true, localResourceRoots: [] });
      this.panel.onDidDispose(() => (this.panel = undefined));
      this.panel.webview.onDidReceiveMessage((message) => void this.onMessage(message));
    }
    this.panel.title = `whence: feature ${args.layer}/${args.feature}`;
    this.panel.webview.html = renderFeatureHtml(this.page, this.panel.webview.cspSource, randomBytes(16).toString('base64'));
    this.panel.reveal(undefined, true);
  }

  private async onMessage(message: unknown): Promise<void> {
    const index = (message as { source?: unknown })?.source;
    const source = Number.isInteger(index) ? this.page?.sources?.[index as number] : undefined;
    if (!source) {
      return;
    }
    const line = new vscode.Position(source.line, 0);
    await vscode.window.showTextDocument(vscode.Uri.parse(source.uri), { viewColumn: vscode.ViewColumn.One, selection: new vscode.Range(line, line) });
  }

  dispose(): void {
    this.panel?.dispose();
  }
}
