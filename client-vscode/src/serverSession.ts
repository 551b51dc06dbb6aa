// Owns the language client: finds the server, starts it over stdio, restarts it, and wires the
// few places where the client adds to what vscode-languageclient does natively (the
// whence/status notification, completionShown, client-side commands the server names, and
// keeping client-only settings away from the server).

import * as vscode from 'vscode';
import {
  DidChangeConfigurationNotification,
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  RevealOutputChannelOn,
  ServerOptions,
  State,
  TransportKind,
} from 'vscode-languageclient/node';
import { ClientSideServerCommands, Methods, RowsReady, ServerCommands, SHOW_FEATURE_COMMAND, WhenceStatus } from './protocol';
import { locateServer, ServerLaunch } from './serverLocator';
import { serverSectionOnly, serverSettingsFrom, SERVER_SETTING_KEYS } from './settings';
import { ServerStatusBar } from './statusBar';
import { parseRowsReady } from './rowsReady';
import { parseStatus } from './statusPresentation';

/** Languages the server has grammars for (its tree-sitter set). */
export const SERVED_LANGUAGES = [
  'python',
  'javascript',
  'javascriptreact',
  'typescript',
  'typescriptreact',
  'go',
  'rust',
  'java',
  'c',
  'cpp',
];

export type ClientSideCommandHandler = (...args: unknown[]) => unknown;

interface PythonExtensionApi {
  environments?: {
    getActiveEnvironmentPath?: (resource?: vscode.Uri) => { path?: string } | undefined;
  };
}

