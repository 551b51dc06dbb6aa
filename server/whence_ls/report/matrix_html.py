"""A self-contained HTML page of one record's attribution, for people who read pictures rather
than tables: `whence-ls explain ... --html out.html`, and "Export as HTML" in VS Code.

Two views of the same rows. The picture (BertViz's idea: text on both sides, weights as
strength): the sources on the left, the completion's lines and tokens on the right; pointing at
a line or a token lights up the sources that drove it. The table: completion lines x the 20
strongest sources. Input is the `whence/attributionMatrix` answer's shape (plain data) with its
`view` (`report/matrix_view.py`: the grouping and ranking, made once there, never here), so the
CLI, the server and the VS Code panel show the same lines and columns; the page needs no
network and no script from elsewhere.
"""

from __future__ import annotations

import html
import json
from typing import Any

from whence_ls.report.matrix_view import code_label

_STYLE = """
:root { --bg: #ffffff; --fg: #1f2328; --muted: #656d76; --warm: 232, 121, 22; --cool: 38, 125, 230; --line: #d0d7de; }
@media (prefers-color-scheme: dark) { :root { --bg: #1e1e1e; --fg: #d4d4d4; --muted: #9da5b4; --line: #3c3c3c; } }
body { background: var(--bg); color: var(--fg); font: 14px system-ui, sans-serif; margin: 16px; }
h1 { font-size: 1.2em; margin: 0 0 4px; } .muted { color: var(--muted); }
code, .code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; white-space: pre; }
.views { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 24px; margin: 12px 0 24px; }
.pane { border: 1px solid var(--line); border-radius: 6px; padding: 8px; overflow: auto; max-height: 70vh; }
.source { display: flex; gap: 10px; padding: 1px 4px; border-radius: 3px; }
.source .place { color: var(--muted); min-width: 9em; text-align: right; }
.source .share { color: var(--muted); min-width: 3.5em; text-align: right; }
.target { padding: 2px 4px; cursor: pointer; border-radius: 3px; }
.target.active { outline: 2px solid rgba(var(--warm), 0.9); }
.token { cursor: pointer; border-bottom: 1px dotted var(--muted); }
.token.active { background: rgba(var(--warm), 0.35); }
table { border-collapse: collapse; } th, td { padding: 2px 6px; border: 1px solid var(--line); font-size: 12px; }
th.col { font-weight: normal; vertical-align: bottom; }
th.col div { writing-mode: vertical-rl; transform: rotate(180deg); max-height: 200px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
h2 { font-size: 1em; margin-top: 24px; }
td.cell { text-align: center; min-width: 30px; }
"""

_SCRIPT = """
const data = JSON.parse(document.getElementById('data').textContent);
const sources = document.getElementById('sources');
function show(row, element) {
  document.querySelectorAll('.active').forEach((e) => e.classList.remove('active'));
  element.classList.add('active');
  const max = row ? Math.max(...row.map(Math.abs)) || 1 : 1;
  document.querySelectorAll('.source').forEach((div) => {
    const u = Number(div.dataset.unit);
    const v = row ? row[u] : 0;
    const a = Math.min(1, Math.abs(v) / max);
    div.style.background = a > 0.02 ? `rgba(var(${v < 0 ? '--cool' : '--warm'}), ${(0.08 + 0.72 * a).toFixed(3)})` : '';
    div.querySelector('.share').textContent = Math.abs(v) >= 0.005 ? (v < 0 ? '−' : '') + Math.round(Math.abs(v) * 100) + '%' : '';
  });
}
// a line's row is the view's (the mean of its token rows, made on the server); a token's is its own
document.querySelectorAll('.target').forEach((el) => el.addEventListener('mouseenter', () => show(data.lines[Number(el.dataset.line)], el)));
document.querySelectorAll('.token').forEach((el) => el.addEventListener('mouseenter', (e) => { e.stopPropagation(); show(data.scores[Number(el.dataset.token)], el); }));
const first = document.querySelector('.target');
if (first) show(data.lines[Number(first.dataset.line)], first);
"""

TOP_COLUMNS = 20


def render_matrix_html(matrix: dict[str, Any], *, title: str) -> str:
    """The page for a `whence/attributionMatrix`-shaped answer: tokens (text, prob), units (text),
    scores (a row per token, or None) and `view` (`matrix_view`: lines, ranked columns, places)."""
    tokens = matrix.get("tokens") or []
    units = matrix.get("units") or []
    scores = matrix.get("scores") or []
    view = matrix["view"]
    places = view["places"]
    columns = view["columns"][:TOP_COLUMNS]
    weighted = sorted(view["columns"])  # the picture lists the sources in file order

    source_html = "".join(
        f'<div class="source" data-unit="{u}"><span class="place">{html.escape(places[u])}</span>'
        f'<span class="share"></span><span class="code">{html.escape(units[u]["text"].splitlines()[0] if units[u]["text"] else "")}</span></div>'
        for u in weighted
    ) or '<p class="muted">no source has any weight yet</p>'
    target_html = []
    for k, entry in enumerate(view["lines"]):
        line, indices = entry["line"], entry["tokens"]
        pieces = "".join(
            f'<span class="token" data-token="{i}" title="p = {tokens[i]["prob"]:.2f}">{html.escape(tokens[i]["text"].replace(chr(10), ""))}</span>'
            for i in indices
        )
        label = f"line {line + 1}"
        target_html.append(f'<div class="target code" data-line="{k}"><span class="muted">{label}</span>  {pieces}</div>')
    header = "".join(f'<th class="col"><div>{html.escape(places[u])} {html.escape(view["codes"][u])}</div></th>' for u in columns)
    body = []
    for entry in view["lines"]:
        row, text = entry["scores"], entry["text"]
        if row is None:
            cells = f'<td colspan="{max(1, len(columns))}" class="muted">not computed</td>'
        else:
            peak = max((abs(row[u]) for u in columns), default=0) or 1.0
            cells = "".join(_cell(row[u], peak) for u in columns)
        body.append(f'<tr><th class="code">{html.escape(code_label(text, 60))}</th>{cells}</tr>')
    payload = json.dumps({"units": [{"label": place} for place in places], "scores": scores,
                          "lines": [entry["scores"] for entry in view["lines"]]}).replace("<", "\\u003c")
    note = html.escape(str(matrix.get("note") or ""))
    method = html.escape(str(matrix.get("method", "")).replace("_", " "))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<style>{_STYLE}</style></head>
<body>
<h1>What drove this completion: {html.escape(title)}</h1>
<p class="muted">{method}{': ' + note if note else ''}</p>
<p class="muted">Point at a line or a token on the right: the sources on the left light up by their share of its attribution (warm: drove it, cool: pushed away from it).</p>
<div class="views"><div class="pane" id="sources">{source_html}</div><div class="pane">{''.join(target_html)}</div></div>
<h2>Completion lines x the {len(columns)} strongest sources (% of each line's attribution)</h2>
<table><thead><tr><th></th>{header}</tr></thead><tbody>{''.join(body)}</tbody></table>
<script type="application/json" id="data">{payload}</script>
<script>{_SCRIPT}</script>
</body></html>
"""


def _cell(score: float, peak: float) -> str:
    strength = min(1.0, abs(score) / peak) if peak else 0.0
    colour = "var(--cool)" if score < 0 else "var(--warm)"
    style = f' style="background: rgba({colour}, {0.08 + 0.72 * strength:.3f})"' if strength > 0.02 else ""
    number = f"{round(abs(score) * 100)}" if abs(score) >= 0.05 else ""
    return f'<td class="cell"{style} title="{score:+.1%}">{number}</td>'
