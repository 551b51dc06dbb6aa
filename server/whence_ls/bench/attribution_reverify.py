"""`whence-ls bench attribution --reverify DIR`: verified rows with other settings, on the suite's
targets, without running the suite again.

A suite run with `--dump DIR` saves each target's held-out truth (masks and outcomes) and every
method's scores. This rebuilds each dumped target's record (generation is deterministic; a
target whose tokens or sources no longer match its dump is skipped and said so), runs the
verification's masked forwards for each tail, and scores the rows each mask count and fit gives
against the saved truth, with the suite's own definitions (`attribution_verified.score_target`).
The masks are the suite's own (seeded by the target's number) extended to the largest count, so
the first 32 are the ones the dump's exact ablation used.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

PRIOR_METHOD = "calibrated_attention"  # the estimate that the server's verification starts from


def reverify(lm, dump_dir: str, *, tails: tuple[int | None, ...], mask_counts: tuple[int, ...], context_tokens: int,
             max_new_tokens: int, rows_per_target: int, log: Callable[[str], None], precision: str = "fp32",
             prior_from: str = "current") -> dict:
    """`prior_from`: "current" computes the estimate (the prior) with this version's default
    method, as the server does; "dump" reads the one the suite saved (the version that ran it)."""
    from whence_ls.bench.attribution import heldout_targets
    from whence_ls.bench.attribution_verified import score_target, summarise
    from whence_ls.engine.attribution import attribute_rows
    from whence_ls.engine.attribution.ablation import ablatable_sources, random_masks
    from whence_ls.engine.attribution.units import build_unit_map
    from whence_ls.engine.attribution.verification import Verification, advance, fit_with_prior
    from whence_ls.engine.generation import complete_at

    paths = sorted(Path(dump_dir).glob("target*.npz"))
    if not paths:
        raise SystemExit(f"no target*.npz in {dump_dir}: run `whence-ls bench attribution --dump {dump_dir}` first")
    targets = heldout_targets(max(int(p.stem[len("target"):]) for p in paths) + 1)
    totals: dict[str, dict[str, list]] = {}
    seconds: dict[str, list[float]] = {}
    skipped = []
    for path in paths:
        number = int(path.stem[len("target"):])
        saved = dict(np.load(path))
        target = targets[number]
        record = complete_at(lm, target.text, target.cursor, language="python", max_new_tokens=max_new_tokens, context_tokens=context_tokens)
        indices = [i for i, t in enumerate(record.tokens) if t.text.strip()][:rows_per_target]
        units = build_unit_map(record.context, "python")
        sources = ablatable_sources(units)
        if (len(indices), len(sources)) != (saved["truth_outcomes"].shape[1], saved["truth_masks"].shape[1]):
            skipped.append(number)
            log(f"target {number}: skipped, its record no longer matches the dump (other settings or model?)")
            continue
        masks = random_masks(max(mask_counts), len(sources), number)
        matrices = {name: saved[f"scores_{name}"] for name in (PRIOR_METHOD, "ablation_32") if f"scores_{name}" in saved}
        prior = saved.get(f"scores_{PRIOR_METHOD}")
        if prior_from == "current":
            rows = attribute_rows(lm, record, indices, PRIOR_METHOD, language="python")
            prior = np.array([[rows[i].scores[s] for s in sources] for i in indices])
            matrices[f"{PRIOR_METHOD} (this version)"] = prior
        for tail in tails:
            state = Verification(indices=indices, sources=sources, masks=masks, tail=tail, precision=precision)
            began = time.perf_counter()
            advance(lm, record, state, units)
            per_mask = (time.perf_counter() - began) / len(masks)
            outcomes = np.stack([state.outcomes[m] for m in range(len(masks))])
            label = ("exact" if tail is None else f"tail {tail}") + ("" if precision == "fp32" else f", {precision}")
            for count in mask_counts:
                name = f"verified, {label}, {count} masks"
                matrices[name] = fit_with_prior(masks[:count], outcomes[:count], prior)
                seconds.setdefault(name, []).append(per_mask * count)
        score_target(saved, matrices, totals)
        log(f"target {number}: {len(indices)} rows, {len(sources)} sources")
    return {"summary": summarise(totals), "seconds": {k: float(np.mean(v)) for k, v in seconds.items()}, "skipped": skipped}


def print_reverify(result: dict) -> None:
    print("\n| rows | LDS | top-1 | top-3 | copy cases: top source is an earlier occurrence | seconds per target |")
    print("|---|---|---|---|---|---|")
    for name, entry in sorted(result["summary"].items(), key=lambda item: -(item[1]["lds"] or 0)):
        spent = result["seconds"].get(name)

        def cell(value, percent=False):
            return "–" if value is None else (f"{100 * value:.0f}%" if percent else f"{value:.3f}")

        print(f"| {name} ({entry['rows']} rows) | {cell(entry['lds'])} | {cell(entry['top1'], True)} | {cell(entry['top3'], True)} "
              f"| {cell(entry['copy'], True)} of {entry['copy_cases']} | {'' if spent is None else f'{spent:.1f}'} |")
    if result["skipped"]:
        print(f"\nskipped (record no longer matches its dump): targets {result['skipped']}")
