import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { escapeHtml, hasPendingRows, parseMatrixPageMessage, renderMatrixHtml, sameMatrixContent, visibleText } from '../src/matrixHtml';
import type { AttributionMatrix } from '../src/protocol';

// Answers as the server sends them, view included: tests/test_matrix_view.py keeps this file equal
// to what report/matrix_view.py makes of each case, so these tests render real server views.
const FIXTURES: Record<string, AttributionMatrix> = JSON.parse(
  readFileSync(path.resolve(__dirname, '..', '..', 'test', 'fixtures', 'matrix-views.json'), 'utf8'),
);

function answer(name: string): AttributionMatrix {
  const found = FIXTURES[name];
  assert.ok(found, `no fixture ${name}`);
  return structuredClone(found);
}

function sampleMatrix(): AttributionMatrix {
  return answer('sample');
}

const options = { cspSource: 'vscode-webview://abc', nonce: 'n0nce', documentLabel: 'src/add.py' };

interface Cell { row: string; unit: number; share: string; style: string; hidden: boolean }

function cells(html: string): Cell[] {
  return [
    ...html.matchAll(/<td class="cell( more-column hidden)?" (data-(?:line|token)="\d+") data-unit="(\d+)" data-share="([^"]+)" data-readout="[^"]*" title="[^"]*" style="([^"]*)">/g),
  ].map((m) => ({ row: m[2], unit: Number(m[3]), share: m[4], style: m[5], hidden: m[1] !== undefined }));
}

test('a completion line is a row: the server\'s mean of its token rows, over its columns strongest first', () => {
  const lineCells = cells(renderMatrixHtml(sampleMatrix(), options)).filter((c) => c.row === 'data-line="3"');
  // the server ranked add, def, <b> (weight |0.5|+|0.1|, |−0.3|+|0.8|, |0.2|+|−0.1|)
  assert.deepEqual(lineCells.map((c) => c.unit), [1, 0, 2]);
  assert.deepEqual(lineCells.map((c) => c.share), ['+25.0%', '+30.0%', '+5.0%']);
  assert.match(renderMatrixHtml(sampleMatrix(), options), /<span class="toggle">▸<\/span>return a<\/th>/);
});

test('the panel shows the columns the server ranked, not a ranking of its own', () => {
  const matrix = answer('viewDecides');
  assert.deepEqual(matrix.view.columns, [2, 1]);
  const html = renderMatrixHtml(matrix, options);
  const header = [...html.matchAll(/<th class="unit" data-unit="(\d+)"/g)].map((m) => Number(m[1]));
  assert.deepEqual(header, [2, 1]);
  assert.deepEqual(cells(html).filter((c) => c.row === 'data-line="3"').map((c) => c.unit), [2, 1]);
});

test('token rows are there to expand, collapsed by default', () => {
  const html = renderMatrixHtml(sampleMatrix(), options);
  assert.match(html, /<tr class="token-row collapsed" data-line="3"><th class="row" data-token="0" data-label="return"/);
  assert.match(html, /<tr class="token-row collapsed" data-line="3"><th class="row" data-token="1" data-label="·a"/);
  const tokenCells = cells(html).filter((c) => c.row === 'data-token="0"');
  assert.equal(tokenCells.find((c) => c.unit === 1)!.share, '−30.0%');
});

test('column labels are the source code, trimmed, with its place; text is escaped', () => {
  const html = renderMatrixHtml(sampleMatrix(), options);
  assert.match(html, /<th class="unit" data-unit="1" data-label="add"[^>]*><span class="label"><span class="place">line 1<\/span> add<\/span><\/th>/);
  assert.ok(html.includes('&lt;b&gt;&amp;&quot;x&quot;'));
  assert.ok(!html.includes('<b>&"x"'), 'raw unit text must never reach the page');
  assert.match(renderMatrixHtml(answer('otherFile'), options), /<span class="place">pkg\/utils\.py:12<\/span> def human_bytes\(n\):/);
});

test('rows still computing show a spinner, and none is left once every row is in', () => {
  const html = renderMatrixHtml(sampleMatrix(), options);
  assert.match(html, /<tr class="token-row pending collapsed" data-line="3"><th class="row" data-token="2"[^]*?<span class="spinner"><\/span>computing…<\/td><\/tr>/);
  assert.match(html, /1 token rows computing…/);
  assert.equal(hasPendingRows(sampleMatrix()), true);
  const done = answer('done');
  assert.equal(hasPendingRows(done), false);
  assert.doesNotMatch(renderMatrixHtml(done, options), /computing…|class="spinner"/);
  const none = answer('none');
  assert.match(renderMatrixHtml(none, options), /<tr class="line-row pending">[^]*?<span class="spinner"><\/span>computing…/);
});

test('the page only runs its own nonce-bearing script', () => {
  const html = renderMatrixHtml(sampleMatrix(), options);
  assert.match(html, /script-src 'nonce-n0nce'/);
  assert.match(html, /default-src 'none'/);
  const scripts = [...html.matchAll(/<script([^>]*)>/g)];
  assert.equal(scripts.length, 1);
  assert.equal(scripts[0][1], ' nonce="n0nce"');
});

test('the strongest 20 sources are shown; the rest wait behind "more"', () => {
  const matrix = answer('thirty');
  const html = renderMatrixHtml(matrix, options);
  const header = [...html.matchAll(/<th class="unit( more-column hidden)?" data-unit="(\d+)"/g)];
  assert.equal(header.length, 30);
  assert.deepEqual(header.filter((m) => !m[1]).map((m) => Number(m[2])), [...Array(20).keys()].map((k) => 29 - k));
  assert.match(html, /<button id="more">show 10 more sources \(10 hidden\)<\/button>/);
  assert.equal(cells(html).filter((c) => !c.hidden).length, 20 * 2, 'line row and token row');
});

