// Renders a whence/attributionMatrix answer as the HTML of the matrix webview. Pure string
// building, so it can be tested without VS Code; the panel only supplies the CSP source and nonce
// and relays the two messages the page posts back (reveal a unit, reveal a token).

import { formatShare, heatColor, maxAbsScore, relativeIntensity, signOf } from './heat';
import type { AttributionMatrix, MatrixToken } from './protocol';

export interface MatrixPageOptions {
  /** Webview CSP source (`webview.cspSource`). */
  cspSource: string;
  /** Per-render nonce that allows the page's one inline script. */
  nonce: string;
  /** Label of the document the record belongs to, shown in the header. */
  documentLabel: string;
  /** At most this many unit columns; beyond it the strongest units are kept. */
  maxUnits?: number;
}

/** Messages the page posts to the extension. */
export type MatrixPageMessage =
  | { type: 'revealUnit'; unit: number }
  | { type: 'revealToken'; token: number };

export const DEFAULT_MAX_UNITS = 300;

export function escapeHtml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

/** Token texts are often pure whitespace; make it visible so that rows can be told apart. */
export function visibleText(text: string): string {
  if (text.length === 0) {
    return '∅';
  }
  return text.replace(/\r\n|\n/g, '↵').replace(/\t/g, '→').replace(/ /g, '·');
}

/**
 * The unit columns to show, in document order. Everything when it fits; otherwise the units with
 * the largest |score| in any computed row, because those are the ones a reader looks for.
 */
export function selectUnitColumns(matrix: AttributionMatrix, maxUnits: number): number[] {
  const count = matrix.units.length;
  const all = [...Array(count).keys()];
  if (count <= maxUnits) {
    return all;
  }
  const strength = all.map((unit) =>
    maxAbsScore(matrix.scores.filter((row): row is number[] => row !== null).map((row) => row[unit] ?? 0)),
  );
  return all
    .sort((a, b) => strength[b] - strength[a] || a - b)
    .slice(0, maxUnits)
    .sort((a, b) => a - b);
}

function positionLabel(line: number, character: number): string {
  return `line ${line + 1}, col ${character + 1}`;
}

const STYLE = `
  body { font-family: var(--vscode-font-family); font-size: var(--vscode-font-size); color: var(--vscode-foreground); padding: 0 12px 12px; }
  h1 { font-size: 1.2em; margin: 12px 0 4px; }
  .meta, .note { margin: 2px 0; color: var(--vscode-descriptionForeground); }
  #readout { position: sticky; top: 0; z-index: 3; padding: 6px 8px; margin: 8px 0; background: var(--vscode-editorWidget-background); border: 1px solid var(--vscode-editorWidget-border, transparent); font-family: var(--vscode-editor-font-family); white-space: pre; overflow: hidden; text-overflow: ellipsis; }
  .scroll { overflow: auto; max-height: calc(100vh - 130px); }
  table.heatmap { border-collapse: collapse; font-family: var(--vscode-editor-font-family); font-size: 12px; }
  th.unit { writing-mode: vertical-rl; transform: rotate(180deg); white-space: nowrap; max-height: 140px; overflow: hidden; padding: 4px 1px; font-weight: normal; cursor: pointer; position: sticky; top: 0; background: var(--vscode-editor-background); }
  th.unit:hover, th.token:hover { color: var(--vscode-textLink-activeForeground); text-decoration: underline; }
  th.token { text-align: right; white-space: pre; padding: 0 6px; font-weight: normal; cursor: pointer; position: sticky; left: 0; background: var(--vscode-editor-background); z-index: 1; }
  th.corner { position: sticky; top: 0; left: 0; z-index: 2; background: var(--vscode-editor-background); font-weight: normal; color: var(--vscode-descriptionForeground); }
  td.cell { width: 14px; min-width: 14px; height: 18px; padding: 0; border: 1px solid var(--vscode-editor-background); }
  td.cell:hover { outline: 2px solid var(--vscode-focusBorder); }
  td.pending { color: var(--vscode-descriptionForeground); font-style: italic; padding: 0 6px; }
  .prob { color: var(--vscode-descriptionForeground); }
  th.token.edited { font-style: italic; text-decoration: line-through; }
  .legend span { display: inline-block; padding: 0 6px; margin-right: 4px; }
`;

const SCRIPT = `
  const vscode = acquireVsCodeApi();
  const readout = document.getElementById('readout');
  const unitLabel = (u) => document.querySelector('th.unit[data-unit="' + u + '"]').dataset.label;
  const tokenLabel = (t) => document.querySelector('th.token[data-token="' + t + '"]').dataset.label;
  document.querySelector('table.heatmap').addEventListener('mouseover', (event) => {
    const cell = event.target.closest('td.cell');
    if (!cell) { return; }
    readout.textContent = 'token ' + tokenLabel(cell.dataset.token) + '  \\u2190  unit ' + unitLabel(cell.dataset.unit) + ':  ' + cell.dataset.share;
  });
  document.querySelector('table.heatmap').addEventListener('click', (event) => {
    const unitHeader = event.target.closest('th.unit, td.cell');
    if (unitHeader) { vscode.postMessage({ type: 'revealUnit', unit: Number(unitHeader.dataset.unit) }); return; }
    const tokenHeader = event.target.closest('th.token');
    if (tokenHeader) { vscode.postMessage({ type: 'revealToken', token: Number(tokenHeader.dataset.token) }); }
  });
`;

