"""`whence-ls provenance export [--format json|csv]`: the accepted completions of a workspace."""

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


def run_export(args) -> int:
    from whence_ls.errors import WhenceError
    from whence_ls.lsp.provenance import log_path, read_rows, to_csv

    path = log_path(Path(args.workspace).expanduser().resolve())
    if not path.is_file():
        raise WhenceError(f"no provenance log at {path}: nothing was accepted in this workspace yet")
    try:
        rows = read_rows(path)
    except Exception as exc:  # sqlite3.DatabaseError and friends: say which file is bad
        raise WhenceError(f"cannot read the provenance log {path}: {exc}") from exc
    if args.format == "csv":
        sys.stdout.write(to_csv(rows))
    else:
        print(json.dumps({"log": str(path), "accepted": rows}, indent=2, ensure_ascii=False))
    return 0
