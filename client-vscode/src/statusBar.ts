// The status bar item that shows the server's state; clicking it opens the server log, which is
// where the reason for an error is.

import * as vscode from 'vscode';
import { ClientStatus, presentStatus } from './statusPresentation';

export const SHOW_LOG_COMMAND = 'whence.client.showServerLog';

export class ServerStatusBar implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;
  private current: ClientStatus = { state: 'starting' };

  constructor() {
    this.item = vscode.window.createStatusBarItem('whence.status', vscode.StatusBarAlignment.Right, 100);
    this.item.name = 'whence server';
    this.item.command = SHOW_LOG_COMMAND;
    this.update(this.current);
    this.item.show();
  }

  get status(): ClientStatus {
    return this.current;
  }

  update(status: ClientStatus): void {
    this.current = status;
    const presentation = presentStatus(status);
    this.item.text = presentation.text;
    this.item.tooltip = presentation.tooltip;
    this.item.backgroundColor = presentation.isError
      ? new vscode.ThemeColor('statusBarItem.errorBackground')
      : undefined;
  }

  dispose(): void {
    this.item.dispose();
  }
}
