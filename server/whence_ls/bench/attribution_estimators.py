"""New one-pass estimators against the suite's saved truth (`whence-ls bench attribution
--dump DIR`), without rerunning the suite's ablations: each dumped target's record is rebuilt
(the targets and greedy completions are deterministic), checked against the dump's shapes and
its calibrated-attention scores, and only the new estimators' forwards run. Scores go to
`OUT/targetNNN.npz`; `evaluate` reads them with the dump and gives LDS / top-1 / top-3 / copy
with the suite's own definitions, and blends with a weight chosen on one half of the targets
and reported on the other.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

# label -> (method, options)
ESTIMATORS = {
    "calibrated_attention": ("calibrated_attention", {}),
    "attribution_patching": ("patching", {}),
    "attribution_patching_line": ("patching", {"per_line": True}),
    # the tail's queries only (the context before them a cache without gradients), as verification
    "attribution_patching_tail8": ("patching", {"tail": 8}),
    "attribution_patching_tail16": ("patching", {"tail": 16}),
    "attribution_patching_tail16_bf16": ("patching", {"tail": 16, "precision": "bf16"}),
    "attribution_patching_tail32": ("patching", {"tail": 32}),
    "stacked_attention": ("stacked_attention", {}),
    # the default (ninth session): the stacked rows and leave-one-out of their top lines over the tail
    "stacked_leave_one_out": ("stacked_leave_one_out", {}),
}


def lexical_copy_prior(record, units, sources: list[int], indices: list[int]) -> np.ndarray:
    """[rows, sources]: 1 on the most recent source holding an earlier occurrence of the
    identifier the token is part of (the copy cases' definition), else 0."""
    from whence_ls.bench.attribution_line_baselines import copy_sources

    prior = np.zeros((len(indices), len(sources)))
    for r, index in enumerate(indices):
        columns = copy_sources(record, index, units, sources)
        if columns:
            prior[r, max(columns)] = 1.0
    return prior


def score_targets(lm, dump_dir: str, out_dir: str, *, log: Callable[[str], None], context_tokens: int = 256,
                  max_new_tokens: int = 16, rows_per_target: int = 8, estimators: dict | None = None,
                  target_set: str = "heldout") -> None:
    import torch

    from whence_ls.bench.attribution import _fresh, rank
    from whence_ls.engine.attribution import attribute_rows, make_method
    from whence_ls.engine.attribution.ablation import ablatable_sources, masked_logprobs
    from whence_ls.engine.attribution.base import TeacherForced
    from whence_ls.engine.attribution.patching import AttributionPatching
    from whence_ls.engine.attribution.units import build_unit_map
    from whence_ls.engine.generation import complete_at

    from whence_ls.bench.attribution_training import targets_of

    targets = targets_of(target_set, 120 if target_set == "training" else 40)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(dump_dir).glob("target*.npz")):
        number = int(path.stem[len("target"):])
        if (Path(out_dir) / path.name).exists():
            continue  # scored by an earlier (stopped) run
        saved = np.load(path)
        target = targets[number]
        record = complete_at(lm, target.text, target.cursor, language="python", max_new_tokens=max_new_tokens,
                             context_tokens=context_tokens)
        indices = [i for i, t in enumerate(record.tokens) if t.text.strip()][:rows_per_target]
        units = build_unit_map(record.context, "python")
        sources = ablatable_sources(units)
        expected = saved["copy_columns"].shape  # [rows, sources], in every dump
        if (len(indices), len(sources)) != expected:
            log(f"target {number}: shape {(len(indices), len(sources))} != dump {expected}: skipped")
            continue
        job = TeacherForced.of(lm, record)
        # CPU seconds of this process (one torch thread), not wall time: on the shared machine
        # other engineers' quiet measurements stop this process (SIGSTOP) for minutes at a time
        times = []
        for _ in range(2):
            began = time.process_time()
            with torch.inference_mode():
                lm.model(input_ids=job.ids.unsqueeze(0), use_cache=False, logits_to_keep=1)
            times.append(time.process_time() - began)
        scores, seconds = {}, {}
        for name, (method, options) in (estimators or ESTIMATORS).items():
            began = time.process_time()
            chosen = AttributionPatching(**options) if method == "patching" else make_method(method, **options)
            rows = attribute_rows(lm, _fresh(record), indices, chosen, language="python")
            seconds[name] = time.process_time() - began
            scores[name] = np.array([[rows[i].scores[s] for s in sources] for i in indices])
        drift = float(np.abs(scores["calibrated_attention"] - saved["scores_calibrated_attention"]).max()) \
            if "calibrated_attention" in scores and "scores_calibrated_attention" in saved else float("nan")
        scores["lexical_copy"] = lexical_copy_prior(record, units, sources, indices)
        # the fall of log p(first row's token) when each method's top 3 sources are removed
        drops = {}
        for name, matrix in scores.items():
            keep = np.ones((1, len(sources)), dtype=bool)
            keep[0, rank(matrix[0], False)[:3]] = False
            removed = masked_logprobs(job, [indices[0]], units, sources, keep)[0, 0]
            drops[name] = record.tokens[indices[0]].logprob - float(removed)
        np.savez_compressed(Path(out_dir) / path.name, forward_s=min(times), cpu_seconds=True,
                            **{f"scores_{k}": v for k, v in scores.items()},
                            **{f"seconds_{k}": v for k, v in seconds.items()},
                            **{f"drop_{k}": v for k, v in drops.items()})
        log(f"target {number}: {len(indices)} rows, {len(sources)} sources, {len(job.ids)} tokens; calibrated drift "
            f"{drift:.2e}; forward {min(times):.2f} s; " + ", ".join(f"{k} {v / min(times):.1f} FE" for k, v in seconds.items()))