export function renderMatrixHtml(matrix: AttributionMatrix, options: MatrixPageOptions): string {
  const maxUnits = options.maxUnits ?? DEFAULT_MAX_UNITS;
  const columns = selectUnitColumns(matrix, maxUnits);
  const computedRows = matrix.scores.filter((row): row is number[] => row !== null);
  const maxAbs = maxAbsScore(computedRows.flatMap((row) => columns.map((unit) => row[unit] ?? 0)));
  const pendingCount = matrix.tokens.filter((token, index) => (matrix.scores[index] ?? null) === null && !neverScored(token)).length;

  const unitHeaders = columns
    .map((unit) => {
      const { text, range, label: place, line } = matrix.units[unit];
      const label = visibleText(text);
      const where = place ?? (range ? positionLabel(range.start.line, range.start.character) : `line ${(line ?? 0) + 1}`);
      return `<th class="unit" data-unit="${unit}" data-label="${escapeHtml(label)}" title="${escapeHtml(
        `${label} (${where}), click to reveal`,
      )}">${escapeHtml(label)}</th>`;
    })
    .join('');

  const rows = matrix.tokens
    .map((token, tokenIndex) => {
      const label = visibleText(token.text);
      const edited = token.edited === true;
      const header = `<th class="token${edited ? ' edited' : ''}" data-token="${tokenIndex}" data-label="${escapeHtml(label)}" title="${escapeHtml(
        `p = ${token.prob.toFixed(3)}, ${positionLabel(token.range.start.line, token.range.start.character)}${
          edited ? ', edited since it was generated' : ''
        }`,
      )}">${escapeHtml(label)} <span class="prob">${edited ? 'edited' : token.prob.toFixed(2)}</span></th>`;
      const scores = matrix.scores[tokenIndex] ?? null;
      if (scores === null) {
        const why = neverScored(token)
          ? edited
            ? 'no attribution: edited since it was generated'
            : 'no attribution: zero-width (re-produced the text before the cursor)'
          : 'not computed yet';
        return `<tr class="pending">${header}<td class="pending" colspan="${Math.max(1, columns.length)}">${why}</td></tr>`;
      }
      const cells = columns
        .map((unit) => {
          const score = scores[unit] ?? 0;
          const share = formatShare(score);
          const color = heatColor(signOf(score), relativeIntensity(score, maxAbs));
          return `<td class="cell" data-token="${tokenIndex}" data-unit="${unit}" data-share="${share}" title="${share}" style="background:${color}"></td>`;
        })
        .join('');
      return `<tr>${header}${cells}</tr>`;
    })
    .join('\n');

  const shownNote =
    columns.length < matrix.units.length
      ? ` (showing the ${columns.length} strongest units of ${matrix.units.length})`
      : '';
  const pendingNote = pendingCount > 0 ? ` · ${pendingCount} rows still computing` : '';
  const csp = [
    "default-src 'none'",
    `style-src ${options.cspSource} 'unsafe-inline'`,
    `script-src 'nonce-${options.nonce}'`,
  ].join('; ');

  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>Attribution matrix</title>
<style>${STYLE}</style>
</head>
<body data-record-id="${escapeHtml(matrix.recordId)}">
<h1>Attribution matrix</h1>
<p class="meta">${escapeHtml(options.documentLabel)} · record ${escapeHtml(matrix.recordId)} · method ${escapeHtml(
    matrix.method,
  )} · ${matrix.tokens.length} generated tokens × ${matrix.units.length} context units${escapeHtml(shownNote)}${escapeHtml(pendingNote)}</p>
${matrix.note ? `<p class="note">${escapeHtml(matrix.note)}</p>` : ''}
<p class="legend"><span style="background:${heatColor('positive', 1)}">pushed towards the token</span><span style="background:${heatColor(
    'negative',
    1,
  )}">pushed away</span> shares of each row's total |attribution|</p>
<div id="readout">Hover a cell for its score; click a context unit (or a cell) to reveal it in the editor.</div>
<div class="scroll">
<table class="heatmap">
<thead><tr><th class="corner">token \\ unit</th>${unitHeaders}</tr></thead>
<tbody>
${rows}
</tbody>
</table>
</div>
<script nonce="${options.nonce}">${SCRIPT}</script>
</body>
</html>`;
}

/** Parses a message from the page, rejecting anything that is not one of ours. */
export function parseMatrixPageMessage(message: unknown, matrix: AttributionMatrix): MatrixPageMessage | undefined {
  if (typeof message !== 'object' || message === null) {
    return undefined;
  }
  const { type, unit, token } = message as Record<string, unknown>;
  if (type === 'revealUnit' && Number.isInteger(unit) && (unit as number) >= 0 && (unit as number) < matrix.units.length) {
    return { type, unit: unit as number };
  }
  if (type === 'revealToken' && Number.isInteger(token) && (token as number) >= 0 && (token as number) < matrix.tokens.length) {
    return { type, token: token as number };
  }
  return undefined;
}

/**
 * Tokens that never get a row: zero-width ones (their text only re-produced what was before the
 * cursor) and tokens the user edited.
 */
export function neverScored(token: MatrixToken): boolean {
  const { start, end } = token.range;
  return token.edited === true || (start.line === end.line && start.character === end.character);
}

/** True while some rows are still being computed by the server, i.e. worth asking again. */
export function hasPendingRows(matrix: AttributionMatrix): boolean {
  return matrix.tokens.some((token, index) => (matrix.scores[index] ?? null) === null && !neverScored(token));
}

/** True when two answers would render the same page (polling skips re-rendering then). */
export function sameMatrixContent(a: AttributionMatrix, b: AttributionMatrix | undefined): boolean {
  return (
    b !== undefined &&
    a.recordId === b.recordId &&
    a.method === b.method &&
    a.note === b.note &&
    JSON.stringify([a.tokens, a.units, a.scores]) === JSON.stringify([b.tokens, b.units, b.scores])
  );
}
