"""What the provenance log says about what the programmer kept: the numbers behind
`whence-ls provenance stats` and the retention view (`whence/retentionReport`), from the rows of
`provenance.read_rows` and `read_shown`. Plain data in, plain data out."""

from __future__ import annotations

import statistics
import time
from typing import Any

from whence_ls.engine.confidence import readable
from whence_ls.lsp.state.workspace_flags import MIN_EDITED_TOKENS

TIMED = ("30s", "120s", "600s")
LABELS = {"30s": "30 s", "120s": "2 min", "600s": "10 min", "save": "at save", "close": "at close"}
RELIABILITY_BINS = 5
MOST_REWRITTEN = 10


def checkpoint_label(name: str) -> str:
    if name in LABELS:
        return LABELS[name]
    if name.endswith("s"):
        try:
            seconds = float(name[:-1])
            return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
        except ValueError:
            pass
    return name


def _order(name: str) -> tuple[int, float, str]:
    if name in ("save", "close"):
        return (1, 0.0 if name == "save" else 1.0, name)
    try:
        return (0, float(name[:-1]), name)
    except ValueError:
        return (2, 0.0, name)


def summarize(rows: list[dict[str, Any]], shown: list[tuple[str, float]]) -> dict[str, Any]:
    completions = [r for r in rows if r.get("kind") in ("completion", "regenerated")]
    shown_ids = {completion_id for completion_id, _ in shown}
    accepted_shown = sum(1 for r in completions if r["id"] in shown_ids)
    acceptance = {"shown": len(shown_ids), "accepted": len(completions), "acceptedOfShown": accepted_shown,
                  "rate": accepted_shown / len(shown_ids) if shown_ids else None}

    names = sorted({name for r in completions for name in r.get("checkpoints") or {}}, key=_order)
    retention = []
    for name in names:
        marks = [r["checkpoints"][name]["kept_share"] for r in completions if name in (r.get("checkpoints") or {})]
        retention.append({"checkpoint": name, "label": checkpoint_label(name), "completions": len(marks),
                          "meanKeptShare": statistics.mean(marks) if marks else None})

    flagged = {"tokens": 0, "edited": 0}
    unflagged = {"tokens": 0, "edited": 0}
    bins = [{"low": b / RELIABILITY_BINS, "high": (b + 1) / RELIABILITY_BINS, "tokens": 0, "edited": 0, "scoreSum": 0.0}
            for b in range(RELIABILITY_BINS)]
    for row in completions:
        tokens = [t for t in row.get("kept_tokens") or [] if t["kept"] is not None]
        if not tokens or not any(t["kept"] for t in tokens):
            continue  # no checkpoint yet, or deleted as a whole: a verdict on the completion, not its tokens
        for token in tokens:
            if not readable(token.get("text") or "") or token.get("flag_score") is None:
                continue
            edited = not token["kept"]
            side = flagged if token["flagged"] else unflagged
            side["tokens"] += 1
            side["edited"] += edited
            cell = bins[min(RELIABILITY_BINS - 1, int(token["flag_score"] * RELIABILITY_BINS))]
            cell["tokens"] += 1
            cell["edited"] += edited
            cell["scoreSum"] += token["flag_score"]
    for side in (flagged, unflagged):
        side["editRate"] = side["edited"] / side["tokens"] if side["tokens"] else None
    reliability = [{"low": c["low"], "high": c["high"], "tokens": c["tokens"], "edited": c["edited"],
                    "meanScore": c["scoreSum"] / c["tokens"] if c["tokens"] else None,
                    "editRate": c["edited"] / c["tokens"] if c["tokens"] else None} for c in bins]

    rewritten = sorted((r for r in completions if r.get("kept_share") is not None), key=lambda r: (r["kept_share"], -r["accepted_at"]))
    most = [{"id": r["id"], "uri": r["uri"], "line": r.get("start_line"), "keptShare": r["kept_share"],
             "text": (r["text"].strip().splitlines() or [""])[0][:80], "acceptedAt": r["accepted_at_iso"]}
            for r in rewritten[:MOST_REWRITTEN] if r["kept_share"] < 1.0]

    edited_tokens = flagged["edited"] + unflagged["edited"]
    return {"acceptance": acceptance, "retention": retention, "flagged": flagged, "unflagged": unflagged,
            "reliability": reliability, "timeline": timeline(completions, shown), "mostRewritten": most,
            "editedTokens": edited_tokens, "workspaceFlagsNeed": MIN_EDITED_TOKENS}