def _normalised(matrix: np.ndarray) -> np.ndarray:
    total = np.abs(matrix).sum(axis=1, keepdims=True)
    return np.divide(matrix, total, out=np.zeros_like(matrix), where=total > 0)


def blends(scores: dict[str, np.ndarray], weights: dict[str, float]) -> dict[str, np.ndarray]:
    """The blends tried: the estimate plus `w` x the lexical prior, and the two estimators mixed
    (those whose estimators were scored)."""
    if "attribution_patching" not in scores or "calibrated_attention" not in scores:
        return stacked_mixes(scores, weights)
    calibrated = _normalised(scores["calibrated_attention"])
    patching = _normalised(scores["attribution_patching"])
    prior = scores["lexical_copy"]
    line = _normalised(scores["attribution_patching_line"]) if "attribution_patching_line" in scores else patching
    return {
        "line_calibrated_mix": (1 - weights.get("line_calibrated_mix", 0.5)) * line
        + weights.get("line_calibrated_mix", 0.5) * calibrated,
        "line_calibrated_mix+lexical_copy": 0.5 * line + 0.5 * calibrated
        + weights.get("line_calibrated_mix+lexical_copy", 0.0) * prior,
        "calibrated_attention+lexical_copy": calibrated + weights.get("calibrated_attention+lexical_copy", 0.0) * prior,
        "attribution_patching+lexical_copy": patching + weights.get("attribution_patching+lexical_copy", 0.0) * prior,
        "patching_calibrated_mix": (1 - weights.get("patching_calibrated_mix", 0.5)) * patching
        + weights.get("patching_calibrated_mix", 0.5) * calibrated,
        # (calibrated share, prior weight), chosen together
        "patching_calibrated_mix+lexical_copy": (1 - weights.get("patching_calibrated_mix+lexical_copy", (0.5, 0))[0]) * patching
        + weights.get("patching_calibrated_mix+lexical_copy", (0.5, 0))[0] * calibrated
        + weights.get("patching_calibrated_mix+lexical_copy", (0.5, 0))[1] * prior,
        **stacked_mixes(scores, weights),
    }


