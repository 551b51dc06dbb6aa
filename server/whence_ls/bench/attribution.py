"""Line-level truth for attribution: how well each method's ranking of sources (the context's
lines) agrees with what random-subset ablation of those sources does to the token.

Targets are greedy completions at cursors in pure-Python packages that whence-ls installs
(`HELDOUT_PACKAGES`): real code that is neither in the calibration set (the standard library)
nor in the tests. Per target, `truth_masks` random masks (a seed no method uses) give each
token's actual log-odds with those sources kept; every method's scores are computed without
them. Per row (a generated token):

- LDS: Spearman between the outcome the method's scores predict for a mask (the sum of the
  kept sources' scores) and the actual one (ContextCite's linear datamodeling score);
- top-1 / top-3: the method's strongest source (or one of its 3) is the truth's, the source with
  the largest effect in a Lasso fit of the truth masks (rows where no source moves the token by
  `MIN_EFFECT` are left out of top-k);
- drop: the fall of log p(token) when the method's top 3 sources are removed (actual forwards,
  on `drop_rows` rows per target);
- copy cases (a generated identifier that occurs in an earlier source) are reported apart; there
  the top source should hold an earlier occurrence.

Just over 400 lines on purpose: the suite, its summary and its table read the same per-row
fields, and kept together a change to one is seen in the others.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from whence_ls.engine.attribution.ranking import ranking as source_ranking

HELDOUT_PACKAGES = ("attrs", "cattrs", "click", "jinja2", "rich", "requests", "urllib3", "packaging",
                    "pyparsing", "jsonschema", "anyio", "fsspec", "networkx", "pygls")
MIN_EFFECT = 0.1  # log-odds: below this the truth names no source worth ranking
TRUTH_SEED = 1_000_003
ABLATION_KS = (16, 32)  # nested: k=16 uses the first 16 of the 32 masks
GRADIENT_METHODS = ("gradient_norm", "input_x_gradient")
ONE_FORWARD_METHODS = ("calibrated_attention", "value_norm", "attention_rollout")
BASELINES = ("recency", "lexical_overlap", "random")


@dataclass
class Target:
    package: str
    version: str
    path: str
    line: int  # 0-based line of the cursor
    text: str
    cursor: int


def heldout_targets(count: int, seed: int = 0) -> list[Target]:
    """Cursors at the third body statement of a function (at least four statements, past line
    20), one per file, files in a fixed hash order, round-robin over the packages."""
    from whence_ls.bench.attribution_units import _first_function_cut
    from whence_ls.grammars import get_parser

    parser = get_parser("python")
    per_package: list[list[Target]] = []
    for name in HELDOUT_PACKAGES:
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        files = sorted((f for f in distribution.files or [] if str(f).endswith(".py") and "test" not in str(f).lower()),
                       key=lambda f: hashlib.sha1(f"{seed}:{f}".encode()).hexdigest())
        found = []
        for entry in files:
            path = Path(distribution.locate_file(entry))
            try:
                data = path.read_bytes()
                text = data.decode("utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if len(data) != len(text):
                continue
            cut = _first_function_cut(parser.parse(data).root_node)
            if cut is None:
                continue
            cursor = cut[0]
            found.append(Target(name, distribution.version, str(entry), text.count("\n", 0, cursor), text, cursor))
            if len(found) >= count:
                break
        if found:
            per_package.append(found)
    targets: list[Target] = []
    while len(targets) < count and any(per_package):
        for found in per_package:
            if found and len(targets) < count:
                targets.append(found.pop(0))
    return targets


@dataclass
class RowResult:
    method: str
    lds: float | None
    top1: bool | None
    top3: bool | None
    copy_case: bool
    copy_hit: bool | None  # copy cases: the top source holds an earlier occurrence
    drop: float | None = None


@dataclass
class BenchResult:
    rows: list[RowResult] = field(default_factory=list)
    seconds: dict[str, list[float]] = field(default_factory=dict)  # method -> seconds per target
    forward_seconds: list[float] = field(default_factory=list)
    targets: list[dict] = field(default_factory=list)


def run_suite(lm, count: int, *, context_tokens: int, max_new_tokens: int, rows_per_target: int, truth_masks: int,
              drop_rows: int, ig_targets: int, log: Callable[[str], None], offset: int = 0, limit: int | None = None,
              methods: tuple[str, ...] | None = None, verified: bool = True, dump: str | None = None,
              target_set: str = "heldout", reference: bool = True, truth_precision: str = "fp32") -> BenchResult:
    """Targets `offset` .. `offset + limit` of the `count` held-out targets (a run can be split
    over processes and merged with `merge`)."""
    import torch

    from whence_ls.engine.attribution import attribute_rows, make_method
    from whence_ls.engine.attribution.ablation import (
        ablatable_sources, fit_effects, masked_log_odds, masked_logprobs, random_masks,
    )
    from whence_ls.engine.attribution.base import TeacherForced
    from whence_ls.engine.attribution.units import build_unit_map
    from whence_ls.engine.attribution.verification import Verification, advance
    from whence_ls.engine.generation import complete_at
    from whence_ls.bench.attribution_line_baselines import baseline_scores, copy_sources
    from whence_ls.bench.attribution_verified import verified_scores

    from whence_ls.bench.attribution_training import targets_of

    result = BenchResult()
    targets = targets_of(target_set, count)  # "training": standard-library targets for learned estimators
    stop = len(targets) if limit is None else min(len(targets), offset + limit)
    for number in range(offset, stop):
        target = targets[number]
        record = complete_at(lm, target.text, target.cursor, language="python", max_new_tokens=max_new_tokens, context_tokens=context_tokens)
        indices = [i for i, t in enumerate(record.tokens) if t.text.strip()][:rows_per_target]
        units = build_unit_map(record.context, "python")
        sources = ablatable_sources(units)
        if not indices or len(sources) < 4:
            log(f"target {number + 1}: skipped ({len(indices)} visible tokens, {len(sources)} sources)")
            continue
        job = TeacherForced.of(lm, record)
        started = time.perf_counter()
        with torch.inference_mode():
            lm.model(input_ids=job.ids.unsqueeze(0), use_cache=False, logits_to_keep=1)
        result.forward_seconds.append(time.perf_counter() - started)
        truth = random_masks(truth_masks, len(sources), TRUTH_SEED + number)
        outcomes = masked_log_odds(_truth_job(job, truth_precision), indices, units, sources, truth)  # [masks, rows]
        truth_effects = fit_effects(truth, outcomes)  # [rows, S]
        scores: dict[str, np.ndarray] = {}  # method -> [rows, S] over `sources`
        by_abs: dict[str, bool] = {}

        def timed(name: str, fn):
            began = time.perf_counter()
            value = fn()
            result.seconds.setdefault(name, []).append(time.perf_counter() - began)
            return value

        for name in (*ONE_FORWARD_METHODS, *GRADIENT_METHODS):
            if methods is not None and name not in methods:
                continue
            try:
                rows = timed(name, lambda: attribute_rows(lm, _fresh(record), indices, name, language="python"))
            except Exception as exc:  # a method that cannot run on this model is reported, not fatal
                log(f"  {name} failed: {type(exc).__name__}: {exc}")
                continue
            scores[name] = np.array([[rows[i].scores[s] for s in sources] for i in indices])
            by_abs[name] = rows[indices[0]].rank_by_abs
            if name == "calibrated_attention":
                # what the hover shows first: the line the copy heads read the token from, when
                # they found one, then the estimator's ranking
                column = {s: c for c, s in enumerate(sources)}
                boosted = scores[name].copy()
                for r, i in enumerate(indices):
                    copied = rows[i].extra.get("copied_from_unit")
                    if copied in column:
                        boosted[r, column[copied]] = np.abs(boosted[r]).max() + 1.0
                scores["calibrated_attention+copy_heads"] = boosted
                by_abs["calibrated_attention+copy_heads"] = False
        if number < ig_targets and (methods is None or "integrated_gradients" in methods):
            ig = make_method("integrated_gradients", steps=16)
            rows = timed("integrated_gradients", lambda: attribute_rows(lm, _fresh(record), indices[:1], ig, language="python"))
            scores["integrated_gradients"] = np.array([[rows[indices[0]].scores[s] for s in sources]])
            by_abs["integrated_gradients"] = rows[indices[0]].rank_by_abs
        masks = random_masks(max(ABLATION_KS) if reference else 0, len(sources), number)
        began = time.perf_counter()
        # the exact mode of verified rows: the plain masked forwards' outcomes, restarted at each
        # batch's first removed source over the cached prefix
        exact = Verification(indices=list(indices), sources=list(sources), masks=masks)
        if reference:
            advance(lm, record, exact, units)
        ablated = np.stack([exact.outcomes[m] for m in range(len(masks))]) if reference else np.zeros((0, len(indices)))
        per_mask = (time.perf_counter() - began) / max(1, len(masks))
        raw = {}
        if verified:
            prior = scores.get("calibrated_attention")
            extra, spent, raw = verified_scores(lm, record, units, sources, indices, masks, ablated, per_mask, prior)
            for name, matrix in extra.items():
                scores[name], by_abs[name] = matrix, False
                result.seconds.setdefault(name, []).append(spent[name])
        for k in ABLATION_KS if reference else ():
            began = time.perf_counter()
            scores[f"ablation_{k}"] = fit_effects(masks[:k], ablated[:k])
            result.seconds.setdefault(f"ablation_{k}", []).append(per_mask * k + time.perf_counter() - began)
            by_abs[f"ablation_{k}"] = False
        for name in BASELINES:
            scores[name] = baseline_scores(name, record, units, sources, indices, seed=number)
            by_abs[name] = False
        copies = [copy_sources(record, index, units, sources) for index in indices]
        if dump is not None:  # every outcome, so fits and estimators can be tried again without forwards
            copy_columns = np.zeros((len(indices), len(sources)), dtype=bool)
            for r, columns in enumerate(copies):
                copy_columns[r, list(columns)] = True
            np.savez_compressed(Path(dump) / f"target{number:03d}.npz", truth_masks=truth, truth_outcomes=outcomes,
                                masks=masks, exact_outcomes=ablated, copy_columns=copy_columns,
                                **(raw if verified else {}), **{f"scores_{k}": v for k, v in scores.items()})
        drop_indices = set(range(min(drop_rows, len(indices))))
        for name, matrix in scores.items():
            for r in range(matrix.shape[0]):
                ranking = rank(matrix[r], by_abs[name])
                predicted = truth.astype(np.float64) @ matrix[r]
                lds = _spearman(predicted, outcomes[:, r])
                effect = truth_effects[r]
                meaningful = effect.max() >= MIN_EFFECT
                best = int(effect.argmax())
                top1 = (ranking[0] == best) if meaningful else None
                top3 = (best in ranking[:3]) if meaningful else None
                copy_case = bool(copies[r])
                copy_hit = (ranking[0] in copies[r]) if copy_case else None
                drop = None
                if r in drop_indices:
                    keep = np.ones((1, len(sources)), dtype=bool)
                    keep[0, ranking[:3]] = False
                    removed = masked_logprobs(job, [indices[r]], units, sources, keep)[0, 0]
                    drop = record.tokens[indices[r]].logprob - float(removed)
                result.rows.append(RowResult(name, lds, top1, top3, copy_case, copy_hit, drop))
        result.targets.append({"package": target.package, "version": target.version, "path": target.path,
                               "line": target.line + 1, "rows": len(indices), "sources": len(sources),
                               "context_tokens": len(record.context.token_ids), "completion": record.text})
        if dump is not None:  # this target's rows alone, for `--render` of a run stopped early
            rows_before = len(result.rows) - len(scores) * len(indices)
            alone = BenchResult(rows=result.rows[rows_before:], seconds={k: v[-1:] for k, v in result.seconds.items()},
                                forward_seconds=result.forward_seconds[-1:], targets=result.targets[-1:])
            Path(dump, f"target{number:03d}.json").write_text(json.dumps({"suite": to_json(alone)}))
        log(f"target {number + 1}/{len(targets)} {target.package} {target.path}:{target.line + 1}: "
            f"{len(indices)} rows, {len(sources)} sources, {len(record.context.token_ids)} context tokens")
    return result


def _truth_job(job, precision: str):
    """The job whose masked forwards give the truth: bf16 (training dumps: ~3x the targets per
    CPU second on a CPU with fast bf16; verified rows lost 0.002 LDS to it) or the model itself."""
    import dataclasses

    if precision == "fp32":
        return job
    from whence_ls.engine.attribution.masked_model import masked_model

    return dataclasses.replace(job, lm=dataclasses.replace(job.lm, model=masked_model(job.lm, precision)))


def rank(scores: np.ndarray, by_abs: bool) -> list[int]:
    """Every source, strongest first, in the order the views show (`engine.attribution.ranking`)."""
    return source_ranking([float(s) for s in scores], by_abs)


def _spearman(predicted: np.ndarray, actual: np.ndarray) -> float | None:
    from whence_ls.engine.attribution.calibration import linear_datamodeling_score

    return linear_datamodeling_score(predicted, actual)


def _fresh(record):
    import copy

    clone = copy.copy(record)
    clone.attribution = {}
    clone.id = f"{record.id}-{time.perf_counter_ns()}"
    return clone


def to_json(result: BenchResult) -> dict:
    return {"rows": [vars(r) for r in result.rows], "seconds": result.seconds,
            "forward_seconds": result.forward_seconds, "targets": result.targets}


def merge(parts: list[dict]) -> BenchResult:
    merged = BenchResult()
    for part in parts:
        merged.rows += [RowResult(**r) for r in part["rows"]]
        for name, values in part["seconds"].items():
            merged.seconds.setdefault(name, []).extend(values)
        merged.forward_seconds += part["forward_seconds"]
        merged.targets += part["targets"]
    return merged


def summarise(result: BenchResult) -> dict:
    table = {}
    methods = list(dict.fromkeys(r.method for r in result.rows))
    for method in methods:
        rows = [r for r in result.rows if r.method == method]
        entry = {}
        for label, subset in (("all", rows), ("copy", [r for r in rows if r.copy_case]), ("other", [r for r in rows if not r.copy_case])):
            lds = [r.lds for r in subset if r.lds is not None]
            top1 = [r.top1 for r in subset if r.top1 is not None]
            top3 = [r.top3 for r in subset if r.top3 is not None]
            entry[label] = {
                "rows": len(subset),
                "lds": statistics.fmean(lds) if lds else None,
                "top1": statistics.fmean(top1) if top1 else None,
                "top3": statistics.fmean(top3) if top3 else None,
                "ranked_rows": len(top1),
            }
        hits = [r.copy_hit for r in rows if r.copy_hit is not None]
        drops = [r.drop for r in rows if r.drop is not None]
        entry["copy_top_is_occurrence"] = statistics.fmean(hits) if hits else None
        entry["copy_cases"] = len(hits)
        entry["drop_top3"] = statistics.fmean(drops) if drops else None
        seconds = result.seconds.get(method, [])
        entry["seconds_per_target"] = statistics.fmean(seconds) if seconds else 0.0
        table[method] = entry
    forward = statistics.fmean(result.forward_seconds) if result.forward_seconds else math.nan
    for entry in table.values():
        entry["fe_per_target"] = entry["seconds_per_target"] / forward if forward else None
    return {"methods": table, "forward_s": forward, "targets": result.targets}


def render(summary: dict) -> str:
    def pct(value):
        return "—" if value is None else f"{100 * value:.0f}%"

    def num(value, digits=3):
        return "—" if value is None else f"{value:.{digits}f}"

    lines = [
        "| method | LDS | top-1 | top-3 | drop top-3 (nats) | copy: top is an occurrence | LDS copy / other | FE per target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = sorted(summary["methods"].items(), key=lambda kv: -(kv[1]["all"]["lds"] or -9))
    for method, entry in order:
        lines.append(
            f"| {method} | {num(entry['all']['lds'])} (n={entry['all']['rows']}) | {pct(entry['all']['top1'])} "
            f"| {pct(entry['all']['top3'])} (n={entry['all']['ranked_rows']}) | {num(entry['drop_top3'], 2)} "
            f"| {pct(entry['copy_top_is_occurrence'])} (n={entry['copy_cases']}) "
            f"| {num(entry['copy']['lds'])} / {num(entry['other']['lds'])} | {num(entry['fe_per_target'], 1)} |"
        )
    packages = sorted({f"{t['package']}=={t['version']}" for t in summary["targets"]})
    lines += ["", f"{len(summary['targets'])} targets from {', '.join(packages)}; one forward over a target: "
              f"{summary['forward_s']:.2f} s"]
    return "\n".join(lines)


# -- the command (`whence-ls bench attribution`) ------------------------------------------------


def run(args) -> int:
    import torch

    if args.render:
        parts = [json.load(open(path, encoding="utf-8")) for path in args.render]
        summary = summarise(merge([p["suite"] for p in parts if "suite" in p]))
        costs = [p["cost"] for p in parts if "cost" in p]
        print(render(summary))
        _write_figures(args, summary)
        from whence_ls.bench.attribution_cost import print_cost as print_matrix_cost

        for cost in costs:
            print_matrix_cost(cost)
        from whence_ls.bench.attribution_verified import print_cost

        for part in parts:
            if "verify_cost" in part:
                print_cost(part["verify_cost"])
        return 0
    from whence_ls.engine.loading import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {message}", file=sys.stderr, flush=True)

    lm = load_model(args.model, "cpu")
    saved: dict = {}
    result = BenchResult()
    if not args.skip_suite:
        result = run_suite(lm, args.targets, context_tokens=args.context_tokens, max_new_tokens=args.max_new_tokens,
                           rows_per_target=args.rows, truth_masks=args.truth_masks, drop_rows=args.drop_rows,
                           ig_targets=args.ig_targets, log=log, offset=args.offset, limit=args.limit,
                           methods=tuple(m for m in args.methods.split(",") if m) if args.methods else None,
                           verified=not args.no_verified, dump=args.dump, target_set=args.target_set,
                           reference=not args.no_reference, truth_precision=args.truth_precision)
        saved["suite"] = to_json(result)
        print(render(summarise(result)))
        _write_figures(args, summarise(result))
    if args.cost:
        from whence_ls.bench.attribution_cost import COST_METHODS, cost_of_matrix, print_cost as print_matrix_cost

        methods = tuple(m for m in args.cost_methods.split(",") if m) if args.cost_methods else COST_METHODS
        saved["cost"] = cost_of_matrix(lm, context_tokens=1024, new_tokens=32, log=log, methods=methods)
        print_matrix_cost(saved["cost"])
    if args.verify_cost:
        from whence_ls.bench.attribution_verified import print_cost, verification_cost

        saved["verify_cost"] = verification_cost(lm, log=log)
        print_cost(saved["verify_cost"])
    if args.reverify:
        from whence_ls.bench.attribution_reverify import print_reverify, reverify

        saved["reverify"] = reverify(lm, args.reverify, tails=_tails(args.reverify_tails), mask_counts=_counts(args.reverify_masks),
                                     context_tokens=args.context_tokens, max_new_tokens=args.max_new_tokens,
                                     rows_per_target=args.rows, log=log, precision=args.reverify_precision,
                                     prior_from=args.reverify_prior)
        print_reverify(saved["reverify"])
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(saved, handle, indent=1)
    return 0


def _write_figures(args, summary: dict) -> None:
    if getattr(args, "figures", None):
        from whence_ls.bench.attribution_figures import PACKAGE_FIGURES, write_figures

        write_figures(summary, PACKAGE_FIGURES if args.figures == "package" else Path(args.figures))


def _tails(text: str) -> tuple[int | None, ...]:
    return tuple(None if part == "exact" else int(part) for part in text.split(",") if part)


def _counts(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)
