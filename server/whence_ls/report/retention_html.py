"""The retention view as HTML with inline SVG plots (no script, no network): acceptance and
retention over time, retention at each checkpoint, edit rate by flag score (a reliability
diagram of the flags), and the most rewritten completions with links to where they are.

Input is the plain summary of `lsp/state/retention_stats.py`; this module imports nothing of the
project. `body` is what the VS Code view shows inside its own page (links carry `data-uri` and
`data-line` for it to open); `page` is a standalone document for export.
"""

from __future__ import annotations

from html import escape
from typing import Any

W, H = 520, 200
PAD_L, PAD_R, PAD_T, PAD_B = 44, 44, 22, 36
STYLE = """
body { font-family: var(--vscode-font-family, sans-serif); color: var(--vscode-foreground, #222);
       background: var(--vscode-editor-background, #fff); margin: 12px 18px; }
h1 { font-size: 1.3em; margin: 0 0 4px 0; } h2 { font-size: 1.05em; margin: 18px 0 4px 0; }
.lead { opacity: .85; margin: 2px 0 10px 0; } .note { opacity: .7; font-size: .9em; }
svg { display: block; max-width: 100%; } svg text { fill: currentColor; font-size: 11px; }
.axis { stroke: currentColor; stroke-opacity: .5; } .grid { stroke: currentColor; stroke-opacity: .12; }
.shown { fill: #8aa4c8; } .accepted { fill: #2f6db5; } .kept { stroke: #d9822b; fill: none; stroke-width: 2; }
.keptdot { fill: #d9822b; } .bar { fill: #2f6db5; } .edit { fill: #c2453d; } .ideal { stroke: currentColor; stroke-dasharray: 4 3; stroke-opacity: .6; }
table { border-collapse: collapse; font-size: .92em; } td, th { padding: 2px 8px; text-align: left; }
th { border-bottom: 1px solid currentColor; } code { font-family: var(--vscode-editor-font-family, monospace); }
.legend span { margin-right: 14px; } i.shown { background: #8aa4c8; } i.accepted { background: #2f6db5; }
i.keptdot { background: #d9822b; } .swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
"""


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _frame(y_label: str, right_label: str = "") -> list[str]:
    parts = [f'<line class="axis" x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}"/>',
             f'<line class="axis" x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}"/>',
             f'<text x="4" y="12">{escape(y_label)}</text>']
    if right_label:  # above the axis's own 100% mark
        parts.append(f'<text x="{W - PAD_R + 4}" y="12">{escape(right_label)}</text>')
    for k in range(5):
        y = PAD_T + (H - PAD_T - PAD_B) * k / 4
        parts.append(f'<line class="grid" x1="{PAD_L}" y1="{y:.1f}" x2="{W - PAD_R}" y2="{y:.1f}"/>')
    return parts


def _y(fraction: float) -> float:
    return H - PAD_B - (H - PAD_T - PAD_B) * max(0.0, min(1.0, fraction))


def _svg(parts: list[str], label: str) -> str:
    return f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{escape(label)}">' + "".join(parts) + "</svg>"


def timeline_svg(timeline: list[dict[str, Any]]) -> str:
    if not timeline:
        return '<p class="note">nothing shown or accepted yet</p>'
    top = max(max(p["shown"], p["accepted"]) for p in timeline) or 1
    parts = _frame(f"count (max {top})", "kept")
    width = (W - PAD_L - PAD_R) / len(timeline)
    points = []
    for i, p in enumerate(timeline):
        x = PAD_L + i * width
        bar = max(2.0, width * 0.38)
        parts.append(f'<rect class="shown" x="{x + width * 0.1:.1f}" y="{_y(p["shown"] / top):.1f}" width="{bar:.1f}" '
                     f'height="{H - PAD_B - _y(p["shown"] / top):.1f}"><title>{escape(p["period"])}: {p["shown"]} shown</title></rect>')
        parts.append(f'<rect class="accepted" x="{x + width * 0.1 + bar:.1f}" y="{_y(p["accepted"] / top):.1f}" width="{bar:.1f}" '
                     f'height="{H - PAD_B - _y(p["accepted"] / top):.1f}"><title>{escape(p["period"])}: {p["accepted"]} accepted</title></rect>')
        if p["meanKeptShare"] is not None:
            cx, cy = x + width / 2, _y(p["meanKeptShare"])
            points.append(f"{cx:.1f},{cy:.1f}")
            parts.append(f'<circle class="keptdot" cx="{cx:.1f}" cy="{cy:.1f}" r="3"><title>{_pct(p["meanKeptShare"])} kept</title></circle>')
        if i == 0 or i == len(timeline) - 1:
            parts.append(f'<text x="{x + 2:.1f}" y="{H - PAD_B + 14}">{escape(p["period"])}</text>')
    if len(points) > 1:
        parts.append(f'<polyline class="kept" points="{" ".join(points)}"/>')
    parts.append(f'<text x="{W - PAD_R + 4}" y="{_y(1.0) + 4:.1f}">100%</text><text x="{W - PAD_R + 4}" y="{_y(0.0):.1f}">0%</text>')
    return _svg(parts, "acceptance and retention over time")