def stacked_mixes(scores: dict[str, np.ndarray], weights: dict[str, float]) -> dict[str, np.ndarray]:
    """The stacked estimator (the default) mixed with each patching variant scored: (1 - w) x
    patching + w x stacked, both rows normalised."""
    if "stacked_attention" not in scores:
        return {}
    stacked = _normalised(scores["stacked_attention"])
    mixes = {}
    for variant in STACKED_MIXES:
        if variant in scores:
            name = f"{variant}_stacked_mix"
            mixes[name] = (1 - weights.get(name, 0.5)) * _normalised(scores[variant]) + weights.get(name, 0.5) * stacked
    return mixes


STACKED_MIXES = ("attribution_patching", "attribution_patching_tail8", "attribution_patching_tail16",
                 "attribution_patching_tail16_bf16", "attribution_patching_tail32")


# what a blend costs: the sum of its estimators' measured seconds (the lexical prior is free)
PARTS = {
    "patching_calibrated_mix": ("attribution_patching", "calibrated_attention"),
    "line_calibrated_mix": ("attribution_patching_line", "calibrated_attention"),
    **{f"{variant}_stacked_mix": (variant, "stacked_attention") for variant in STACKED_MIXES},
}

BLEND_GRID = {
    "line_calibrated_mix": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0),
    "line_calibrated_mix+lexical_copy": (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0),
    "calibrated_attention+lexical_copy": (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0),
    "attribution_patching+lexical_copy": (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0),
    "patching_calibrated_mix": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0),
    "patching_calibrated_mix+lexical_copy": tuple((m, w) for m in (0.2, 0.3, 0.4, 0.5, 0.6)
                                                  for w in (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)),
    **{f"{variant}_stacked_mix": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0) for variant in STACKED_MIXES},
}


def _load(dump_dir: str, out_dir: str) -> list[dict]:
    """`out_dir`: one directory, or several joined by commas (scores of other estimators on the
    same targets, from another run)."""
    from whence_ls.engine.attribution.ablation import fit_effects

    loaded = []
    first, *more = out_dir.split(",")
    for path in sorted(Path(first).glob("target*.npz")):
        mine = dict(np.load(path))
        for other in more:
            if (Path(other) / path.name).exists():
                extra = dict(np.load(Path(other) / path.name))
                mine.update({k: v for k, v in extra.items() if k.startswith(("scores_", "seconds_", "drop_"))
                             and k not in ("scores_lexical_copy", "drop_lexical_copy")})
        truth = dict(np.load(Path(dump_dir) / path.name))
        scores = {k[len("scores_"):]: v for k, v in mine.items() if k.startswith("scores_")}
        for name in ("ablation_16", "ablation_32", "verified_tail64_16_prior", "lexical_overlap"):
            if f"scores_{name}" in truth:  # a dump run with --no-verified has no verified rows
                scores[name] = truth[f"scores_{name}"]
        # the estimator as the suite ran it (before this module's changes to it)
        if "scores_calibrated_attention" in truth:  # a training dump has no estimator's scores
            scores["calibrated_attention (suite run)"] = truth["scores_calibrated_attention"]
        loaded.append({"number": int(path.stem[len("target"):]), "masks": truth["truth_masks"],
                       "outcomes": truth["truth_outcomes"], "effects": fit_effects(truth["truth_masks"], truth["truth_outcomes"]),
                       "copy": truth["copy_columns"], "scores": scores, "forward_s": float(mine["forward_s"]), "cpu_seconds": bool(mine.get("cpu_seconds", False)),
                       "seconds": {k[len("seconds_"):]: float(v) for k, v in mine.items() if k.startswith("seconds_")},
                       "drop": {k[len("drop_"):]: float(v) for k, v in mine.items() if k.startswith("drop_")}})
    return loaded


