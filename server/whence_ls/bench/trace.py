"""`whence-ls bench trace`: recall per kind of copy, false positives and query latency of a
trace index (docs/bench-trace.md has the table and how it was run)."""


from __future__ import annotations

import importlib.util
import json
import os
import random
import sys

from whence_ls.errors import WhenceError

# packages whose code is not in the standard library (and vendors none of it): negatives
_NEGATIVE_PACKAGES = ("transformers", "sentence_transformers", "torch", "sklearn", "scipy")


def _default_negative_roots() -> list[str]:
    roots = []
    for name in _NEGATIVE_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            roots.append(list(spec.submodule_search_locations)[0])
    return roots


def run(args) -> int:
    from whence_ls.paths import default_index_dir
    from whence_ls.trace import open_index
    from whence_ls.bench import trace_index as bench

    index = open_index(args.index or default_index_dir())
    rng = random.Random(args.seed)
    queries = bench.make_queries(index, args.queries, rng)
    roots = args.negatives or _default_negative_roots()
    for root in roots:
        if not os.path.exists(root):
            raise WhenceError(f"negatives path does not exist: {root}")
    negatives = bench.negative_queries(roots, args.queries, rng)
    if not queries or not negatives:
        raise WhenceError("not enough chunks to make benchmark queries from")
    all_queries = queries + negatives

    if args.fit:
        coefficients, similar, counts = bench.fit_calibration(index, all_queries)
        print(f"fitted on {counts}", file=sys.stderr)
        print("COEFFICIENTS = (" + ", ".join(f"{c:.3f}" for c in coefficients) + ")")
        print("SIMILAR_COEFFICIENTS = (" + ", ".join(f"{c:.3f}" for c in similar) + ")")
        return 0

    index.search(queries[0].text)  # load the embedding table before timing
    results = bench.evaluate(index, all_queries)
    report = {"index": str(index.path), "chunks": index.manifest["chunks"],
              "embedding": index.manifest.get("embedding"), "kinds": {}}
    latencies = []
    for kind, result in results.items():
        report["kinds"][kind] = result.row()
        latencies += result.latencies_ms
    report["latency_ms"] = {"p50": bench.percentile(latencies, 0.5), "p95": bench.percentile(latencies, 0.95)}
    if args.scale:
        facts = bench.scale_up(index, args.scale, rng)
        index.search(queries[0].text)
        scaled = bench.evaluate(index, all_queries)
        scaled_latencies = [ms for r in scaled.values() for ms in r.latencies_ms]
        report["scaled"] = {**facts, "p50": bench.percentile(scaled_latencies, 0.5),
                            "p95": bench.percentile(scaled_latencies, 0.95)}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0


def format_report(report: dict) -> str:
    lines = [f"index {report['index']} ({report['chunks']} chunks, {report['embedding']} embeddings)",
             "", "| queries | n | recall@1 | recall@5 | shown (FP rate for negatives) |",
             "|---|---|---|---|---|"]
    for kind in ("exact", "span", "span>=40", "reformatted", "renamed", "edited", "boilerplate", "negative"):
        row = report["kinds"].get(kind)
        if row is None:
            continue
        if kind in ("negative", "boilerplate"):
            lines.append(f"| {kind} | {row['queries']} | - | - | {row['shown']:.1%} |")
        else:
            lines.append(f"| {kind} | {row['queries']} | {row['recall@1']:.1%} | {row['recall@5']:.1%} | {row['shown']:.1%} |")
    latency = report["latency_ms"]
    lines += ["", f"latency, one query at a time: p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms"]
    if "scaled" in report:
        s = report["scaled"]
        lines.append(f"scaled to {s['chunks']} chunks ({s['vector_index']}, built in {s['vector_build_seconds']} s; "
                     f"fingerprints {s['fingerprints']}): p50 {s['p50']:.1f} ms, p95 {s['p95']:.1f} ms")
    return "\n".join(lines)