def retention_svg(retention: list[dict[str, Any]]) -> str:
    marks = [r for r in retention if r["meanKeptShare"] is not None]
    if not marks:
        return '<p class="note">no retention checkpoint yet (the first comes 30 s after an accept, or at a save)</p>'
    parts = _frame("kept")
    width = (W - PAD_L - PAD_R) / len(marks)
    for i, r in enumerate(marks):
        x = PAD_L + i * width + width * 0.2
        y = _y(r["meanKeptShare"])
        parts.append(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{width * 0.6:.1f}" height="{H - PAD_B - y:.1f}">'
                     f'<title>{escape(r["label"])}: {_pct(r["meanKeptShare"])} over {r["completions"]}</title></rect>')
        parts.append(f'<text x="{x:.1f}" y="{y - 4:.1f}">{_pct(r["meanKeptShare"])} (n={r["completions"]})</text>')
        parts.append(f'<text x="{x:.1f}" y="{H - PAD_B + 14}">{escape(r["label"])}</text>')
    return _svg(parts, "retention at each checkpoint")


def reliability_svg(reliability: list[dict[str, Any]]) -> str:
    if not any(c["tokens"] for c in reliability):
        return '<p class="note">no edited or kept tokens yet</p>'
    parts = _frame("edited")
    span = W - PAD_L - PAD_R
    parts.append(f'<line class="ideal" x1="{PAD_L}" y1="{_y(0):.1f}" x2="{W - PAD_R}" y2="{_y(1):.1f}"><title>where the flag score '
                 'would be the edit rate</title></line>')
    for c in reliability:
        x = PAD_L + span * c["low"]
        parts.append(f'<text x="{x:.1f}" y="{H - PAD_B + 14}">{c["low"]:.1f}</text>')
        if not c["tokens"]:
            continue
        y = _y(c["editRate"])
        parts.append(f'<rect class="edit" x="{x + 3:.1f}" y="{y:.1f}" width="{span / len(reliability) - 6:.1f}" height="{H - PAD_B - y:.1f}">'
                     f'<title>flag score {c["low"]:.1f}-{c["high"]:.1f}: {c["edited"]} of {c["tokens"]} edited</title></rect>')
        parts.append(f'<text x="{x + 4:.1f}" y="{y - 4:.1f}">{c["edited"]}/{c["tokens"]}</text>')
    parts.append(f'<text x="{W - PAD_R - 60}" y="{H - 4}">flag score</text>')
    return _svg(parts, "edit rate by flag score")


def render_body(summary: dict[str, Any], log_path: str = "") -> str:
    a, f, u = summary["acceptance"], summary["flagged"], summary["unflagged"]
    rate = (f"{a['acceptedOfShown']} of {a['shown']} shown completions accepted ({_pct(a['rate'])})" if a["shown"]
            else "no shown completions logged")
    out = ["<h1>What the programmer kept</h1>",
           f'<p class="lead">{escape(rate)}; {a["accepted"]} accepted in all. Flagged tokens edited: {f["edited"]} of {f["tokens"]} '
           f'({_pct(f["editRate"])}); unflagged: {u["edited"]} of {u["tokens"]} ({_pct(u["editRate"])}).</p>',
           "<h2>Acceptance and retention over time</h2>",
           '<p class="legend note"><span><i class="swatch shown"></i>shown</span><span><i class="swatch accepted"></i>accepted</span>'
           '<span><i class="swatch keptdot"></i>kept at the last checkpoint</span></p>',
           timeline_svg(summary["timeline"]),
           "<h2>Retention at each checkpoint</h2>", retention_svg(summary["retention"]),
           "<h2>Edit rate by confidence (reliability of the flags)</h2>",
           '<p class="note">bars: share of tokens with that flag score that were edited after the accept; dashed: a flag score '
           "that is its own edit rate</p>", reliability_svg(summary["reliability"]),
           "<h2>Most rewritten completions</h2>"]
    if summary["mostRewritten"]:
        out.append("<table><tr><th>kept</th><th>where</th><th>accepted</th><th>completion</th></tr>")
        for m in summary["mostRewritten"]:
            line = (m["line"] or 0) + 1
            name = m["uri"].rsplit("/", 1)[-1]
            out.append(f'<tr><td>{_pct(m["keptShare"])}</td><td><a href="{escape(m["uri"])}#L{line}" data-uri="{escape(m["uri"])}" '
                       f'data-line="{line - 1}">{escape(name)}:{line}</a></td><td>{escape(m["acceptedAt"])}</td>'
                       f'<td><code>{escape(m["text"])}</code></td></tr>')
        out.append("</table>")
    else:
        out.append('<p class="note">none rewritten yet</p>')
    learned = summary["editedTokens"] >= summary["workspaceFlagsNeed"]
    out.append(f'<p class="note">{summary["editedTokens"]} edited tokens logged; the flag learns from this workspace from '
               f'{summary["workspaceFlagsNeed"]} on{" (reached)" if learned else ""}, when whence.workspaceFlags is on.'
               + (f" Log: {escape(log_path)}" if log_path else "") + "</p>")
    return "\n".join(out)


def render_page(summary: dict[str, Any], log_path: str = "") -> str:
    """A standalone HTML document (the export)."""
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>whence: what the programmer kept</title>'
            f"<style>{STYLE}</style></head><body>{render_body(summary, log_path)}</body></html>\n")
