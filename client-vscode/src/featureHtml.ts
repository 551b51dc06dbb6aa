// The HTML of the page of one sparse-autoencoder feature (pure, so it is tested without VS Code;
// featurePanel.ts shows it): its label, whether it is an induction feature, its top-activating
// snippets from the training corpus, and the lines this token's activation of it came from.

import { escapeHtml } from './matrixHtml';

export interface FeatureExample {
  path: string;
  line: number;
  code: string;
  token: string;
  activation: number;
}

export interface FeatureSource {
  label: string;
  uri: string;
  line: number;
  text: string;
  share: number;
}

/** `whence/feature` answer. */
export interface FeaturePage {
  layer: number;
  feature: number;
  label?: string;
  induction?: boolean;
  frequency?: number;
  examples?: FeatureExample[];
  token?: { text: string; activation: number };
  sources?: FeatureSource[];
  metrics?: { explained_variance?: number; l0?: number };
}

export interface FeatureArguments {
  layer: number;
  feature: number;
  recordId?: string;
  tokenIndex?: number;
  uri?: string;
}

export function parseFeatureArguments(arg: unknown): FeatureArguments | undefined {
  if (typeof arg !== 'object' || arg === null) {
    return undefined;
  }
  const { layer, feature, recordId, tokenIndex, uri } = arg as Record<string, unknown>;
  if (!Number.isInteger(layer) || !Number.isInteger(feature)) {
    return undefined;
  }
  return {
    layer: layer as number,
    feature: feature as number,
    recordId: typeof recordId === 'string' ? recordId : undefined,
    tokenIndex: Number.isInteger(tokenIndex) ? (tokenIndex as number) : undefined,
    uri: typeof uri === 'string' ? uri : undefined,
  };
}

/** Pure: the page's HTML, so it can be tested without VS Code. */
export function renderFeatureHtml(page: FeaturePage, cspSource: string, nonce: string): string {
  const csp = ["default-src 'none'", `style-src ${cspSource} 'unsafe-inline'`, `script-src 'nonce-${nonce}'`].join('; ');
  const examples = (page.examples ?? [])
    .map(
      (example) =>
        `<tr><td class="act">${example.activation.toFixed(2)}</td><td class="where">${escapeHtml(example.path)}:${example.line}</td>` +
        `<td><code>${highlight(example.code, example.token)}</code></td></tr>`,
    )
    .join('');
  const sources = (page.sources ?? [])
    .map(
      (source, index) =>
        `<tr><td class="act">${Math.round(source.share * 100)}%</td><td class="where"><a href="#" data-source="${index}">${escapeHtml(
          source.label,
        )}</a></td><td><code>${escapeHtml(source.text)}</code></td></tr>`,
    )
    .join('');
  const kind = page.induction
    ? '<p class="kind">Induction feature: at most of its top snippets the next token already followed this one earlier (the model can copy it).</p>'
    : '';
  const token = page.token
    ? `<h2>Where this token's activation came from</h2><p class="muted">At <code>${escapeHtml(page.token.text)}</code> the feature is active at ${page.token.activation.toFixed(
        2,
      )}; its heads read these lines (share of the positive part of its pre-activation):</p><table>${sources || '<tr><td>no context line stood out</td></tr>'}</table>`
    : '';
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="${csp}">
<title>Feature</title>
<style>
  body { font-family: var(--vscode-font-family); color: var(--vscode-foreground); padding: 0 12px 12px; }
  h1 { font-size: 1.2em; } h2 { font-size: 1em; margin-top: 18px; }
  .muted, .where, .act { color: var(--vscode-descriptionForeground); }
  .kind { color: var(--vscode-charts-purple, #b180d7); }
  table { border-collapse: collapse; font-size: 12px; } td { padding: 1px 8px 1px 0; vertical-align: top; }
  code { font-family: var(--vscode-editor-font-family); white-space: pre-wrap; }
  mark { background: color-mix(in srgb, var(--vscode-charts-orange, #e87916) 45%, transparent); color: inherit; }
  a { color: var(--vscode-textLink-foreground); }
</style></head>
<body>
<h1>Feature ${page.feature} of layer ${page.layer}: ${escapeHtml(page.label ?? '(unlabelled)')}</h1>
<p class="muted">A direction of a sparse autoencoder trained on this layer's attention output. Fires on ${(
    (page.frequency ?? 0) * 100
  ).toFixed(2)}% of training tokens; label taken from its top snippets.</p>
${kind}
${token}
<h2>Top snippets (standard library)</h2>
<table>${examples || '<tr><td>none: the feature never fired on the corpus</td></tr>'}</table>
<script nonce="${nonce}">
  const vscode = acquireVsCodeApi();
  document.querySelectorAll('a[data-source]').forEach((a) => a.addEventListener('click', (event) => {
    event.preventDefault(); vscode.postMessage({ type: 'openSource', source: Number(a.dataset.source) });
  }));
</script>
</body></html>`;
}

/** The line with the activating token marked (its first occurrence). */
function highlight(code: string, token: string): string {
  const needle = token.trim();
  const at = needle ? code.indexOf(needle) : -1;
  if (at < 0) {
    return escapeHtml(code);
  }
  return `${escapeHtml(code.slice(0, at))}<mark>${escapeHtml(needle)}</mark>${escapeHtml(code.slice(at + needle.length))}`;
}

