"""Verified rows in `whence-ls bench attribution`: how well ablation run after the estimate
(engine/attribution/verification.py) agrees with the held-out truth, per mask count, with and
without the estimate as the Lasso's prior, exact or with a bounded tail; and what it costs in
seconds for a completion's rows at 512 and 1024 context tokens.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

# (name, masks, tail or None for exact, prior)
VARIANTS = (
    ("verified_exact_16_prior", 16, None, True),
    ("verified_exact_8_prior", 8, None, True),
    ("verified_tail128_16_prior", 16, 128, True),
    ("verified_tail128_16", 16, 128, False),
    ("verified_tail64_16_prior", 16, 64, True),
    ("verified_tail64_8_prior", 8, 64, True),
)


def verified_scores(lm, record, units, sources: list[int], indices: list[int], masks: np.ndarray, exact_outcomes: np.ndarray,
                    exact_seconds_per_mask: float, prior: np.ndarray | None) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, np.ndarray]]:
    """Per variant, [rows, sources] effects and seconds. Exact variants reuse `exact_outcomes`
    ([masks, rows], the suite's own ablation forwards, which the exact mode reproduces to the
    bit: tests/test_verification.py); tail variants run their own forwards on the same masks."""
    from whence_ls.engine.attribution.verification import Verification, advance, fit_with_prior

    scores: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    most = max(count for _, count, _, _ in VARIANTS)
    tail_outcomes: dict[int, tuple[np.ndarray, float]] = {}  # tail -> outcomes of the first `most` masks, seconds per mask
    for name, count, tail, use_prior in VARIANTS:
        chosen = masks[:count]
        if tail is None:
            outcomes, spent = exact_outcomes[:count], exact_seconds_per_mask * count
        else:
            if tail not in tail_outcomes:
                state = Verification(indices=list(indices), sources=list(sources), masks=masks[:most], tail=tail)
                began = time.perf_counter()
                advance(lm, record, state, units)
                tail_outcomes[tail] = (np.stack([state.outcomes[m] for m in range(most)]), (time.perf_counter() - began) / most)
            outcomes, spent = tail_outcomes[tail][0][:count], tail_outcomes[tail][1] * count
        began = time.perf_counter()
        scores[name] = fit_with_prior(chosen, outcomes, prior if use_prior else None)
        seconds[name] = spent + time.perf_counter() - began
    raw = {f"tail{tail}_outcomes": outcomes for tail, (outcomes, _) in tail_outcomes.items()}
    return scores, seconds, raw


def verification_cost(lm, *, contexts: tuple[int, ...] = (512, 1024), new_tokens: int = 16, masks: int | None = None,
                      tails: tuple[int | None, ...] | None = None, log: Callable[[str], None]) -> list[dict]:
    """Seconds for every row of a `new_tokens` completion (the rows an accept verifies) after
    about each of `contexts` tokens, per verification mode, with one plain forward beside it;
    and the seconds of the default estimate's rows before them (what the hover shows first), the
    completion decoded as the server decodes it (with the rows it reads live).

    The completion runs as the language server runs it, through the model's prefix cache, so
    the verification that follows finds the context's keys and values there ("after the
    completion", the server's case); each mode is also timed with that cache emptied ("cold":
    an explained line, or a record whose context the cache no longer holds)."""
    import torch

    from whence_ls.bench.attribution import heldout_targets
    from whence_ls.engine.attribution import attribute_rows, default_method
    from whence_ls.engine.attribution.base import TeacherForced
    from whence_ls.engine.attribution.live_rows import live_part
    from whence_ls.engine.attribution.units import build_unit_map
    from whence_ls.engine.attribution.verification import verify_rows
    from whence_ls.engine.context import build_context
    from whence_ls.engine.attribution.masked_model import masked_model, preferred_precision
    from whence_ls.engine.attribution.verification import VERIFY_MASKS, VERIFY_TAIL
    from whence_ls.engine.generation import generate

    masks = masks or VERIFY_MASKS  # the server's settings unless asked otherwise
    tails = tails or (VERIFY_TAIL,)
    precision = preferred_precision(lm)
    masked_model(lm, precision)  # the bf16 copy, where one is used, is made before any timing
    import sklearn.linear_model  # noqa: F401  (imported once before any timing: ~0.7 s)

    target = max(heldout_targets(40), key=lambda t: t.cursor)
    results = []
    for context_tokens in contexts:
        context = build_context(lm.tokenizer, target.text, target.cursor, context_tokens)
        lm.prefix_cache.clear()
        method = default_method(lm)
        record = generate(lm, context, max_new_tokens=new_tokens, prefix_cache=lm.prefix_cache, live_rows=live_part(method))
        units = build_unit_map(record.context, "python")
        job = TeacherForced.of(lm, record)
        with torch.inference_mode():
            times = []
            for _ in range(2):
                began = time.perf_counter()
                lm.model(input_ids=job.ids.unsqueeze(0), use_cache=False, logits_to_keep=1)
                times.append(time.perf_counter() - began)
        forward = min(times)
        indices = list(range(len(record.tokens)))
        began = time.perf_counter()
        estimates = attribute_rows(lm, record, indices, language="python")
        estimate_s = time.perf_counter() - began
        lines = record.text.strip("\n").count("\n") + 1
        entry = {"context_tokens": len(record.context.token_ids), "tokens": len(indices), "forward_s": forward,
                 "torch_threads": torch.get_num_threads(), "precision": precision, "modes": {},
                 "estimate": {"method": method, "seconds": estimate_s, "fe": estimate_s / forward, "lines": lines}}
        log(f"the default estimate ({method}) at {entry['context_tokens']} context tokens: {estimate_s:.2f} s = "
            f"{estimate_s / forward:.2f} FE for {lines} completion lines")
        for tail in tails:
            for warm in ((True, False) if tail is not None else (False,)):
                kept = lm.prefix_cache
                if not warm:
                    lm.prefix_cache = type(kept)()  # an empty cache for this run only
                try:
                    began = time.perf_counter()
                    verify_rows(lm, record, indices, units, estimates, masks=masks, tail=tail, precision=precision)
                    seconds = time.perf_counter() - began
                finally:
                    lm.prefix_cache = kept
                label = ("exact" if tail is None else f"tail {tail}") + (", after the completion" if warm else ", cold")
                entry["modes"][label] = {"masks": masks, "seconds": seconds, "fe": seconds / forward}
                log(f"verify {label} at {entry['context_tokens']} context tokens: {seconds:.1f} s = {seconds / forward:.1f} FE")
        results.append(entry)
    return results


def print_cost(results: list[dict]) -> None:
    for entry in results:
        print(f"\nverified rows of a {entry['tokens']}-token completion after {entry['context_tokens']} context tokens "
              f"(one fp32 forward {entry['forward_s']:.2f} s, {entry['torch_threads']} threads, masked forwards in {entry.get('precision', 'fp32')}):")
        if "estimate" in entry:
            estimate = entry["estimate"]
            print(f"  the default estimate ({estimate['method']}) first: {estimate['seconds']:.2f} s = {estimate['fe']:.2f} FE, "
                  f"{estimate['fe'] / estimate['lines']:.2f} FE per completion line ({estimate['lines']} lines)")
        for label, mode in entry["modes"].items():
            print(f"  {label}, {mode['masks']} masks: {mode['seconds']:.1f} s = {mode['fe']:.1f} FE")


def rescore(dump_dir: str, extra: Callable[[dict], dict[str, np.ndarray]] | None = None) -> dict[str, dict]:
    """LDS, top-1, top-3 and copy cases of every saved method (and of `extra(target)`'s
    matrices: refits and estimators tried on the saved outcomes), from `--dump` files, with the
    suite's own definitions; no forwards."""
    from pathlib import Path

    totals: dict[str, dict[str, list]] = {}
    for path in sorted(Path(dump_dir).glob("target*.npz")):
        target = dict(np.load(path))
        matrices = {k[len("scores_"):]: v for k, v in target.items() if k.startswith("scores_")}
        if extra is not None:
            matrices.update(extra(target))
        score_target(target, matrices, totals)
    return summarise(totals)


