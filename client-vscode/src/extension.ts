// Entry point: builds the pieces and registers the palette commands. Everything the server
// provides through standard LSP (inline completions, hovers, diagnostics, code lenses, code
// actions, progress) is rendered natively by vscode-languageclient; this file only adds the
// whence/... parts.

import * as vscode from 'vscode';
import { ContextTint } from './contextTint';
import { toVsRange } from './lspRange';
import { FeaturePanel, SHOW_FEATURE_COMMAND } from './featurePanel';
import { AttributionMatrixPanel } from './matrixPanel';
import { RetentionPanel } from './retentionPanel';
import { ClientSideServerCommands, ExplainLineResult, ServerCommands } from './protocol';
import { ClientSideCommandHandler, SERVED_LANGUAGES, ServerSession } from './serverSession';
import { ServerStatusBar, SHOW_LOG_COMMAND } from './statusBar';
import { TracedSourceView } from './tracedSourceView';

/** Palette commands; their ids differ from the server's so the two can never collide. */
export const ClientCommands = {
  explainLine: 'whence.client.explainLine',
  showAttributionMatrix: 'whence.client.showAttributionMatrix',
  restartServer: 'whence.client.restartServer',
  showServerLog: SHOW_LOG_COMMAND,
  showRetention: 'whence.client.showRetention',
  exportRetention: 'whence.client.exportRetention',
} as const;

let session: ServerSession | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const log = vscode.window.createOutputChannel('whence', { log: true });
  const statusBar = new ServerStatusBar();
  // Handlers are looked up lazily so that the session can be built before the views that need it.
  const clientSideCommands = new Map<string, ClientSideCommandHandler>();
  session = new ServerSession(log, statusBar, clientSideCommands);
  const matrixPanel = new AttributionMatrixPanel(session, log);
  const tracedSources = new TracedSourceView(session, log);
  const tint = new ContextTint(session, log);
  const featurePanel = new FeaturePanel(session, log);
  const retentionPanel = new RetentionPanel(session, log);
  clientSideCommands.set(ClientSideServerCommands.showAttributionMatrix, (...args) => matrixPanel.show(...args));
  clientSideCommands.set(ClientSideServerCommands.openTracedSource, (...args) => tracedSources.open(...args));

  const activeSession = session;
  context.subscriptions.push(
    log,
    statusBar,
    activeSession,
    matrixPanel,
    tracedSources,
    tint,
    featurePanel,
    retentionPanel,
    vscode.commands.registerCommand(ClientCommands.showRetention, () => retentionPanel.show()),
    vscode.commands.registerCommand(ClientCommands.exportRetention, () => retentionPanel.exportHtml()),
    // opened from the "saw:" links of a hover (the server's markdown names it)
    vscode.commands.registerCommand(SHOW_FEATURE_COMMAND, (arg: unknown) => featurePanel.show(arg)),
    vscode.commands.registerCommand(ClientCommands.showServerLog, () => log.show(true)),
    vscode.commands.registerCommand(ClientCommands.restartServer, async () => {
      log.info('Restart requested.');
      await activeSession.restart();
    }),
    vscode.commands.registerCommand(ClientCommands.showAttributionMatrix, () => matrixPanel.show()),
    vscode.commands.registerCommand(ClientCommands.explainLine, () => explainCurrentLine(activeSession, log)),
  );

  // The editor context menu entries only make sense where the server works.
  await vscode.commands.executeCommand('setContext', 'whence.servedLanguages', SERVED_LANGUAGES);
  await activeSession.start();
}

export async function deactivate(): Promise<void> {
  await session?.stop();
  session = undefined;
}

/**
 * "whence: Explain this line": the server analyses the line as if it had generated it; the
 * answer's hover, diagnostics and lens then appear like those of a completion. The hover is
 * opened at the explained range so that the result is seen without hunting for it.
 */
async function explainCurrentLine(activeSession: ServerSession, log: vscode.LogOutputChannel): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  if (!editor) {
    void vscode.window.showWarningMessage('whence: open a file and put the cursor on the line to explain.');
    return;
  }
  const line = editor.selection.active.line;
  let result: ExplainLineResult | null;
  try {
    result = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Window, title: `whence: explaining line ${line + 1}` },
      () =>
        activeSession.executeServerCommand<ExplainLineResult | null>(ServerCommands.explainLine, [
          { uri: editor.document.uri.toString(), line },
        ]),
    );
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    log.error(`whence.explainLine failed: ${message}`);
    void vscode.window.showErrorMessage(`whence: could not explain line ${line + 1}: ${message}`);
    return;
  }
  if (!result || !result.range) {
    void vscode.window.showInformationMessage(
      `whence: nothing to explain on line ${line + 1} (empty line, or the model is still loading).`,
    );
    return;
  }
  log.info(`Explained line ${line + 1} as record ${result.recordId}`);
  if (vscode.window.activeTextEditor === editor) {
    const explained = toVsRange(result.range);
    // The hover needs the cursor on a token: keep it where the user put it if that is inside the
    // explained range, else move it to the range's first non-blank character (the range starts
    // at column 0, on the indentation).
    if (!explained.contains(editor.selection.active) || isBlankAt(editor.document, editor.selection.active)) {
      const lineText = editor.document.lineAt(explained.start.line).text;
      const firstNonBlank = Math.max(explained.start.character, lineText.search(/\S|$/));
      const target = new vscode.Position(explained.start.line, firstNonBlank);
      editor.selection = new vscode.Selection(target, target);
    }
    await vscode.commands.executeCommand('editor.action.showHover');
  }
}

function isBlankAt(document: vscode.TextDocument, position: vscode.Position): boolean {
  const character = document.lineAt(position.line).text.charAt(position.character);
  return character === '' || /\s/.test(character);
}
