"""One record's attribution matrix as its readers see it, built once on the server: the
completion lines with their token rows, the sources ranked into columns, each source's place and
code label, each row's truth (verified by ablation or estimated) and the summary sentence.

The VS Code panel, the "Export as HTML" page and `whence-ls explain --html` all render this view
and rank or group nothing themselves, so the three can never disagree on which source is
strongest. Input is the `whence/attributionMatrix` answer's plain data (tokens, units, scores,
verified, verifying, lines), output is plain data the answer carries as `view`; no LSP and no
model here, so `commands/` and `lsp/` both use it.
"""

from __future__ import annotations

import re
from typing import Any

# a row's state, for the token rows that have no scores: why, and whether to wait for it
SCORED, COMPUTING, EDITED, ZERO_WIDTH = "scored", "computing", "edited", "zero-width"


def matrix_view(matrix: dict[str, Any]) -> dict[str, Any]:
    """The view of a `whence/attributionMatrix`-shaped answer (see the module docstring).

    {columns: source indexes with any weight, strongest first; places and codes: per source, where
    it is and its first line of code; lines: [{line, text, tokens, scores | None, pending, blank}];
    rowStates and truth: per token; summary: the truth of the rows in one sentence; pending:
    token rows still to come}."""
    tokens = matrix.get("tokens") or []
    units = matrix.get("units") or []
    scores = matrix.get("scores") or []
    verified = matrix.get("verified")
    verifying = bool(matrix.get("verifying"))
    rows = [scores[i] if i < len(scores) else None for i in range(len(tokens))]
    states = [row_state(token, rows[i]) for i, token in enumerate(tokens)]
    truth = [row_truth(verified, verifying, i) if rows[i] is not None else None for i in range(len(tokens))]
    return {
        "columns": ranked_columns(rows, len(units)),
        "places": [unit_place(unit) for unit in units],
        "codes": [code_label(unit.get("text") or "") for unit in units],
        "lines": completion_lines(tokens, rows, states, len(units), matrix.get("lines")),
        "rowStates": states,
        "truth": truth,
        "summary": verification_summary(rows, verified, verifying),
        "pending": states.count(COMPUTING),
    }


def ranked_columns(rows: list[list[float] | None], unit_count: int) -> list[int]:
    """Every source with any weight, strongest first: weight is the sum of |share| over the
    computed token rows, so the first columns are the lines that drove the completion most
    (ties: the earlier source first)."""
    weight = [0.0] * unit_count
    for row in rows:
        if row is not None:
            for unit, score in enumerate(row[:unit_count]):
                weight[unit] += abs(score)
    return sorted((unit for unit in range(unit_count) if weight[unit] > 0), key=lambda unit: (-weight[unit], unit))


def completion_lines(tokens: list[dict[str, Any]], rows: list[list[float] | None], states: list[str], unit_count: int,
                     as_read: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """A completion line is the row a reader sees first; its tokens are the rows it expands to.
    Its scores are the mean of its computed token rows (None while none is computed); its text is
    the line as it reads in the editor (`as_read`: `total = ...` where the user typed `tot` and
    the completion's own text is `al = ...`), or its generated code when not given, whitespace
    collapsed. A line with no text and nothing pending is `blank` (the panel leaves it out; the
    exported page still shows its tokens)."""
    lines: dict[int, dict[str, Any]] = {}
    for index, token in enumerate(tokens):
        line = int(token["range"]["start"]["line"])
        entry = lines.setdefault(line, {"line": line, "text": "", "tokens": [], "scores": None, "pending": 0})
        entry["text"] += token.get("text") or ""
        entry["tokens"].append(index)
    read = {int(entry["line"]): entry["text"] for entry in as_read or []}
    for entry in lines.values():
        entry["text"] = " ".join(read.get(entry["line"], entry["text"]).split())
        computed = [rows[i] for i in entry["tokens"] if rows[i] is not None]
        entry["pending"] = sum(1 for i in entry["tokens"] if states[i] == COMPUTING)
        if computed:
            entry["scores"] = [round(sum(row[unit] for row in computed) / len(computed), 6) for unit in range(unit_count)]
        entry["blank"] = not entry["text"] and not entry["pending"]
    return [entry for _, entry in sorted(lines.items())]


def row_state(token: dict[str, Any], row: list[float] | None) -> str:
    """Whether a token's row is there, still computing, or never coming: tokens the user edited,
    and zero-width ones (their text only re-produced what was before the cursor)."""
    if row is not None:
        return SCORED
    if token.get("edited"):
        return EDITED
    start, end = token["range"]["start"], token["range"]["end"]
    return ZERO_WIDTH if start == end else COMPUTING


def unit_place(unit: dict[str, Any]) -> str:
    """Where a source is: `line 12`, `line 40 (below)` or `utils.py:12`."""
    if unit.get("label"):
        return str(unit["label"])
    if unit.get("range"):
        return f"line {unit['range']['start']['line'] + 1}"
    return f"line {int(unit.get('line') or 0) + 1}"


def code_label(text: str, width: int = 36) -> str:
    """A source's code as a column label: its first non-blank line, whitespace collapsed, at most
    `width` characters."""
    first = next((line for line in re.split(r"\r\n|\r|\n", text) if line.strip()), "")
    first = " ".join(first.split())
    return first if len(first) <= width else first[: width - 1] + "…"


def row_truth(verified: list[dict[str, Any] | None] | None, verifying: bool, index: int) -> dict[str, str] | None:
    """A computed row's truth, as a short mark for its header and a sentence for its tooltip:
    verified by ablation (and how far the estimate was), or estimated. None when the answer
    does not say (an answer without `verified`)."""
    if verified is None:
        return None
    check = verified[index] if index < len(verified) else None
    if check is None:
        return {"mark": "~", "sentence": "estimated; verifying by ablation…" if verifying else "estimated"}
    sentence = f"verified by {check.get('masks')} ablations"
    if check.get("sameTop") is True:
        sentence += "; the estimate had the same top line"
    elif isinstance(check.get("rankInEstimate"), int):
        sentence += f"; the estimate ranked this top line #{check['rankInEstimate']}"
    if isinstance(check.get("estimateLds"), (int, float)):
        sentence += f" (estimate's LDS on these ablations {check['estimateLds']:.2f})"
    return {"mark": "✓", "sentence": sentence}


def verification_summary(rows: list[list[float] | None], verified: list[dict[str, Any] | None] | None, verifying: bool) -> str:
    """"5 of 8 rows verified by 16 ablations, the rest estimated", for the page's heading; "" when
    no row is computed or the answer does not say."""
    scored = [i for i, row in enumerate(rows) if row is not None]
    if not scored or verified is None:
        return ""
    checks = [verified[i] for i in scored if i < len(verified) and verified[i] is not None]
    still = " (verifying by ablation…)" if verifying else ""
    if not checks:
        return f"rows estimated{still}"
    masks = "/".join(str(m) for m in dict.fromkeys(check.get("masks") for check in checks))
    if len(checks) == len(scored):
        return f"every row verified by {masks} ablations"
    return f"{len(checks)} of {len(scored)} rows verified by {masks} ablations, the rest estimated{still}"