def score_target(target: dict, matrices: dict[str, np.ndarray], totals: dict[str, dict[str, list]]) -> None:
    """Add each [rows, sources] matrix's rows, scored against `target`'s held-out truth, to `totals`."""
    from whence_ls.bench.attribution import MIN_EFFECT, _spearman, rank
    from whence_ls.engine.attribution.ablation import fit_effects

    truth, outcomes = target["truth_masks"], target["truth_outcomes"]
    effects = fit_effects(truth, outcomes)
    for name, matrix in matrices.items():
        entry = totals.setdefault(name, {"lds": [], "top1": [], "top3": [], "copy": []})
        for r in range(matrix.shape[0]):
            ranking = rank(matrix[r], False)
            lds = _spearman(truth.astype(np.float64) @ matrix[r], outcomes[:, r])
            if lds is not None:
                entry["lds"].append(lds)
            if effects[r].max() >= MIN_EFFECT:
                best = int(effects[r].argmax())
                entry["top1"].append(ranking[0] == best)
                entry["top3"].append(best in ranking[:3])
            copies = target["copy_columns"][r]
            if copies.any():
                entry["copy"].append(bool(copies[ranking[0]]))


def summarise(totals: dict[str, dict[str, list]]) -> dict[str, dict]:
    return {name: {"rows": len(e["lds"]), "lds": float(np.mean(e["lds"])) if e["lds"] else None,
                   "top1": float(np.mean(e["top1"])) if e["top1"] else None,
                   "top3": float(np.mean(e["top3"])) if e["top3"] else None,
                   "copy": float(np.mean(e["copy"])) if e["copy"] else None, "copy_cases": len(e["copy"])}
            for name, e in totals.items()}
