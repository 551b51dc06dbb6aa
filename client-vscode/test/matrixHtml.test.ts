import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  escapeHtml,
  hasPendingRows,
  parseMatrixPageMessage,
  renderMatrixHtml,
  sameMatrixContent,
  selectUnitColumns,
  visibleText,
} from '../src/matrixHtml';
import type { AttributionMatrix, LspRange } from '../src/protocol';

function range(line: number, start: number, end: number): LspRange {
  return { start: { line, character: start }, end: { line, character: end } };
}

function sampleMatrix(): AttributionMatrix {
  return {
    recordId: 'rec-1',
    method: 'input_x_gradient',
    note: 'BOS masked',
    tokens: [
      { text: 'return', range: range(3, 4, 10), prob: 0.91 },
      { text: ' a', range: range(3, 10, 12), prob: 0.42 },
      { text: '\n', range: range(3, 12, 13), prob: 0.77 },
    ],
    units: [
      { text: 'def', range: range(0, 0, 3) },
      { text: 'add', range: range(0, 4, 7) },
      { text: '<b>&"x"', range: range(1, 0, 7) },
    ],
    scores: [[0.5, -0.3, 0.2], [0.1, 0.8, -0.1], null],
  };
}

const options = { cspSource: 'vscode-webview://abc', nonce: 'n0nce', documentLabel: 'src/add.py' };

function cells(html: string): { token: number; unit: number; share: string; background: string }[] {
  return [
    ...html.matchAll(
      /<td class="cell" data-token="(\d+)" data-unit="(\d+)" data-share="([^"]+)" title="[^"]*" style="background:([^"]+)"><\/td>/g,
    ),
  ].map((match) => ({ token: Number(match[1]), unit: Number(match[2]), share: match[3], background: match[4] }));
}

test('one cell per computed token row and unit column, each with its signed share', () => {
  const html = renderMatrixHtml(sampleMatrix(), options);
  const rendered = cells(html);
  assert.equal(rendered.length, 2 * 3, 'two computed rows x three units');
  const byKey = new Map(rendered.map((cell) => [`${cell.token}:${cell.unit}`, cell]));
  assert.equal(byKey.get('0:0')!.share, '+50.0%');
  assert.equal(byKey.get('0:1')!.share, '−30.0%');
  assert.equal(byKey.get('1:1')!.share, '+80.0%');
  // The strongest cell in the matrix is the most opaque, and negatives use the other hue.
  const alpha = (color: string) => Number(/([\d.]+)\)$/.exec(color)![1]);
  assert.ok(alpha(byKey.get('1:1')!.background) > alpha(byKey.get('0:0')!.background));
  assert.notEqual(byKey.get('0:1')!.background.split(',')[0], byKey.get('0:0')!.background.split(',')[0]);
});

test('token texts label the rows, units the columns, and labels are escaped', () => {
  const html = renderMatrixHtml(sampleMatrix(), options);
  assert.match(html, /<th class="token" data-token="0" data-label="return"/);
  assert.match(html, /<th class="token" data-token="1" data-label="·a"/);
  assert.match(html, /<th class="unit" data-unit="1" data-label="add"/);
  assert.ok(html.includes('&lt;b&gt;&amp;&quot;x&quot;'));
  assert.ok(!html.includes('<b>&"x"'), 'raw unit text must never reach the page');
});

test('rows not computed yet say so instead of showing empty cells', () => {
  const html = renderMatrixHtml(sampleMatrix(), options);
  assert.match(html, /<tr class="pending"><th class="token" data-token="2" data-label="↵"[^]*?not computed yet<\/td><\/tr>/);
  assert.match(html, /1 rows still computing/);
  assert.equal(hasPendingRows(sampleMatrix()), true);
  assert.equal(hasPendingRows({ ...sampleMatrix(), scores: [[1, 0, 0], [0, 1, 0], [0, 0, 1]] }), false);
});

