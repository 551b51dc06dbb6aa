import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseFeatureArguments, renderFeatureHtml } from '../src/featureHtml';

test('the feature page lists top snippets with the token marked, and this token\'s source lines', () => {
  const html = renderFeatureHtml(
    {
      layer: 10,
      feature: 123,
      label: '`return` after `:`',
      induction: true,
      frequency: 0.0123,
      examples: [{ path: 'json/decoder.py', line: 40, code: 'return obj, end', token: ' return', activation: 3.21 }],
      token: { text: ' return', activation: 2.5 },
      sources: [{ label: 'line 7', uri: 'file:///w/a.py', line: 6, text: 'def f(x):', share: 0.62 }],
    },
    'vscode-webview://x',
    'n0nce',
  );
  assert.match(html, /Feature 123 of layer 10: `return` after `:`/);
  assert.match(html, /Induction feature/);
  assert.match(html, /1\.23% of training tokens/);
  assert.match(html, /json\/decoder\.py:40<\/td><td><code><mark>return<\/mark> obj, end<\/code>/);
  assert.match(html, /62%<\/td><td class="where"><a href="#" data-source="0">line 7<\/a>/);
  assert.equal([...html.matchAll(/<script([^>]*)>/g)].length, 1);
  assert.match(html, /script-src 'nonce-n0nce'/);
});

test('feature arguments from a hover link are checked', () => {
  assert.deepEqual(parseFeatureArguments({ layer: 3, feature: 7, recordId: 'r', tokenIndex: 2, uri: 'file:///a.py' }), {
    layer: 3, feature: 7, recordId: 'r', tokenIndex: 2, uri: 'file:///a.py',
  });
  assert.equal(parseFeatureArguments({ layer: '3', feature: 7 }), undefined);
  assert.equal(parseFeatureArguments(null), undefined);
});