test('the legend shows only the signs on screen, the caveat is one sentence with a docs link', () => {
  const positive = answer('positive');
  const html = renderMatrixHtml(positive, options);
  assert.match(html, /drove it/);
  assert.doesNotMatch(html, /pushed away/);
  assert.match(renderMatrixHtml(sampleMatrix(), { ...options }), /its top line is the one that matters most for 36% of tokens on unseen code\. <a id="docs"/);
  assert.match(html, /<a id="export" href="#">Export as HTML<\/a>/);
  assert.match(html, /color-mix\(in srgb, var\(--vscode-charts-orange/);
});

test('messages from the page are validated against the matrix', () => {
  const matrix = sampleMatrix();
  assert.deepEqual(parseMatrixPageMessage({ type: 'revealUnit', unit: 2 }, matrix), { type: 'revealUnit', unit: 2 });
  assert.deepEqual(parseMatrixPageMessage({ type: 'revealToken', token: 0 }, matrix), { type: 'revealToken', token: 0 });
  assert.deepEqual(parseMatrixPageMessage({ type: 'exportHtml' }, matrix), { type: 'exportHtml' });
  assert.deepEqual(parseMatrixPageMessage({ type: 'openDocs' }, matrix), { type: 'openDocs' });
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

test('a refresh re-renders only when a row or unit changed', () => {
  const matrix = sampleMatrix();
  assert.equal(sameMatrixContent(sampleMatrix(), matrix), true);
  assert.equal(sameMatrixContent({ ...sampleMatrix(), scores: [[0.5, -0.3, 0.2], [0.1, 0.8, -0.1], [0, 1, 0]] }, matrix), false);
  assert.equal(sameMatrixContent(answer('viewDecides'), matrix), false, 'a view the server changed is a new page');
  assert.equal(sameMatrixContent({ ...sampleMatrix(), units: matrix.units.slice(1) }, matrix), false);
  assert.equal(sameMatrixContent(matrix, undefined), false);
});

test('tokens the user edited are marked, not shown with a stale probability', () => {
  const html = renderMatrixHtml(answer('editedToken'), options);
  assert.match(html, /<th class="row" data-token="1"[^>]*title="[^"]*edited since it was generated"[^>]*><span class="edited">·a<\/span> <span class="prob">edited<\/span>/);
  assert.match(html, /<th class="row" data-token="0"[^>]*><span class="">return<\/span> <span class="prob">0\.91<\/span>/);
});

test('zero-width and edited tokens never get a row: said so, and not waited for', () => {
  const matrix = answer('zeroWidth');
  assert.equal(hasPendingRows(matrix), false, 'the only null row belongs to a zero-width token');
  const html = renderMatrixHtml(matrix, options);
  assert.match(html, /data-token="2"[^]*?no attribution: zero-width/);
  assert.doesNotMatch(html, /computing…/);
  const edited = answer('editedUnscored');
  assert.match(renderMatrixHtml(edited, options), /no attribution: edited since it was generated/);
  assert.equal(hasPendingRows(edited), false);
});

test('a completion line is labelled as it reads in the editor, the code before the cursor included', () => {
  // typed `tot`, the completion's first token is `total` (its text `al`), the line reads `total = 1`
  assert.match(renderMatrixHtml(answer('asRead'), options), />total = 1</);
});

test('each token row says whether it is verified by ablation or estimated, and how far the estimate was', () => {
  const matrix = answer('verified');
  const html = renderMatrixHtml(matrix, options);
  assert.match(html, /<th class="row" data-token="0"[^>]*title="[^"]*verified by 16 ablations; the estimate had the same top line \(estimate&#39;s LDS on these ablations 0\.41\)"[^>]*>.*<span class="truth verified">✓<\/span><\/th>/);
  assert.match(html, /<th class="row" data-token="1"[^>]*title="[^"]*the estimate ranked this top line #3"[^>]*>.*<span class="truth verified">✓<\/span>/);
  // the third row is not computed: no mark at all
  assert.doesNotMatch(html, /data-token="2"[^>]*>[^\n]*class="truth/);
  assert.match(html, /every row verified by 16 ablations \(✓ verified, ~ estimated\)/);
});

test('estimated rows are marked as such, with verification still to come when the server says so', () => {
  const matrix = answer('verifying');
  const html = renderMatrixHtml(matrix, options);
  assert.match(html, /<th class="row" data-token="0"[^>]*title="[^"]*; estimated; verifying by ablation…"[^>]*>.*<span class="truth estimated">~<\/span>/);
  assert.match(html, /1 of 2 rows verified by 16 ablations, the rest estimated \(verifying by ablation…\)/);
  const allIn = { ...matrix, view: { ...matrix.view, pending: 0 } };
  assert.equal(hasPendingRows(allIn), true, 'every row is in, but verification will replace them');
  assert.equal(hasPendingRows({ ...allIn, verifying: false }), false);
  // an older server sends neither field: no marks, no summary
  const older = sampleMatrix();
  assert.doesNotMatch(renderMatrixHtml(older, options), /class="truth|rows verified|rows estimated/);
  // a verification arriving changes the page
  const before = sampleMatrix();
  const after = { ...sampleMatrix(), verified: [{ masks: 16 }, null, null] };
  assert.equal(sameMatrixContent(after, before), false);
});
