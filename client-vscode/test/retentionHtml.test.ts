import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseRetentionMessage, parseRetentionReport, renderRetentionWebview } from '../src/retentionHtml';

const report = {
  log: '/w/.whence/provenance.sqlite',
  summary: { acceptance: { shown: 4, accepted: 3, acceptedOfShown: 3, rate: 0.75 }, retention: [], editedTokens: 2, mostRewritten: [] },
  body: '<h1>What the programmer kept</h1><svg viewBox="0 0 1 1"></svg><a href="file:///w/a.py#L3" data-uri="file:///w/a.py" data-line="2">a.py:3</a>',
  style: 'body { margin: 0; }',
  page: '<!DOCTYPE html><html></html>',
};

test('the retention page wraps the server body with a strict CSP and one nonce script', () => {
  const parsed = parseRetentionReport(report)!;
  const html = renderRetentionWebview(parsed, 'vscode-webview://x', 'n0nce');
  assert.match(html, /script-src 'nonce-n0nce'/);
  assert.match(html, /default-src 'none'/);
  assert.equal([...html.matchAll(/<script([^>]*)>/g)].length, 1);
  assert.ok(html.includes(report.body));
  assert.match(html, /Export as HTML/);
  assert.match(html, /body \{ margin: 0; \}/);
});

test('a report without its parts is refused; page messages are checked', () => {
  assert.equal(parseRetentionReport({ summary: {} }), undefined);
  assert.equal(parseRetentionReport(null), undefined);
  assert.deepEqual(parseRetentionMessage({ open: { uri: 'file:///w/a.py', line: 2 } }), { kind: 'open', uri: 'file:///w/a.py', line: 2 });
  assert.deepEqual(parseRetentionMessage({ export: true }), { kind: 'export' });
  assert.equal(parseRetentionMessage({ open: { uri: 'https://evil.example/', line: 2 } }), undefined);
  assert.equal(parseRetentionMessage({ open: { uri: 'file:///w/a.py', line: -1 } }), undefined);
});
