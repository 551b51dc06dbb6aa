"""`bench lsp`'s table: one column per busy-core pass, side by side (quiet, then busy)."""

from __future__ import annotations

import math
from typing import Any, Callable


def print_passes(output: dict[str, Any]) -> None:
    passes = output["passes"]
    first = passes[0]
    method = f" · attribution {first['attribution_method']}" if first.get("attribution_method") else ""
    print(f"server: {first['server']} · model {first.get('model')} / {first.get('device')}{method} · {output['cpus']} CPUs")
    print(f"settings sent: {first.get('options')}")
    if first.get("typing_pace"):
        pace = first["typing_pace"]
        print(f"typing: one didChange per character every {pace['char_ms']:g} ms, ghost text asked after a "
              f"{pace['pause_ms']:g} ms pause")
    header = ["measure"] + [f"{p['busy_cores']} busy core{'' if p['busy_cores'] == 1 else 's'}" for p in passes]
    table = [header] + [[label] + [_cell(cell, p) for p in passes] for label, cell in ROWS
                        if any(_cell(cell, p) != "—" for p in passes)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for n, row in enumerate(table):
        print("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * width for width in widths))


def _cell(cell: Callable[[dict], str], result: dict[str, Any]) -> str:
    try:
        return cell(result)
    except (KeyError, TypeError, ValueError):
        return "—"


def _t(ms: float | None) -> str:
    """A duration given in ms, in the unit a reader takes in at a glance."""
    if ms is None or (isinstance(ms, float) and math.isnan(ms)):
        return "—"
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def _latency(summary: dict) -> str:
    if not summary["n"]:
        return "—"
    ms = summary["ms"]
    empty = f", {summary['empty']} empty" if summary["empty"] else ""
    late = f", {summary['timed_out']} timed out" if summary.get("timed_out") else ""
    return f"{_t(ms['p50'])} / {_t(ms['p95'])} / {_t(ms['max'])} (n={summary['n']}{empty}{late})"


def _lengths(summary: dict) -> str:
    if summary["chars"]["max"] is None:
        return "—"
    share = summary["multiline_share"]
    return (f"{summary['chars']['p50']:.0f} / {summary['chars']['max']} ch, {summary['lines']['p50']:.0f} / "
            f"{summary['lines']['max']} lines, {share:.0%} multi-line")


def _own_rows(rows: dict) -> str:
    """The default's own rows (older result files have none)."""
    first, middle = rows.get("first_token_own"), rows.get("middle_token_own")
    if not first or not middle or first["p50"] is None or middle["p50"] is None:
        return "—"
    return f"{first['p50']:.2f} s / {middle['p50']:.2f} s"


def _row(summary: dict) -> str:
    if not summary["n"]:
        return "—"
    missing = f", {summary['missing']} not within the timeout" if summary["missing"] else ""
    if summary["p50"] is None:
        return f"none in time (n={summary['n']})"
    return f"{summary['p50']:.1f} s / {summary['max']:.1f} s (n={summary['n']}{missing})"


def _pair(summary: dict, second: str) -> str:
    return f"{_t(summary['p50'])} / {_t(summary[second])} (n={summary['n']})"


def _spinners(result: dict) -> str:
    spinners = result["spinners"]
    if not spinners["count"]:
        return "none"
    share = spinners["cpu_share_each"]
    return f"{spinners['count']}, each busy {share:.0%} of the pass" if share is not None else str(spinners["count"])


def _load(result: dict) -> str:
    load = result["load_average"]
    return f"{load['start'][0]:.2f} -> {load['end'][0]:.2f}"


def _background(result: dict) -> str:
    bg = result["during_background"]
    return (f"{_t(bg['busy_p50_ms'])} vs {_t(bg['idle_p50_ms'])} idle ({bg['added_p50_ms']:+.0f} ms p50, "
            f"rows running {bg['background_running_share']:.0%}, n={bg['n']})")


def _long(result: dict) -> str:
    long = result["long_document"]
    return f"{_t(long['long_p50_ms'])} vs {_t(long['short_p50_ms'])} short ({long['ratio']}x, +{long['filler_lines']} lines)"


def _hover(result: dict) -> str:
    hover = result["hover_ready_ms"]
    if not hover["n"]:
        return "—"
    verdict = "meets" if hover["p95"] <= hover["goal_p95"] else "misses"
    return f"{hover['p50']:.1f} / {hover['p95']:.1f} ms (n={hover['n']}; {verdict} p95 <= 25 ms)"


ROWS: list[tuple[str, Callable[[dict], str]]] = [
    ("processes spinning", _spinners),
    ("load average (1 min), start -> end", _load),
    ("initialize answered", lambda r: _t(r["initialize_ms"])),
    ("model ready after", lambda r: f"{r['model_ready_s']:.1f} s"),
    ("ghost text, jump: p50 / p95 / max", lambda r: _latency(r["ghost_text"]["jump"])),
    ("  length p50 / max", lambda r: _lengths(r["ghost_text"]["jump"])),
    ("ghost text, typing: p50 / p95 / max", lambda r: _latency(r["ghost_text"]["typing"])),
    ("  after Enter", lambda r: _latency(r["ghost_text"]["typing_after_enter"])),
    ("  in a line", lambda r: _latency(r["ghost_text"]["typing_in_a_line"])),
    ("  length p50 / max", lambda r: _lengths(r["ghost_text"]["typing"])),
    ("accept -> row, first token: p50 / max", lambda r: _row(r["accept_to_row_s"]["first_token"])),
    ("accept -> row, middle token: p50 / max", lambda r: _row(r["accept_to_row_s"]["middle_token"])),
    ("accept -> the default's own row, first / middle token: p50", lambda r: _own_rows(r["accept_to_row_s"])),
    ("inline answer fields", lambda r: ", ".join(r["answer_fields"]) or "—"),
    ("server shutdown", lambda r: r["shutdown"]),
    ("server notifications", lambda r: ", ".join(f"{k} {v}" for k, v in sorted(r["server_notifications"].items())) or "—"),
    ("completion latency (shlex): p50 / p95", lambda r: _pair(r["completion_ms"], "p95")),
    ("completion, identical request", lambda r: f"{r['completion_cached_ms']:.1f} ms"),
    ("first completion after didOpen", lambda r: f"{_t(r['first_completion_ms']['cold'])} at once, "
                                                 f"{_t(r['first_completion_ms']['warmed'])} after warm-up"),
    ("cold token's row after accept: p50 / max", lambda r: _pair(r["cold_row_ms"], "max")),
    ("all rows of the accepted", lambda r: f"{r['all_rows_after_accepts_s']:.1f} s more"),
    ("hover, row ready: p50 / p95", _hover),
    ("completion during background rows", _background),
    ("keystroke + completion, long document", _long),
]
