// Renders a whence/attributionMatrix answer as the HTML of the matrix webview. Pure string
// building, so it can be tested without VS Code; the panel only supplies the CSP source and nonce
// and relays the messages the page posts back (reveal a unit, reveal a token). The grouping by
// line, the ranked columns, places and row truth are the server's `view` (report/matrix_view.py,
// which the HTML export renders too): nothing is ranked or grouped here.

import { formatShare, maxAbsScore, relativeIntensity, signOf } from './heat';
import type { AttributionMatrix } from './protocol';

export interface MatrixPageOptions {
  /** Webview CSP source (`webview.cspSource`). */
  cspSource: string;
  /** Per-render nonce that allows the page's one inline script. */
  nonce: string;
  /** Label of the document the record belongs to, shown in the header. */
  documentLabel: string;
  /** Source columns shown at first (the strongest); "more" shows the next ones. */
  maxUnits?: number;
}

/** Messages the page posts to the extension. */
export type MatrixPageMessage =
  | { type: 'revealUnit'; unit: number }
  | { type: 'revealToken'; token: number }
  | { type: 'openDocs' }
  | { type: 'exportHtml' };

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


/** Text cut to `width` characters for a label (the server sends it already collapsed). */
function truncate(text: string, width: number): string {
  return text.length > width ? `${text.slice(0, width - 1)}…` : text;
}

/** Cell colour from the editor theme's chart colours, so it reads in light and dark themes. */
export function cellStyle(score: number, maxAbs: number): string {
  const intensity = relativeIntensity(score, maxAbs);
  if (!(intensity > 0)) {
    return '';
  }
  const hue = score < 0 ? 'var(--vscode-charts-blue, #267de6)' : 'var(--vscode-charts-orange, #e87916)';
  const percent = Math.round(12 + 80 * intensity);
  return `background:color-mix(in srgb, ${hue} ${percent}%, transparent)`;
}

function positionLabel(line: number, character: number): string {
  return `line ${line + 1}, col ${character + 1}`;
}

const STYLE = `
  body { font-family: var(--vscode-font-family); font-size: var(--vscode-font-size); color: var(--vscode-foreground); padding: 0 12px 12px; }
  h1 { font-size: 1.2em; margin: 12px 0 4px; }
  .meta, .note { margin: 2px 0; color: var(--vscode-descriptionForeground); }
  a { color: var(--vscode-textLink-foreground); cursor: pointer; }
  #readout { position: sticky; top: 0; z-index: 3; padding: 6px 8px; margin: 8px 0; background: var(--vscode-editorWidget-background); border: 1px solid var(--vscode-editorWidget-border, transparent); font-family: var(--vscode-editor-font-family); white-space: pre; overflow: hidden; text-overflow: ellipsis; }
  .scroll { overflow: auto; max-height: calc(100vh - 150px); }
  table.heatmap { border-collapse: collapse; font-family: var(--vscode-editor-font-family); font-size: 12px; }
  th.unit { vertical-align: bottom; padding: 2px; font-weight: normal; cursor: pointer; position: sticky; top: 0; background: var(--vscode-editor-background); z-index: 1; }
  th.unit .label { writing-mode: vertical-rl; transform: rotate(180deg); white-space: nowrap; max-height: 220px; overflow: hidden; text-overflow: ellipsis; display: inline-block; }
  th.unit .place { color: var(--vscode-descriptionForeground); }
  th.unit:hover, th.row:hover { color: var(--vscode-textLink-activeForeground); }
  th.row { text-align: left; white-space: pre; padding: 0 8px 0 2px; font-weight: normal; cursor: pointer; position: sticky; left: 0; background: var(--vscode-editor-background); z-index: 1; max-width: 360px; overflow: hidden; text-overflow: ellipsis; }
  th.row .toggle { display: inline-block; width: 1em; color: var(--vscode-descriptionForeground); }
  tr.token-row th.row { padding-left: 22px; color: var(--vscode-descriptionForeground); }
  tr.token-row.collapsed, .more-column.hidden { display: none; }
  th.corner { position: sticky; top: 0; left: 0; z-index: 2; background: var(--vscode-editor-background); font-weight: normal; color: var(--vscode-descriptionForeground); text-align: left; vertical-align: bottom; }
  td.cell { min-width: 34px; height: 20px; padding: 0 3px; text-align: center; border: 1px solid var(--vscode-editor-background); color: var(--vscode-editor-foreground); font-size: 11px; }
  td.cell:hover { outline: 2px solid var(--vscode-focusBorder); }
  td.pending { color: var(--vscode-descriptionForeground); font-style: italic; padding: 0 6px; white-space: nowrap; }
  .prob { color: var(--vscode-descriptionForeground); }
  .truth.verified { color: var(--vscode-testing-iconPassed, green); }
  .truth.estimated { color: var(--vscode-descriptionForeground); }
  .edited { font-style: italic; text-decoration: line-through; }
  .legend span.swatch { display: inline-block; width: 1.2em; height: 0.9em; vertical-align: middle; margin: 0 4px 0 10px; }
  .spinner { display: inline-block; width: 0.8em; height: 0.8em; border: 2px solid var(--vscode-descriptionForeground); border-top-color: transparent; border-radius: 50%; animation: spin 0.9s linear infinite; vertical-align: middle; margin-right: 4px; }
  @keyframes spin { to { transform: rotate(360deg); } }
  button { background: var(--vscode-button-secondaryBackground); color: var(--vscode-button-secondaryForeground); border: none; padding: 3px 10px; margin: 6px 6px 0 0; cursor: pointer; }
`;

