// Starts and stops a private code-server: its own user-data and extensions directories, no auth,
// 127.0.0.1 on a free port, in its own process group so that stopping it also ends the extension
// host and the language server it started.

import { spawn, execFile } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { createServer } from 'node:net';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Environment in which the code-server launcher finds Node 24 first. */
function codeServerEnv(node24Bin, extra = {}) {
  return { ...process.env, PATH: `${node24Bin}:${process.env.PATH}`, ...extra };
}

export async function installExtension({ codeServer, node24Bin, userDataDir, extensionsDir, configFile, vsix }) {
  const { stdout, stderr } = await execFileAsync(
    codeServer,
    ['--config', configFile, '--user-data-dir', userDataDir, '--extensions-dir', extensionsDir, '--force', '--install-extension', vsix],
    { env: codeServerEnv(node24Bin), timeout: 120_000 },
  );
  const output = `${stdout}\n${stderr}`;
  if (!/successfully installed/i.test(output)) {
    throw new Error(`code-server did not confirm installing ${vsix}:\n${output}`);
  }
  const listed = await execFileAsync(
    codeServer,
    ['--config', configFile, '--user-data-dir', userDataDir, '--extensions-dir', extensionsDir, '--list-extensions', '--show-versions'],
    { env: codeServerEnv(node24Bin), timeout: 60_000 },
  );
  return listed.stdout.trim();
}

export async function startCodeServer({ codeServer, node24Bin, userDataDir, extensionsDir, configFile, workspace, logFile, env = {} }) {
  const port = await freePort();
  const log = createWriteStream(logFile);
  const child = spawn(
    codeServer,
    [
      '--config', configFile,
      '--auth', 'none',
      '--bind-addr', `127.0.0.1:${port}`,
      '--user-data-dir', userDataDir,
      '--extensions-dir', extensionsDir,
      '--disable-telemetry',
      '--disable-update-check',
      '--disable-workspace-trust',
      '--disable-getting-started-override',
      '--ignore-last-opened',
      workspace,
    ],
    // detached: a new process group, so the whole tree can be stopped with one signal.
    { env: codeServerEnv(node24Bin, env), detached: true, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  let exited = null;
  child.on('exit', (code, signal) => {
    exited = { code, signal };
  });

  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (exited) {
      throw new Error(`code-server exited during start (${JSON.stringify(exited)}); see ${logFile}`);
    }
    try {
      const response = await fetch(`${url}/healthz`);
      if (response.ok) {
        break;
      }
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stopProcessGroup(child);
      throw new Error(`code-server did not answer on ${url}/healthz within 90 s; see ${logFile}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  return { url, port, child, stop: () => stopProcessGroup(child) };
}

/** SIGTERM to the group, then SIGKILL if it is still there after a grace period. */
export async function stopProcessGroup(child) {
  if (child.exitCode !== null || child.signalCode !== null) {
    return;
  }
  const gone = new Promise((resolve) => child.once('exit', resolve));
  try {
    process.kill(-child.pid, 'SIGTERM');
  } catch {
    return;
  }
  const timer = setTimeout(() => {
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }, 5_000);
  await gone;
  clearTimeout(timer);
  // The group may outlive its leader (the extension host, the language server).
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // the whole group is gone
  }
}
