"""The figures `whence-ls bench attribution` hands to the product: per method, the LDS, top-1,
top-3 and copy-case shares of a run, written into the package's
`engine/attribution/benchmark_figures.json`, which the method catalogue's notes quote. Only the
methods the run measured are replaced; figures from other runs (the estimators' benchmark, the
re-verification, the cost run) stay as they are."""

from __future__ import annotations

import json
from pathlib import Path

from whence_ls.engine.attribution import catalogue

PACKAGE_FIGURES = Path(catalogue.__file__).with_name(catalogue.FIGURES_FILE)


def figures_of(summary: dict) -> dict[str, dict]:
    """`summarise`'s table as the catalogue reads it (shares as fractions, 3 decimals)."""
    found = {}
    packages = {t["package"] for t in summary["targets"]}
    for method, entry in summary["methods"].items():
        every = entry["all"]
        values = {"lds": every["lds"], "top1": every["top1"], "top3": every["top3"], "copy": entry["copy_top_is_occurrence"]}
        figures = {key: round(value, 3) for key, value in values.items() if value is not None}
        figures["run"] = f"bench attribution, {len(summary['targets'])} targets from {len(packages)} packages, {every['rows']} tokens"
        found[method] = figures
    return found


def write_figures(summary: dict, path: Path = PACKAGE_FIGURES) -> None:
    saved = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"methods": {}}
    for method, figures in figures_of(summary).items():
        kept = {k: v for k, v in saved["methods"].get(method, {}).items() if k not in ("lds", "top1", "top3", "copy", "run")}
        saved["methods"][method] = {**figures, **kept}
    path.write_text(json.dumps(saved, indent=1) + "\n", encoding="utf-8")