def _metrics(targets: list[dict], name: str, matrix_of: Callable[[dict], np.ndarray]) -> dict:
    from whence_ls.bench.attribution import MIN_EFFECT, _spearman, rank

    lds, top1, top3, copy, drops, fe = [], [], [], [], [], []
    for target in targets:
        matrix = matrix_of(target)
        for r in range(matrix.shape[0]):
            ranking = rank(matrix[r], False)
            value = _spearman(target["masks"].astype(np.float64) @ matrix[r], target["outcomes"][:, r])
            if value is not None:
                lds.append(value)
            effect = target["effects"][r]
            if effect.max() >= MIN_EFFECT:
                best = int(effect.argmax())
                top1.append(ranking[0] == best)
                top3.append(best in ranking[:3])
            if target["copy"][r].any():
                copy.append(bool(target["copy"][r][ranking[0]]))
        if name in target["drop"]:
            drops.append(target["drop"][name])
        parts = PARTS.get(name.split("+")[0], (name,))
        if target["cpu_seconds"] and all(p in target["seconds"] for p in parts):
            fe.append(sum(target["seconds"][p] for p in parts) / target["forward_s"])

    def mean(values):
        return float(np.mean(values)) if values else None

    return {"rows": len(lds), "fe_targets": len(fe), "lds": mean(lds), "top1": mean(top1), "top3": mean(top3), "ranked": len(top1),
            "copy": mean(copy), "copy_cases": len(copy), "drop_top3": mean(drops),
            "fe_median": float(np.median(fe)) if fe else None}


def evaluate(dump_dir: str, out_dir: str) -> dict:
    """Every saved method on all targets, and each blend with its weight chosen (best LDS, then
    top-1) on the even-numbered targets and reported on the odd ones, and the other way round:
    every target's rows are scored with a weight that never saw them."""
    targets = _load(dump_dir, out_dir)
    names = list(targets[0]["scores"])
    table = {name: _metrics(targets, name, lambda t, n=name: t["scores"][n]) for name in names}
    halves = ([t for t in targets if t["number"] % 2 == 0], [t for t in targets if t["number"] % 2 == 1])
    chosen: dict[str, list[float]] = {}
    for blend, grid in BLEND_GRID.items():
        if blend not in blends(targets[0]["scores"], {}):
            continue  # its estimators were not scored
        picks = []
        for fit, held in (halves, halves[::-1]):
            def score(weight):
                m = _metrics(fit, blend, lambda t: blends(t["scores"], {blend: weight})[blend])
                return (m["lds"], m["top1"])
            best = max(grid, key=score)
            picks.append(best)
            for target in held:
                target["scores"][blend] = blends(target["scores"], {blend: best})[blend]
        chosen[blend] = picks
        table[blend] = _metrics(targets, blend, lambda t, n=blend: t["scores"][n])
        table[blend]["weights"] = picks
    shipped = shipped_mix(targets)
    if shipped is not None:
        table["stacked_patching"] = shipped
    return {"table": table, "targets": [t["number"] for t in targets]}


def shipped_mix(targets: list[dict]) -> dict | None:
    """The eighth session's default as it ships (`stacked_patching.py`): the tail's patching and
    the stacked row mixed with the share chosen on the training targets, not on these."""
    from whence_ls.engine.attribution.stacked_patching import PATCHING_TAIL, STACKED_SHARE

    variant = f"attribution_patching_tail{PATCHING_TAIL}"
    if not all(variant in t["scores"] and "stacked_attention" in t["scores"] for t in targets):
        return None
    name = f"{variant}_stacked_mix"
    for target in targets:
        target["scores"]["stacked_patching"] = stacked_mixes(target["scores"], {name: STACKED_SHARE})[name]
    metrics = _metrics(targets, name, lambda t: t["scores"]["stacked_patching"])
    metrics["weights"] = [STACKED_SHARE]
    metrics["tail"] = PATCHING_TAIL
    return metrics


