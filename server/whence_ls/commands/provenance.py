"""`whence-ls provenance export [--format json|csv]`: the accepted completions of a workspace,
with what of each was kept; `whence-ls provenance stats`: acceptance, retention and flags."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("provenance", help="the log of accepted completions")
    actions = parser.add_subparsers(dest="provenance_action", metavar="ACTION")
    actions.required = True
    export = actions.add_parser("export", help="print every accepted completion with its evidence")
    export.add_argument("--format", choices=["json", "csv"], default="json")
    export.add_argument("--workspace", default=".", metavar="DIR", help="workspace whose .whence/ log to read (default: .)")
    export.set_defaults(run=run_export)
    stats = actions.add_parser("stats", help="shown-to-accepted rate, retention at each checkpoint, edits of flagged tokens")
    stats.add_argument("--workspace", default=".", metavar="DIR", help="workspace whose .whence/ log to read (default: .)")
    stats.add_argument("--format", choices=["text", "json"], default="text")
    stats.set_defaults(run=run_stats)


def _read(workspace: str):
    from whence_ls.errors import WhenceError
    from whence_ls.provenance import log_path, read_rows, read_shown

    path = log_path(Path(workspace).expanduser().resolve())
    if not path.is_file():
        raise WhenceError(f"no provenance log at {path}: nothing was accepted in this workspace yet")
    try:
        return path, read_rows(path), read_shown(path)
    except Exception as exc:  # sqlite3.DatabaseError and friends: say which file is bad
        raise WhenceError(f"cannot read the provenance log {path}: {exc}") from exc


def run_stats(args) -> int:
    from whence_ls.lsp.state.retention_stats import as_text, summarize

    path, rows, shown = _read(args.workspace)
    summary = summarize(rows, shown)
    if args.format == "json":
        print(json.dumps({"log": str(path), **summary}, indent=2))
    else:
        print(f"log: {path}")
        print(as_text(summary))
    return 0


def run_export(args) -> int:
    from whence_ls.provenance import to_csv

    path, rows, _ = _read(args.workspace)
    if args.format == "csv":
        sys.stdout.write(to_csv(rows))
    else:
        print(json.dumps({"log": str(path), "accepted": rows}, indent=2, ensure_ascii=False))
    return 0