def timeline(completions: list[dict[str, Any]], shown: list[tuple[str, float]]) -> list[dict[str, Any]]:
    """Per period (an hour when the log spans under two days, else a day): completions shown,
    accepted, and the mean kept share at their last checkpoint."""
    times = [r["accepted_at"] for r in completions] + [at for _, at in shown]
    if not times:
        return []
    step = 3600.0 if max(times) - min(times) < 2 * 86400 else 86400.0
    fmt = "%Y-%m-%d %H:00" if step == 3600.0 else "%Y-%m-%d"
    periods: dict[float, dict[str, Any]] = {}

    def period(at: float) -> dict[str, Any]:
        key = at - at % step
        return periods.setdefault(key, {"period": time.strftime(fmt, time.gmtime(key)), "shown": 0, "accepted": 0, "kept": []})

    for _, at in shown:
        period(at)["shown"] += 1
    for row in completions:
        cell = period(row["accepted_at"])
        cell["accepted"] += 1
        if row.get("kept_share") is not None:
            cell["kept"].append(row["kept_share"])
    return [{"period": c["period"], "shown": c["shown"], "accepted": c["accepted"],
             "meanKeptShare": statistics.mean(c["kept"]) if c["kept"] else None} for _, c in sorted(periods.items())]


def as_text(summary: dict[str, Any]) -> str:
    """The summary for a terminal (`whence-ls provenance stats`)."""
    lines = []
    a = summary["acceptance"]
    if a["shown"]:
        lines.append(f"shown to accepted: {a['acceptedOfShown']} of {a['shown']} shown completions accepted ({a['rate']:.0%}); "
                     f"{a['accepted']} accepted in all")
    else:
        lines.append(f"shown to accepted: no shown completions logged (the client reports them); {a['accepted']} accepted")
    lines.append("retention (accepted characters still as written):")
    if not summary["retention"]:
        lines.append("  no checkpoint yet")
    for r in summary["retention"]:
        lines.append(f"  {r['label']:>9}: {r['meanKeptShare']:.0%} kept (mean over {r['completions']} completions)")
    lines.append("tokens edited after the accept (readable tokens of completions not deleted as a whole):")
    for name in ("flagged", "unflagged"):
        side = summary[name]
        rate = f"{side['editRate']:.0%}" if side["editRate"] is not None else "n/a"
        lines.append(f"  {name:>9}: {side['edited']} of {side['tokens']} edited ({rate})")
    lines.append("edit rate by flag score (reliability of the flags):")
    for cell in summary["reliability"]:
        if cell["tokens"]:
            lines.append(f"  score {cell['low']:.1f}-{cell['high']:.1f}: {cell['edited']} of {cell['tokens']} edited ({cell['editRate']:.0%})")
    need = summary["workspaceFlagsNeed"]
    lines.append(f"workspace flags: {summary['editedTokens']} edited tokens logged; the flag learns from this workspace "
                 f"from {need} on (setting whence.workspaceFlags)")
    if summary["mostRewritten"]:
        lines.append("most rewritten:")
        for m in summary["mostRewritten"]:
            lines.append(f"  {m['keptShare']:.0%} kept  {m['uri']}:{(m['line'] or 0) + 1}  {m['text']}")
    return "\n".join(lines)