def write_figures(result: dict) -> None:
    """The shipped default's held-out figures, the stacked estimator's on the same rows, and the
    earlier default's (the patching mix) where they were scored, where the method notes read
    them (`catalogue.py`)."""
    import json

    from whence_ls.engine.attribution.stacked_leave_one_out import LOO_TAIL

    # the file's path without importing the catalogue, whose notes need these very figures
    path = Path(__file__).parents[1] / "engine" / "attribution" / "benchmark_figures.json"
    saved = json.loads(path.read_text(encoding="utf-8"))
    targets = len(result["targets"])
    run = f"bench attribution-estimators: {targets} unseen suite targets, the mix's shares chosen on the training targets"
    for name, key in (("stacked_leave_one_out", "stacked_leave_one_out"), ("stacked_patching", "stacked_patching"),
                      ("stacked_attention_same_rows", "stacked_attention")):
        m = result["table"].get(key)
        if m is None:
            continue  # the earlier default's figures stay as they were measured
        saved["methods"][name] = {"run": run, **{k: round(m[k], 3) for k in ("lds", "top1", "top3", "copy")},
                                  "targets": targets, "rows": m["rows"],
                                  "fe": round(m["fe_median"], 2) if m["fe_median"] is not None else None}
    saved["methods"]["stacked_leave_one_out"]["tail"] = LOO_TAIL
    if "stacked_patching" in result["table"]:
        saved["methods"]["stacked_patching"]["tail"] = result["table"]["stacked_patching"]["tail"]
    path.write_text(json.dumps(saved, indent=1) + "\n", encoding="utf-8")


def render(result: dict) -> str:
    def pct(value):
        return "—" if value is None else f"{100 * value:.0f}%"

    def num(value, digits=3):
        return "—" if value is None else f"{value:.{digits}f}"

    lines = ["| method | LDS | top-1 | top-3 | drop top-3 (nats) | copy: top is an occurrence | FE per target (median) |",
             "|---|---|---|---|---|---|---|"]
    for name, m in sorted(result["table"].items(), key=lambda kv: -(kv[1]["lds"] or -9)):
        note = f" (weights {m['weights']})" if "weights" in m else ""
        lines.append(f"| {name}{note} | {num(m['lds'])} (n={m['rows']}) | {pct(m['top1'])} | {pct(m['top3'])} (n={m['ranked']}) "
                     f"| {num(m['drop_top3'], 2)} | {pct(m['copy'])} (n={m['copy_cases']}) | {num(m['fe_median'], 1)} (n={m['fe_targets']}) |")
    lines.append(f"\n{len(result['targets'])} targets: {result['targets']}")
    return "\n".join(lines)


def run(args) -> int:
    import sys

    import torch

    if not args.evaluate_only:
        from whence_ls.engine.loading import load_model

        torch.set_num_threads(args.threads)
        started = time.perf_counter()
        lm = load_model(args.model, "cpu")
        chosen = {m: ESTIMATORS.get(m, (m, {})) for m in args.methods.split(",") if m} or None
        score_targets(lm, args.dump, args.out, estimators=chosen, target_set=args.target_set,
                      log=lambda m: print(f"[{time.perf_counter() - started:6.0f}s] {m}", file=sys.stderr, flush=True))
    result = evaluate(args.dump, args.out)
    print(render(result))
    if getattr(args, "figures", False):
        if "stacked_leave_one_out" not in result["table"] or "stacked_attention" not in result["table"]:
            print("--figures: the shipped default (stacked_leave_one_out) and the stacked rows were not both scored",
                  file=sys.stderr)
            return 1
        write_figures(result)
    return 0


if __name__ == "__main__":
    import argparse

    from whence_ls.commands.bench_attribution_estimators import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="kind", required=True))
    parsed = parser.parse_args(["attribution-estimators", *__import__("sys").argv[1:]])
    raise SystemExit(parsed.run(parsed))