test('the page only runs its own nonce-bearing script', () => {
  const html = renderMatrixHtml(sampleMatrix(), options);
  assert.match(html, /script-src 'nonce-n0nce'/);
  assert.match(html, /default-src 'none'/);
  const scripts = [...html.matchAll(/<script([^>]*)>/g)];
  assert.equal(scripts.length, 1);
  assert.equal(scripts[0][1], ' nonce="n0nce"');
});

test('with too many units, the strongest columns are kept in document order', () => {
  const matrix = sampleMatrix();
  assert.deepEqual(selectUnitColumns(matrix, 2), [0, 1]);
  const matrix2: AttributionMatrix = { ...matrix, scores: [[0.05, -0.05, 0.9], [0.1, 0.02, 0.88], null] };
  assert.deepEqual(selectUnitColumns(matrix2, 2), [0, 2]);
  const html = renderMatrixHtml(matrix2, { ...options, maxUnits: 2 });
  assert.equal(cells(html).length, 4);
  assert.match(html, /showing the 2 strongest units of 3/);
});

test('messages from the page are validated against the matrix', () => {
  const matrix = sampleMatrix();
  assert.deepEqual(parseMatrixPageMessage({ type: 'revealUnit', unit: 2 }, matrix), { type: 'revealUnit', unit: 2 });
  assert.deepEqual(parseMatrixPageMessage({ type: 'revealToken', token: 0 }, matrix), { type: 'revealToken', token: 0 });
  assert.equal(parseMatrixPageMessage({ type: 'revealUnit', unit: 3 }, matrix), undefined);
  assert.equal(parseMatrixPageMessage({ type: 'revealUnit', unit: '1' }, matrix), undefined);
  assert.equal(parseMatrixPageMessage({ type: 'other' }, matrix), undefined);
  assert.equal(parseMatrixPageMessage(null, matrix), undefined);
});

test('whitespace tokens are visible and text escaping covers quotes', () => {
  assert.equal(visibleText(' \tx\n'), '·→x↵');
  assert.equal(visibleText(''), '∅');
  assert.equal(escapeHtml(`'"<>&`), '&#39;&quot;&lt;&gt;&amp;');
});

test('polling re-renders only when a row or unit changed', () => {
  const matrix = sampleMatrix();
  assert.equal(sameMatrixContent(sampleMatrix(), matrix), true);
  assert.equal(sameMatrixContent({ ...sampleMatrix(), scores: [[0.5, -0.3, 0.2], [0.1, 0.8, -0.1], [0, 1, 0]] }, matrix), false);
  assert.equal(sameMatrixContent({ ...sampleMatrix(), units: matrix.units.slice(1) }, matrix), false);
  assert.equal(sameMatrixContent(matrix, undefined), false);
});

test('tokens the user edited are marked, not shown with a stale probability', () => {
  const matrix = sampleMatrix();
  matrix.tokens[1] = { ...matrix.tokens[1], edited: true };
  const html = renderMatrixHtml(matrix, options);
  assert.match(html, /<th class="token edited" data-token="1"[^>]*title="[^"]*edited since it was generated"[^>]*>·a <span class="prob">edited<\/span>/);
  assert.match(html, /<th class="token" data-token="0"[^>]*>return <span class="prob">0\.91<\/span>/);
});

test('zero-width and edited tokens never get a row: said so, and not waited for', () => {
  const matrix = sampleMatrix();
  matrix.tokens[2] = { ...matrix.tokens[2], range: range(3, 12, 12) };
  assert.equal(hasPendingRows(matrix), false, 'the only null row belongs to a zero-width token');
  const html = renderMatrixHtml(matrix, options);
  assert.match(html, /data-token="2"[^]*?no attribution: zero-width/);
  assert.doesNotMatch(html, /rows still computing/);
  matrix.tokens[2] = { ...matrix.tokens[2], range: range(3, 12, 13), edited: true };
  assert.match(renderMatrixHtml(matrix, options), /no attribution: edited since it was generated/);
  assert.equal(hasPendingRows(matrix), false);
});
