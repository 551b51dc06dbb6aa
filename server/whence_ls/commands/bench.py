"""`whence-ls bench KIND`: the project's benchmarks (numbers in issues are measured here)."""

from __future__ import annotations

import importlib

# Each benchmark is a module `whence_ls.commands.bench_<kind>` with `add_parser(subparsers)`.
BENCH_MODULES: list[str] = ["generate", "typing", "quality", "trace", "lsp", "attribution", "attribution_estimators", "attribution_learned", "attribution_units", "sae", "retention", "gpu"]


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark and print its table")
    kinds = parser.add_subparsers(dest="bench_kind", metavar="KIND")
    kinds.required = True
    for name in BENCH_MODULES:
        importlib.import_module(f"whence_ls.commands.bench_{name}").add_parser(kinds)
