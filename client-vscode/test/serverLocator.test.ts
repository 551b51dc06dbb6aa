import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import {
  configuredArgv,
  interpreterCandidates,
  locateServer,
  probePython,
  ProbeResult,
  ServerNotFoundError,
  venvPython,
} from '../src/serverLocator';

const repoRoot = path.resolve(__dirname, '..', '..', '..');
const repoVenvPython = path.join(repoRoot, '.venv', 'bin', 'python');

test('an explicit command wins and is used as given', async () => {
  const launch = await locateServer(
    { configuredCommand: ['/opt/whence/bin/whence-ls', 'serve'], selectedInterpreter: '/usr/bin/python3', workspaceFolders: ['/w'], platform: 'linux' },
    async () => assert.fail('an explicit command must not be probed'),
  );
  assert.deepEqual([launch.command, ...launch.args], ['/opt/whence/bin/whence-ls', 'serve']);
  assert.match(launch.source, /whence\.server\.command/);
});

test('configured commands: arrays, whitespace strings, unset, and rejected shapes', () => {
  assert.deepEqual(configuredArgv(['a', 'b']), ['a', 'b']);
  assert.deepEqual(configuredArgv(' whence-ls  serve '), ['whence-ls', 'serve']);
  assert.equal(configuredArgv([]), undefined);
  assert.equal(configuredArgv(''), undefined);
  assert.equal(configuredArgv(null), undefined);
  assert.throws(() => configuredArgv([1, 2]), /array of strings/);
});

test('the selected interpreter comes before workspace .venvs, and one that lacks whence_ls is skipped', async () => {
  const inputs = { configuredCommand: [], selectedInterpreter: '/usr/bin/python3', workspaceFolders: ['/w1', '/w2'], platform: 'linux' as const };
  assert.deepEqual(
    interpreterCandidates(inputs).map((candidate) => candidate.python),
    ['/usr/bin/python3', '/w1/.venv/bin/python', '/w2/.venv/bin/python'],
  );
  const probed: string[] = [];
  const launch = await locateServer(inputs, async (python): Promise<ProbeResult> => {
    probed.push(python);
    return python === '/w2/.venv/bin/python' ? { ok: true } : { ok: false, reason: 'lacks whence_ls' };
  });
  assert.deepEqual(probed, ['/usr/bin/python3', '/w1/.venv/bin/python', '/w2/.venv/bin/python']);
  assert.deepEqual([launch.command, ...launch.args], ['/w2/.venv/bin/python', '-m', 'whence_ls', 'serve']);
});

test('when nothing works, the error lists every attempt and how to fix it', async () => {
  await assert.rejects(
    locateServer({ configuredCommand: undefined, workspaceFolders: ['/nowhere'], platform: 'linux' }, async () => ({ ok: false, reason: 'does not exist' })),
    (error: unknown) => {
      assert.ok(error instanceof ServerNotFoundError);
      assert.match(error.message, /whence\.server\.command/);
      assert.match(error.message, /\/nowhere\/\.venv\/bin\/python does not exist/);
      return true;
    },
  );
});

test('Windows venvs live under Scripts', () => {
  assert.equal(venvPython('C:\\w', 'win32'), 'C:\\w\\.venv\\Scripts\\python.exe');
});

test('the real probe: a missing interpreter, and one without whence_ls', async () => {
  assert.deepEqual(await probePython('/nonexistent/bin/python'), { ok: false, reason: 'does not exist' });
  // A bare venv-less directory layout: python3 itself exists but (outside the project venv) has no whence_ls.
  const system = await probePython('/usr/bin/python3');
  if (existsSync('/usr/bin/python3')) {
    assert.deepEqual(system, { ok: false, reason: 'runs, but whence_ls is not installed in it' });
  }
});

test('the real probe finds the project .venv through a workspace folder', { skip: !existsSync(repoVenvPython) && 'no project .venv' }, async (t) => {
  const probe = await probePython(repoVenvPython);
  if (!probe.ok) {
    t.skip(`the project .venv has no whence_ls yet (${probe.reason})`);
    return;
  }
  // A workspace whose .venv is the project's: found through the workspace-folder rule.
  const workspace = mkdtempSync(path.join(tmpdir(), 'whence-locator-'));
  mkdirSync(path.join(workspace, 'sub'));
  symlinkSync(path.join(repoRoot, '.venv'), path.join(workspace, '.venv'));
  const launch = await locateServer({ configuredCommand: [], workspaceFolders: [path.join(workspace, 'sub'), workspace], platform: 'linux' });
  assert.equal(launch.command, path.join(workspace, '.venv', 'bin', 'python'));
  assert.match(launch.source, /workspace \.venv/);
});
