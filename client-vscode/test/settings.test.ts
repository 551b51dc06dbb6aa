// The contract (docs/lsp-protocol.md), the client's defaults and package.json must agree on
// every server setting; these tests read the real files, so drift in any of them fails here.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { CLIENT_SETTING_KEYS, SERVER_SETTING_DEFAULTS, SERVER_SETTING_KEYS, serverSectionOnly, serverSettingsFrom } from '../src/settings';

// Compiled to out/test/, so the package root is two levels up.
const packageRoot = path.resolve(__dirname, '..', '..');
const packageJson = JSON.parse(readFileSync(path.join(packageRoot, 'package.json'), 'utf8'));
const contributed: Record<string, { default?: unknown; description?: string; markdownDescription?: string; enum?: unknown[] }> =
  packageJson.contributes.configuration.properties;

/** The settings table of the contract: key -> default as written there (JSON, or null when "`null` (...)"). */
function contractDefaults(): Map<string, unknown> {
  const doc = readFileSync(path.join(packageRoot, '..', 'docs', 'lsp-protocol.md'), 'utf8');
  const section = doc.split('## Settings')[1].split('\n## ')[0];
  const defaults = new Map<string, unknown>();
  for (const match of section.matchAll(/^\|\s*`(\w+)`\s*\|\s*`([^`]+)`/gm)) {
    defaults.set(match[1], JSON.parse(match[2]));
  }
  return defaults;
}

test('the client knows exactly the settings the contract lists, with the same defaults', () => {
  const fromContract = contractDefaults();
  assert.ok(fromContract.size >= 7, `parsed only ${fromContract.size} settings from the contract`);
  assert.deepEqual([...fromContract.keys()].sort(), [...SERVER_SETTING_KEYS].sort());
  for (const [key, value] of fromContract) {
    assert.deepEqual(SERVER_SETTING_DEFAULTS[key as keyof typeof SERVER_SETTING_DEFAULTS], value, key);
  }
});

test('package.json contributes every server setting with a description and the contract default', () => {
  for (const key of SERVER_SETTING_KEYS) {
    const property = contributed[`whence.${key}`];
    assert.ok(property, `whence.${key} is not contributed`);
    assert.ok((property.description ?? property.markdownDescription ?? '').length > 20, `whence.${key} lacks a description`);
    assert.ok('default' in property, `whence.${key} has no default`);
    assert.deepEqual(property.default, SERVER_SETTING_DEFAULTS[key], `whence.${key} default`);
    if (property.enum) {
      assert.ok(property.enum.includes(property.default), `whence.${key} default is not one of its values`);
    }
  }
});

test('the attribution methods offered are the ones the contract names', () => {
  const doc = readFileSync(path.join(packageRoot, '..', 'docs', 'lsp-protocol.md'), 'utf8');
  const row = doc.split('\n').find((line) => line.startsWith('| `attributionMethod`'))!;
  const named = [...row.split('|')[3].matchAll(/`(\w+)`/g)].map((match) => match[1]);
  // null (the engine's default) is offered too; the named methods must match exactly.
  const offered = (contributed['whence.attributionMethod'].enum as (string | null)[]).filter((value) => value !== null);
  assert.deepEqual([...offered].sort(), named.sort());
});

test('client-only settings are contributed too, and never sent to the server', () => {
  for (const key of CLIENT_SETTING_KEYS) {
    assert.ok(contributed[`whence.${key}`], `whence.${key} is not contributed`);
  }
  const section = {
    model: '',
    device: 'cpu',
    maxNewTokens: 16,
    server: { command: ['python'] },
    client: { tintContext: false },
    trace: { server: 'verbose' },
  };
  assert.deepEqual(serverSectionOnly(section), {
    ...SERVER_SETTING_DEFAULTS,
    model: null,
    device: 'cpu',
    maxNewTokens: 16,
  });
  assert.deepEqual(serverSettingsFrom(() => undefined), SERVER_SETTING_DEFAULTS);
});