/** Source columns shown at first (the strongest); each press of "more" shows this many more. */
export const DEFAULT_COLUMNS = 20;

const SCRIPT = `
  const vscode = acquireVsCodeApi();
  const readout = document.getElementById('readout');
  const table = document.querySelector('table.heatmap');
  table.addEventListener('mouseover', (event) => {
    const cell = event.target.closest('td.cell');
    if (cell) { readout.textContent = cell.dataset.readout; }
  });
  table.addEventListener('click', (event) => {
    const unitHeader = event.target.closest('th.unit, td.cell');
    if (unitHeader) { vscode.postMessage({ type: 'revealUnit', unit: Number(unitHeader.dataset.unit) }); return; }
    const lineHeader = event.target.closest('tr.line-row th.row');
    if (lineHeader) {
      const line = lineHeader.dataset.line;
      const open = lineHeader.dataset.open === 'true';
      document.querySelectorAll('tr.token-row[data-line="' + line + '"]').forEach((row) => row.classList.toggle('collapsed', open));
      lineHeader.dataset.open = open ? 'false' : 'true';
      lineHeader.querySelector('.toggle').textContent = open ? '\\u25b8' : '\\u25be';
      return;
    }
    const tokenHeader = event.target.closest('tr.token-row th.row');
    if (tokenHeader) { vscode.postMessage({ type: 'revealToken', token: Number(tokenHeader.dataset.token) }); }
  });
  const more = document.getElementById('more');
  if (more) {
    more.addEventListener('click', () => {
      const next = [...document.querySelectorAll('th.more-column.hidden')].slice(0, ${DEFAULT_COLUMNS});
      next.forEach((header) => {
        document.querySelectorAll('.more-column[data-unit="' + header.dataset.unit + '"]').forEach((el) => el.classList.remove('hidden'));
      });
      const left = document.querySelectorAll('th.more-column.hidden').length;
      if (left === 0) { more.remove(); } else { more.textContent = 'show ' + Math.min(left, ${DEFAULT_COLUMNS}) + ' more sources (' + left + ' hidden)'; }
    });
  }
  for (const [id, type] of [['docs', 'openDocs'], ['export', 'exportHtml']]) {
    const link = document.getElementById(id);
    if (link) { link.addEventListener('click', (event) => { event.preventDefault(); vscode.postMessage({ type }); }); }
  }
`;

