// Finds how to start the whence-ls server, in the order the user most likely means: an explicit
// `whence.server.command`, then the Python interpreter selected in VS Code, then a `.venv` in a
// workspace folder. Interpreters are only used when they can import whence_ls, so that a selected
// interpreter without the server does not shadow a working `.venv`. No `vscode` import: the
// extension passes in what it knows.

import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';

export interface ServerLaunch {
  command: string;
  args: string[];
  /** Where this launch came from, for the log and for error messages. */
  source: string;
}

export interface LocatorInputs {
  /** `whence.server.command`: an argv array, or a string split on whitespace. */
  configuredCommand: unknown;
  /** Path of the Python interpreter selected in VS Code, if any. */
  selectedInterpreter?: string;
  workspaceFolders: readonly string[];
  platform: NodeJS.Platform;
}

export type ProbeResult = { ok: true } | { ok: false; reason: string };
export type PythonProbe = (python: string) => Promise<ProbeResult>;

export const SERVE_ARGS = ['-m', 'whence_ls', 'serve'];

export class ServerNotFoundError extends Error {
  constructor(readonly tried: readonly string[]) {
    super(
      'Could not find the whence-ls server. Set "whence.server.command" (for example ' +
        '["/path/to/.venv/bin/python", "-m", "whence_ls", "serve"]), select a Python interpreter ' +
        'that has whence-ls installed, or create a .venv in the workspace. Tried:\n' +
        (tried.length > 0 ? tried.map((line) => `  - ${line}`).join('\n') : '  (nothing to try)'),
    );
    this.name = 'ServerNotFoundError';
  }
}

/** The configured command as argv, or undefined when unset; throws on a malformed value. */
export function configuredArgv(value: unknown): string[] | undefined {
  if (value === undefined || value === null || value === '') {
    return undefined;
  }
  if (typeof value === 'string') {
    const argv = value.trim().split(/\s+/).filter((part) => part.length > 0);
    return argv.length > 0 ? argv : undefined;
  }
  if (Array.isArray(value) && value.every((part) => typeof part === 'string')) {
    return value.length > 0 ? [...value] : undefined;
  }
  throw new Error(`"whence.server.command" must be an array of strings, got ${JSON.stringify(value)}`);
}

export function venvPython(folder: string, platform: NodeJS.Platform): string {
  return platform === 'win32'
    ? path.win32.join(folder, '.venv', 'Scripts', 'python.exe')
    : path.posix.join(folder, '.venv', 'bin', 'python');
}

/** Interpreter candidates in priority order, without duplicates. */
export function interpreterCandidates(inputs: LocatorInputs): { python: string; source: string }[] {
  const candidates: { python: string; source: string }[] = [];
  const seen = new Set<string>();
  const add = (python: string, source: string) => {
    if (!seen.has(python)) {
      seen.add(python);
      candidates.push({ python, source });
    }
  };
  if (inputs.selectedInterpreter) {
    add(inputs.selectedInterpreter, 'selected Python interpreter');
  }
  for (const folder of inputs.workspaceFolders) {
    add(venvPython(folder, inputs.platform), `workspace .venv of ${folder}`);
  }
  return candidates;
}

/** Runs the interpreter once to check that it exists and can import whence_ls. */
export const probePython: PythonProbe = (python) =>
  new Promise((resolve) => {
    if (path.isAbsolute(python) && !existsSync(python)) {
      resolve({ ok: false, reason: 'does not exist' });
      return;
    }
    execFile(
      python,
      ['-c', 'import importlib.util, sys; sys.exit(0 if importlib.util.find_spec("whence_ls") else 3)'],
      { timeout: 20_000 },
      (error) => {
        if (!error) {
          resolve({ ok: true });
        } else if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
          resolve({ ok: false, reason: 'cannot be executed (not found)' });
        } else if ((error as { code?: unknown }).code === 3) {
          resolve({ ok: false, reason: 'runs, but whence_ls is not installed in it' });
        } else {
          resolve({ ok: false, reason: `failed: ${error.message.split('\n')[0]}` });
        }
      },
    );
  });

export async function locateServer(inputs: LocatorInputs, probe: PythonProbe = probePython): Promise<ServerLaunch> {
  const argv = configuredArgv(inputs.configuredCommand);
  if (argv) {
    // An explicit command is the user's decision; if it fails, the start error says so.
    return { command: argv[0], args: argv.slice(1), source: 'setting "whence.server.command"' };
  }
  const tried: string[] = [];
  for (const candidate of interpreterCandidates(inputs)) {
    const result = await probe(candidate.python);
    if (result.ok) {
      return { command: candidate.python, args: [...SERVE_ARGS], source: candidate.source };
    }
    tried.push(`${candidate.source}: ${candidate.python} ${result.reason}`);
  }
  throw new ServerNotFoundError(tried);
}
