// The retention view's page: the server renders the plots (inline SVG, `whence/retentionReport`),
// this wraps them in a webview page with a strict CSP, an export button, and a script that asks
// the extension to open the linked completions (a webview cannot open editors itself).

export interface RetentionReport {
  log: string;
  summary: {
    acceptance: { shown: number; accepted: number; acceptedOfShown: number; rate: number | null };
    retention: { checkpoint: string; label: string; completions: number; meanKeptShare: number | null }[];
    editedTokens: number;
    mostRewritten: { id: string; uri: string; line: number | null; keptShare: number; text: string }[];
  };
  /** Server-rendered HTML (escaped text, inline SVG, no script). */
  body: string;
  style: string;
  /** A standalone HTML document of the same report, for export. */
  page: string;
}

export type RetentionMessage = { kind: 'open'; uri: string; line: number } | { kind: 'export' };

export function parseRetentionReport(value: unknown): RetentionReport | undefined {
  const report = value as Partial<RetentionReport> | null;
  if (!report || typeof report.body !== 'string' || typeof report.page !== 'string' || typeof report.summary !== 'object') {
    return undefined;
  }
  return { ...(report as RetentionReport), log: String(report.log ?? ''), style: String(report.style ?? '') };
}

export function parseRetentionMessage(value: unknown): RetentionMessage | undefined {
  const message = value as { open?: { uri?: unknown; line?: unknown }; export?: unknown } | null;
  if (message?.export === true) {
    return { kind: 'export' };
  }
  const open = message?.open;
  if (open && typeof open.uri === 'string' && /^file:/.test(open.uri) && Number.isInteger(open.line) && (open.line as number) >= 0) {
    return { kind: 'open', uri: open.uri, line: open.line as number };
  }
  return undefined;
}

export function renderRetentionWebview(report: RetentionReport, cspSource: string, nonce: string): string {
  const csp = ["default-src 'none'", `style-src ${cspSource} 'unsafe-inline'`, `img-src ${cspSource} data:`, `script-src 'nonce-${nonce}'`].join('; ');
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="${csp}">
<title>whence: what the programmer kept</title><style>${report.style}
.actions { float: right; } button { font: inherit; padding: 2px 10px; }</style></head>
<body><div class="actions"><button id="export" type="button">Export as HTML</button></div>
${report.body}
<script nonce="${nonce}">
const vscode = acquireVsCodeApi();
document.getElementById('export').addEventListener('click', () => vscode.postMessage({ export: true }));
for (const link of document.querySelectorAll('a[data-uri]')) {
  link.addEventListener('click', (event) => {
    event.preventDefault();
    vscode.postMessage({ open: { uri: link.dataset.uri, line: Number(link.dataset.line) } });
  });
}
</script></body></html>`;
}