export function renderMatrixHtml(matrix: AttributionMatrix, options: MatrixPageOptions): string {
  const visible = options.maxUnits ?? DEFAULT_COLUMNS;
  const view = matrix.view;
  const columns = view.columns;
  const lines = view.lines.filter((entry) => !entry.blank);
  const shown = columns.slice(0, visible);
  const lineRows = lines.map((entry) => entry.scores).filter((row): row is number[] => row !== null);
  const maxAbs = maxAbsScore(lineRows.flatMap((row) => shown.map((unit) => row[unit] ?? 0)));
  const pendingCount = view.pending;
  const extra = (k: number) => (k < visible ? '' : ' more-column hidden');

  const unitHeaders = columns
    .map((unit, k) => {
      const code = view.codes[unit];
      const place = view.places[unit];
      return `<th class="unit${extra(k)}" data-unit="${unit}" data-label="${escapeHtml(code)}" title="${escapeHtml(
        `${place}: ${matrix.units[unit].text.split('\n')[0].trim()} (click to reveal)`,
      )}"><span class="label"><span class="place">${escapeHtml(place)}</span> ${escapeHtml(code)}</span></th>`;
    })
    .join('');

  const cellsOf = (scores: number[], rowLabel: string, rowAttribute: string, scale: number) =>
    columns
      .map((unit, k) => {
        const score = scores[unit] ?? 0;
        const share = formatShare(score);
        const readout = `${rowLabel}  \u2190  ${view.places[unit]} ${view.codes[unit]}:  ${share}`;
        const number = Math.abs(score) >= 0.05 ? String(Math.round(Math.abs(score) * 100)) : '';
        return `<td class="cell${extra(k)}" ${rowAttribute} data-unit="${unit}" data-share="${share}" data-readout="${escapeHtml(
          readout,
        )}" title="${share}" style="${cellStyle(score, scale)}">${number}</td>`;
      })
      .join('');

  const pendingCell = (why: string, spinner: boolean) =>
    `<td class="pending" colspan="${Math.max(1, columns.length)}">${spinner ? '<span class="spinner"></span>' : ''}${escapeHtml(why)}</td>`;

  const body = lines
    .map((entry) => {
      const head = `<th class="row" data-line="${entry.line}" data-open="false" title="${escapeHtml(
        `line ${entry.line + 1}: click to show its tokens`,
      )}"><span class="toggle">▸</span>${escapeHtml(truncate(entry.text || '(whitespace)', 48))}</th>`;
      const still = entry.pending > 0 ? `<td class="pending"><span class="spinner"></span>${entry.pending} computing…</td>` : '';
      const lineRow =
        entry.scores === null
          ? `<tr class="line-row pending">${head}${pendingCell('computing…', true)}</tr>`
          : `<tr class="line-row">${head}${cellsOf(entry.scores, `line ${entry.line + 1}`, `data-line="${entry.line}"`, maxAbs)}${still}</tr>`;
      const tokenRows = entry.tokens
        .map((index) => {
          const token = matrix.tokens[index];
          const label = visibleText(token.text);
          const edited = token.edited === true;
          const scores = matrix.scores[index] ?? null;
          const truth = scores === null ? null : view.truth[index] ?? null;
          const header = `<th class="row" data-token="${index}" data-label="${escapeHtml(label)}" title="${escapeHtml(
            `p = ${token.prob.toFixed(3)}, ${positionLabel(token.range.start.line, token.range.start.character)}${
              edited ? ', edited since it was generated' : ''
            }${truth ? `; ${truth.sentence}` : ''}`,
          )}"><span class="${edited ? 'edited' : ''}">${escapeHtml(label)}</span> <span class="prob">${
            edited ? 'edited' : token.prob.toFixed(2)
          }</span>${truth ? ` <span class="truth ${truth.mark === '✓' ? 'verified' : 'estimated'}">${truth.mark}</span>` : ''}</th>`;
          if (scores === null) {
            const state = view.rowStates[index];
            const never = state === 'edited' || state === 'zero-width';
            const why =
              state === 'edited'
                ? 'no attribution: edited since it was generated'
                : state === 'zero-width'
                  ? 'no attribution: zero-width (re-produced the text before the cursor)'
                  : 'computing…';
            return `<tr class="token-row pending collapsed" data-line="${entry.line}">${header}${pendingCell(why, !never)}</tr>`;
          }
          const tokenMax = maxAbsScore(shown.map((unit) => scores[unit] ?? 0));
          return `<tr class="token-row collapsed" data-line="${entry.line}">${header}${cellsOf(
            scores,
            `token ${label}`,
            `data-token="${index}"`,
            tokenMax,
          )}</tr>`;
        })
        .join('');
      return lineRow + tokenRows;
    })
    .join('\n');

  const signs = new Set(
    lineRows
      .flatMap((row) => shown.map((unit) => row[unit] ?? 0))
      .filter((value) => Math.abs(value) >= 0.005)
      .map((value) => signOf(value)),
  );
  const legend = [
    signs.has('positive') ? `<span class="swatch" style="${cellStyle(1, 1)}"></span>drove it` : '',
    signs.has('negative') ? `<span class="swatch" style="${cellStyle(-1, 1)}"></span>pushed away from it` : '',
  ].join('');
  const hidden = columns.length - shown.length;
  const pendingNote = pendingCount > 0 ? ` · <span class="spinner"></span>${pendingCount} token rows computing…` : '';
  const truthNote = view.summary ? ` · ${escapeHtml(view.summary)} (✓ verified, ~ estimated)` : '';
  const csp = ["default-src 'none'", `style-src ${options.cspSource} 'unsafe-inline'`, `script-src 'nonce-${options.nonce}'`].join('; ');
  const caveat = matrix.note ? `${escapeHtml(matrix.note.replace(/\.?\s*$/, '.'))} ` : '';

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
<p class="meta">${escapeHtml(options.documentLabel)} · ${lines.length} completion line${lines.length === 1 ? '' : 's'} × ${
    columns.length
  } source${columns.length === 1 ? '' : 's'} with weight (of ${matrix.units.length}) · ${escapeHtml(matrix.method.replace(/_/g, ' '))}${truthNote}${pendingNote}</p>
<p class="note">${caveat}<a id="docs" href="#">How this is measured</a> · <a id="export" href="#">Export as HTML</a></p>
${legend ? `<p class="legend">${legend} · number: % of the row's attribution</p>` : ''}
<div id="readout">Hover a cell for its share; click a line to show its tokens, a source to reveal it.</div>
<div class="scroll">
<table class="heatmap">
<thead><tr><th class="corner">completion line ╲ source</th>${unitHeaders}</tr></thead>
<tbody>
${body}
</tbody>
</table>
${hidden > 0 ? `<button id="more">show ${Math.min(hidden, visible)} more sources (${hidden} hidden)</button>` : ''}
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
  if (type === 'openDocs' || type === 'exportHtml') {
    return { type };
  }
  return undefined;
}

/** True while some rows are still being computed (or verified) by the server, i.e. worth asking again. */
export function hasPendingRows(matrix: AttributionMatrix): boolean {
  // an estimated row that verification will replace counts too: its refresh is still to come
  return matrix.verifying === true || matrix.view.pending > 0;
}

/** True when two answers would render the same page (a refresh on rowsReady skips re-rendering then). */
export function sameMatrixContent(a: AttributionMatrix, b: AttributionMatrix | undefined): boolean {
  return (
    b !== undefined &&
    a.recordId === b.recordId &&
    a.method === b.method &&
    a.note === b.note &&
    a.verifying === b.verifying &&
    JSON.stringify([a.tokens, a.units, a.scores, a.verified, a.view]) === JSON.stringify([b.tokens, b.units, b.scores, b.verified, b.view])
  );
}