export class ServerSession implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private launch: ServerLaunch | undefined;
  private ownCommandRegistrations: vscode.Disposable[] = [];
  private readonly disposables: vscode.Disposable[] = [];
  private stopping = false;
  private readonly readyEmitter = new vscode.EventEmitter<void>();
  /** Fires whenever the server reports `ready`, e.g. to refresh views that were empty while loading. */
  readonly onDidBecomeReady = this.readyEmitter.event;
  private readonly rowsReadyEmitter = new vscode.EventEmitter<RowsReady>();
  /** Fires when the server pushes `whence/rowsReady`: views showing pending rows refresh then, never on a timer. */
  readonly onRowsReady = this.rowsReadyEmitter.event;
  private readonly retentionEmitter = new vscode.EventEmitter<void>();
  /** Fires when the server pushes `whence/retention` (a checkpoint is committed): the retention view refreshes. */
  readonly onRetention = this.retentionEmitter.event;

  /** LSP message trace, filled when `whence.trace.server` is not "off". */
  private readonly traceLog = vscode.window.createOutputChannel('whence (LSP trace)', { log: true });

  constructor(
    private readonly log: vscode.LogOutputChannel,
    private readonly statusBar: ServerStatusBar,
    private readonly clientSideCommands: ReadonlyMap<string, ClientSideCommandHandler>,
  ) {
    this.disposables.push(
      this.readyEmitter,
      this.rowsReadyEmitter,
      this.retentionEmitter,
      this.traceLog,
      vscode.workspace.onDidChangeConfiguration((event) => this.onConfigurationChanged(event)),
    );
  }

  /** The running client, or an error that says what to do. */
  requireClient(): LanguageClient {
    if (!this.client || !this.client.isRunning()) {
      throw new Error('The whence server is not running; see the whence log, or run "whence: Restart server".');
    }
    return this.client;
  }

  get isReady(): boolean {
    return this.statusBar.status.state === 'ready' && !!this.client?.isRunning();
  }

  async sendRequest<R>(method: string, params: unknown, token?: vscode.CancellationToken): Promise<R> {
    const client = this.requireClient();
    // An explicit `undefined` token would be sent as a second positional parameter, turning
    // the params object into an array on the wire.
    return token ? client.sendRequest<R>(method, params, token) : client.sendRequest<R>(method, params);
  }

  /** A notification to the server; dropped when it is not running (nothing to tell it then). */
  notify(method: string, params: unknown): void {
    if (this.client?.isRunning()) {
      void this.client.sendNotification(method, params).catch(() => undefined);
    }
  }

  async executeServerCommand<R>(command: string, args: unknown[]): Promise<R> {
    return this.requireClient().sendRequest(ExecuteCommandRequest.type, { command, arguments: args }) as Promise<R>;
  }

  async start(): Promise<void> {
    this.statusBar.update({ state: 'starting', message: 'Looking for the whence-ls server.' });
    let launch: ServerLaunch;
    try {
      launch = await locateServer({
        configuredCommand: vscode.workspace.getConfiguration('whence').get('server.command'),
        selectedInterpreter: await selectedPythonInterpreter(),
        workspaceFolders: (vscode.workspace.workspaceFolders ?? []).map((folder) => folder.uri.fsPath),
        platform: process.platform,
      });
    } catch (error) {
      this.fail(error instanceof Error ? error.message : String(error));
      return;
    }
    this.launch = launch;
    this.log.info(`Starting the whence server (${launch.source}): ${[launch.command, ...launch.args].join(' ')}`);
    this.statusBar.update({ state: 'starting', message: `Starting ${launch.command} (${launch.source}).` });

    const workspaceFolder = vscode.workspace.workspaceFolders?.[0];
    const serverOptions: ServerOptions = {
      command: launch.command,
      args: launch.args,
      transport: TransportKind.stdio,
      options: { cwd: workspaceFolder?.uri.fsPath },
    };
    const client = new LanguageClient('whence', 'whence', serverOptions, this.clientOptions());
    this.client = client;
    client.onNotification(Methods.status, (payload: unknown) => this.onServerStatus(parseStatus(payload)));
    client.onNotification(Methods.rowsReady, (payload: unknown) => {
      const rows = parseRowsReady(payload);
      if (rows) {
        this.rowsReadyEmitter.fire(rows);
      }
    });
    client.onNotification(Methods.retention, () => this.retentionEmitter.fire());
    client.onDidChangeState((event) => {
      if (event.newState === State.Stopped && !this.stopping && this.client === client) {
        this.statusBar.update({
          state: 'stopped',
          message: 'The server process has stopped; its log says why. Run "whence: Restart server" to start it again.',
        });
      }
    });

    try {
      await client.start();
    } catch (error) {
      this.fail(
        `The whence server did not start (${launch.source}: ${[launch.command, ...launch.args].join(' ')}): ${
          error instanceof Error ? error.message : String(error)
        }`,
      );
      return;
    }
    this.registerClientSideCommands(client);
    await this.fetchStatus(client);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  async stop(): Promise<void> {
    this.disposeOwnCommands();
    const client = this.client;
    this.client = undefined;
    if (!client) {
      return;
    }
    this.stopping = true;
    try {
      if (client.isRunning()) {
        await client.stop(5_000);
      }
    } catch (error) {
      this.log.warn(`Stopping the whence server: ${error instanceof Error ? error.message : String(error)}`);
    } finally {
      this.stopping = false;
      await client.dispose().catch(() => undefined);
    }
  }

  dispose(): void {
    void this.stop();
    this.disposables.forEach((disposable) => disposable.dispose());
  }

  private clientOptions(): LanguageClientOptions {
    const clientSide = this.clientSideCommands;
    return {
      documentSelector: SERVED_LANGUAGES.map((language) => ({ scheme: 'file', language })),
      outputChannel: this.log,
      traceOutputChannel: this.traceLog,
      revealOutputChannelOn: RevealOutputChannelOn.Never,
      // the status bar item renders whence/status (load progress included), so the server sends
      // no work-done progress of its own: one whence item in the status bar, not two
      initializationOptions: () => ({ ...currentServerSettings(), clientRendersStatus: true }),
      // hovers may run exactly one command from a link: the server's "why this and not the runner-up"
      markdown: { isTrusted: { enabledCommands: [ServerCommands.explainContrast, SHOW_FEATURE_COMMAND] }, supportHtml: false },
      middleware: {
        provideInlineCompletionItems: async (document, position, context, token, next) => {
          const result = await next(document, position, context, token);
          const items = Array.isArray(result) ? result : result?.items ?? [];
          for (const item of items) {
            const completionId = item.command?.command === ServerCommands.acceptCompletion ? item.command.arguments?.[0] : undefined;
            if (completionId !== undefined) {
              this.notify(Methods.completionShown, { completionId });
            }
          }
          return result;
        },
        executeCommand: async (command, args, next) => {
          const handler = clientSide.get(command);
          if (handler) {
            return handler(...args);
          }
          const result = await next(command, args);
          if (command === ServerCommands.acceptCompletion) {
            // the part accepted may have been the first lines of a longer completion (its time
            // budget ran out): ask at once, the server answers the rest from what it kept
            void vscode.commands.executeCommand('editor.action.inlineSuggest.trigger');
          }
          return result;
        },
        workspace: {
          configuration: async (params, token, next) => {
            const answers = await next(params, token);
            if (!Array.isArray(answers)) {
              return answers;
            }
            return answers.map((answer, index) =>
              params.items[index]?.section === 'whence' ? serverSectionOnly(answer) : answer,
            );
          },
        },
      },
    };
  }

  /**
   * The server names `whence.showAttributionMatrix` and `whence.openTracedSource` in its lenses and
   * actions. When it also lists them in executeCommandProvider, the language client has
   * registered them and `executeCommand` middleware routes them here; otherwise nothing has, and
   * the client registers them itself.
   */
  private registerClientSideCommands(client: LanguageClient): void {
    this.disposeOwnCommands();
    const listedByServer = new Set(client.initializeResult?.capabilities.executeCommandProvider?.commands ?? []);
    for (const command of Object.values(ClientSideServerCommands)) {
      const handler = this.clientSideCommands.get(command);
      if (handler && !listedByServer.has(command)) {
        this.ownCommandRegistrations.push(vscode.commands.registerCommand(command, handler));
      }
    }
  }

  private disposeOwnCommands(): void {
    this.ownCommandRegistrations.forEach((registration) => registration.dispose());
    this.ownCommandRegistrations = [];
  }

  private async fetchStatus(client: LanguageClient): Promise<void> {
    try {
      const status = await client.sendRequest<unknown>(Methods.status, {});
      // A notification may have overtaken the answer; only fill in when nothing newer arrived.
      if (this.statusBar.status.state === 'starting') {
        this.onServerStatus(parseStatus(status));
      }
    } catch (error) {
      this.log.warn(`whence/status request failed: ${error instanceof Error ? error.message : String(error)}`);
      if (this.statusBar.status.state === 'starting') {
        this.statusBar.update({ state: 'loading', message: 'The server is running; it has not reported its state.' });
      }
    }
  }

  private onServerStatus(status: WhenceStatus): void {
    const previous = this.statusBar.status.state;
    this.statusBar.update(status);
    if (status.state === 'error') {
      this.log.error(`Server error: ${status.message ?? '(no message)'}`);
    } else if (status.state === 'ready' && previous !== 'ready') {
      this.log.info(`Server ready: model ${status.model ?? '?'} on ${status.device ?? '?'}`);
      this.readyEmitter.fire();
    }
  }

  private fail(message: string): void {
    this.log.error(message);
    this.statusBar.update({ state: 'error', message });
    void vscode.window.showErrorMessage(`whence: ${message.split('\n')[0]}`, 'Open log').then((choice) => {
      if (choice === 'Open log') {
        this.log.show(true);
      }
    });
  }

  private onConfigurationChanged(event: vscode.ConfigurationChangeEvent): void {
    if (event.affectsConfiguration('whence.server.command')) {
      this.log.info('"whence.server.command" changed; restarting the server.');
      void this.restart();
      return;
    }
    if (SERVER_SETTING_KEYS.some((key) => event.affectsConfiguration(`whence.${key}`)) && this.client?.isRunning()) {
      void this.client
        .sendNotification(DidChangeConfigurationNotification.type, { settings: { whence: currentServerSettings() } })
        .catch((error) => this.log.warn(`Sending settings: ${String(error)}`));
    }
  }

  describeLaunch(): string {
    return this.launch ? `${[this.launch.command, ...this.launch.args].join(' ')} (${this.launch.source})` : 'not started';
  }
}

export function currentServerSettings() {
  const config = vscode.workspace.getConfiguration('whence');
  return serverSettingsFrom((key) => config.get(key));
}

/** The interpreter selected through the Python extension, if it is installed and has one. */
async function selectedPythonInterpreter(): Promise<string | undefined> {
  const extension = vscode.extensions.getExtension<PythonExtensionApi>('ms-python.python');
  if (extension) {
    try {
      const api = extension.isActive ? extension.exports : await extension.activate();
      const folder = vscode.workspace.workspaceFolders?.[0]?.uri;
      const selected = api?.environments?.getActiveEnvironmentPath?.(folder)?.path;
      if (selected) {
        return selected;
      }
    } catch {
      // The Python extension is optional; without it we fall back to the workspace .venv.
    }
  }
  const configured = vscode.workspace.getConfiguration('python').get<string>('defaultInterpreterPath');
  // "python" is the Python extension's placeholder default, not a choice the user made.
  return configured && configured !== 'python' ? configured : undefined;
}
