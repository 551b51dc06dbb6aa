"""Verified rows: random-subset ablation run after the cheap estimate, cheaply enough to do for
every token a person hovers or accepts.

What makes it cheap:
- the context's keys and values are computed once (one forward over the unmasked prefix, or a
  copy from the prefix cache, where the completion that made the record left them); under a
  mask only the positions from the first removed source on are run again (everything before it
  sees exactly what it saw unmasked: attention is causal). Masks are sorted by that position and
  batched, so a batch restarts at the earliest first-removed position of its masks. That is the
  `exact` mode. The `tail` mode restarts every mask at a fixed point, `tail` context tokens
  before the completion: removed sources before it are hidden from the tail and the completion
  but the positions between them keep their unmasked states (an approximation whose cost in
  agreement `whence-ls bench attribution` measures);
- the estimate is the fit's prior: the effects are the estimate, scaled to the outcomes, plus a
  ridge fit of what it leaves unexplained (`fit_with_prior`), so the masks correct the estimate
  where they can tell rather than start from nothing;
- the tail can be short: what decides agreement is the number of masks, not how much of the
  context is run again (the numbers are at `VERIFY_TAIL`), so the positions go into masks;
- the work is resumable: a `Verification` keeps the outcomes of the masks done so far, so
  background work that yields to an interactive request between batches loses nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import torch

from whence_ls.engine.attribution.ablation import (
    KEEP_PROBABILITY, LASSO_ALPHA, ablatable_sources, log_odds, position_owner,
)
from whence_ls.engine.attribution.base import AttributionRow, TeacherForced, normalise
from whence_ls.engine.attribution.masked_model import masked_model, preferred_precision
from whence_ls.engine.attribution.prefix_kv import prefix_forward, unmasked_prefix
from whence_ls.engine.taps import Preempted, stops_at_a_layer

VERIFY_MASKS = 32
# context tokens before the completion that are run again under each mask (None: exact, from the
# first removed source). Measured on the suite's 24 dumped targets (154 rows, ~250 context
# tokens; `whence-ls bench attribution --reverify`), LDS against the held-out truth with the
# estimate as prior: 32 masks, tail 4 / 16 / 32 / 64: 0.641 / 0.656 / 0.661 / 0.670; 16 masks,
# tail 16 / 64: 0.598 / 0.606; 48 and 64 masks, tail 16: 0.686 / 0.703. A 16-token tail and 32
# masks run 1,024 positions per 16-token completion, fewer than 16 masks with a 64-token tail
# (1,280) at +0.05 LDS.
VERIFY_TAIL: int | None = 16
# the ridge penalty of the fit's departure from the scaled estimate (`fit_with_prior`), in units of
# the 0/1 mask features: 3 was best of 0.3-30 on each half of the suite's targets separately
PRIOR_RIDGE = 3.0
# masks per batched forward: a yield to interactive work loses at most one batch's work (the
# forward under way stops at its next layer)
VERIFY_BATCH = 8
METHOD_NAME = "ablation"


@dataclass
class Verification:
    """One record's verification in progress: which masks, and the outcomes of those done."""

    indices: list[int]  # token indexes whose rows are verified
    sources: list[int]  # unit indexes that can be removed
    masks: np.ndarray  # [k, sources] True where the source is kept
    tail: int | None = None  # None: exact
    outcomes: dict[int, np.ndarray] = field(default_factory=dict)  # mask number -> log-odds per row
    prefix: object = None  # the unmasked prefix's keys and values, kept between batches
    precision: str = "fp32"  # of the masked forwards (`masked_model.py`)
    from_start: bool = False  # the model's cache forgets (sliding windows): every mask reruns everything
    forwards_tokens: int = 0  # positions run under masks (a cost measure)

    @property
    def done(self) -> bool:
        return len(self.outcomes) == len(self.masks)


def start(lm, record, indices: list[int], unit_map, *, masks: int = VERIFY_MASKS, seed: int = 0,
          tail: int | None = None, precision: str = "fp32") -> Verification:
    sources = ablatable_sources(unit_map)
    generator = np.random.default_rng(seed)
    chosen = generator.random((masks, len(sources))) < KEEP_PROBABILITY
    return Verification(indices=list(indices), sources=sources, masks=chosen, tail=tail, precision=precision)


def advance(lm, record, state: Verification, unit_map, cancel: threading.Event | None = None) -> bool:
    """Run the masks not done yet, a batch at a time, until all are done (True) or `cancel` is
    set between batches (False; call again to go on)."""
    if state.done or not state.sources:
        state.prefix = None
        return True
    job = TeacherForced.of(lm, record)
    end = max(job.target_position(i) for i in state.indices) + 1
    owner = position_owner(unit_map) + [-1] * (end - job.context_len)
    owner = owner[:end]
    column_of = {s: c for c, s in enumerate(state.sources)}
    columns = np.array([column_of.get(u, -1) if u >= 0 else -1 for u in owner])
    first_removed = [_first_removed(columns, state.masks[m]) for m in range(len(state.masks))]
    todo = sorted((m for m in range(len(state.masks)) if m not in state.outcomes), key=lambda m: first_removed[m])
    model = masked_model(lm, state.precision)
    with stops_at_a_layer(model, cancel):
        try:
            if state.prefix is None:
                needed = _prefix_length(job, state)
                state.prefix = unmasked_prefix(job, model, needed)
                if any(keys.shape[2] < needed for keys, _ in state.prefix):
                    # a sliding-window layer kept only its last positions: run every mask from
                    # the start, over the first token's keys alone
                    state.prefix, state.from_start = prefix_forward(job, model, 1), True
            for start_at in range(0, len(todo), VERIFY_BATCH):
                if cancel is not None and cancel.is_set():
                    return False
                batch = todo[start_at : start_at + VERIFY_BATCH]
                if state.from_start:
                    split = 1
                elif state.tail is None:
                    split = max(1, min(min(first_removed[m] for m in batch), job.target_position(min(state.indices))))
                else:
                    split = _prefix_length(job, state)
                logp = _masked_from(job, model, state, batch, columns, split, end)
                for k, m in enumerate(batch):
                    state.outcomes[m] = log_odds(logp[k])
                state.forwards_tokens += len(batch) * (end - split)
        except Preempted:
            return False  # the batch under way is lost, the ones done are kept
    state.prefix = None  # the keys and values are large; a finished verification needs none
    return True


def _first_removed(columns: np.ndarray, keep: np.ndarray) -> int:
    removed = np.flatnonzero((columns >= 0) & ~keep[np.maximum(columns, 0)])
    return int(removed[0]) if removed.size else len(columns)


def _prefix_length(job: TeacherForced, state: Verification) -> int:
    """How many leading positions' unmasked keys and values the masked runs read: in tail mode,
    those before the tail; in exact mode, the whole context (each batch restarts elsewhere)."""
    if state.tail is None:
        return job.context_len
    return max(1, min(job.context_len - state.tail, job.target_position(min(state.indices))))


def _masked_from(job: TeacherForced, model, state: Verification, batch: list[int], columns: np.ndarray, split: int, end: int) -> np.ndarray:
    """[len(batch), rows] log p of each row's token with each mask's sources removed from
    attention, positions [split, end) run again over the prefix's cached keys and values."""
    from transformers import DynamicCache

    device = job.ids.device
    count = len(batch)
    keep = torch.from_numpy(state.masks[batch]).to(device)  # [B, S]
    cols = torch.from_numpy(columns).to(device)
    kept_keys = torch.ones(count, end, dtype=torch.bool, device=device)
    removable = cols >= 0
    kept_keys[:, removable] = keep[:, cols[removable]]
    queries = torch.arange(split, end, device=device)
    keys = torch.arange(end, device=device)
    allowed = (keys[None, :] <= queries[:, None]).unsqueeze(0) & kept_keys.unsqueeze(1)  # [B, q, end]
    allowed |= (keys[None, :] == queries[:, None]).unsqueeze(0)  # a removed query still sees itself
    dtype = next(model.parameters()).dtype
    mask = torch.zeros(count, 1, end - split, end, dtype=dtype, device=device)
    mask.masked_fill_(~allowed.unsqueeze(1), torch.finfo(dtype).min)
    cache = DynamicCache(ddp_cache_data=[(k[:, :, :split].expand(count, -1, -1, -1), v[:, :, :split].expand(count, -1, -1, -1))
                                         for k, v in state.prefix])
    targets = torch.tensor([job.target_id(i) for i in state.indices], device=device)
    at = torch.tensor([job.target_position(i) - split for i in state.indices], device=device)
    with torch.inference_mode():
        logits = model(
            input_ids=job.ids[split:end].unsqueeze(0).expand(count, -1),
            attention_mask=mask,
            position_ids=queries.unsqueeze(0).expand(count, -1),
            use_cache=True,
            **{getattr(job.lm, "cache_argument", "past_key_values"): cache},
            logits_to_keep=at,
        ).logits.float()
    logp = torch.log_softmax(logits, dim=-1)[:, torch.arange(len(state.indices), device=device), targets]
    return logp.double().cpu().numpy()


def fit_with_prior(masks: np.ndarray, outcomes: np.ndarray, prior: np.ndarray | None, alpha: float = LASSO_ALPHA) -> np.ndarray:
    """[rows, sources]: per row, the effects of the kept sources on the outcome.

    With the row's estimate (`prior`, [rows, sources]): the estimate scaled by least squares to
    the outcomes, plus a ridge fit (`PRIOR_RIDGE`) of what that leaves unexplained, so the
    effects stay near the estimate where the masks cannot tell and move where they can. An
    estimate that points the wrong way (negative scale), or none, gives the plain Lasso fit.
    Measured on the suite's dumped outcomes (tail 64, 16 masks): LDS 0.606 against 0.571 for the
    Lasso with the estimate as a lightly penalised column, better on both halves of the targets
    at every mask count tried (16-32)."""
    from sklearn.linear_model import Lasso

    features = masks.astype(np.float64)
    centred = features - features.mean(axis=0)
    coefficients = np.zeros((outcomes.shape[1], masks.shape[1]))
    for row in range(outcomes.shape[1]):
        target = outcomes[:, row]
        if np.ptp(target) < 1e-9:
            continue
        estimate = prior[row] if prior is not None else None
        if estimate is not None and np.abs(estimate).sum() > 0:
            deviation = target - target.mean()
            predicted = centred @ estimate
            scale = float(predicted @ deviation) / max(float(predicted @ predicted), 1e-12)
            if scale > 0:
                unexplained = deviation - scale * predicted
                gram = centred.T @ centred + PRIOR_RIDGE * np.eye(centred.shape[1])
                coefficients[row] = scale * estimate + np.linalg.solve(gram, centred.T @ unexplained)
                continue
        fit = Lasso(alpha=alpha, fit_intercept=True, max_iter=5000)
        fit.fit(features, target)
        coefficients[row] = fit.coef_
    return coefficients


def finish(state: Verification, unit_count: int, estimates: dict[int, AttributionRow] | None) -> dict[int, AttributionRow]:
    """The verified rows of a finished verification, each with how far its estimate was."""
    done = sorted(state.outcomes)
    masks = state.masks[done]
    outcomes = np.stack([state.outcomes[m] for m in done])  # [k, rows]
    prior = None
    if estimates:
        prior = np.zeros((len(state.indices), len(state.sources)))
        for r, index in enumerate(state.indices):
            row = estimates.get(index)
            if row is not None:
                prior[r] = [row.scores[s] for s in state.sources]
    effects = fit_with_prior(masks, outcomes, prior)
    rows = {}
    for r, index in enumerate(state.indices):
        scores = torch.zeros(unit_count, dtype=torch.float64)
        if state.sources:
            scores[torch.tensor(state.sources)] = torch.from_numpy(effects[r])
        normalised, raw_sum, total_abs = normalise(scores)
        extra = {"verified_masks": len(done), "verification": "exact" if state.tail is None else f"tail {state.tail}",
                 "verification_precision": state.precision}
        estimate = estimates.get(index) if estimates else None
        if estimate is not None:
            extra["estimate_agreement"] = agreement(estimate, normalised, masks, outcomes[:, r], state.sources)
        rows[index] = AttributionRow(token_index=index, method=METHOD_NAME, scores=normalised, raw_sum=raw_sum,
                                     total_abs=total_abs, rank_by_abs=False, extra=extra)
    return rows


def agreement(estimate: AttributionRow, verified: list[float], masks: np.ndarray, outcome: np.ndarray, sources: list[int]) -> dict:
    """How far the estimate was from the verification: whether their top sources agree, where
    the verified top source sits in the estimate's ranking, and the estimate's LDS on the
    verification's own masks (Spearman of predicted against measured outcomes)."""
    from whence_ls.engine.attribution.calibration import linear_datamodeling_score

    ranking = estimate.ranking()
    verified_top = max(range(len(verified)), key=lambda u: verified[u]) if any(v > 0 for v in verified) else None
    estimate_top = ranking[0] if ranking else None
    predicted = masks.astype(np.float64) @ np.array([estimate.scores[s] for s in sources])
    lds = linear_datamodeling_score(predicted, outcome) if len(outcome) > 2 else None
    return {
        "same_top": verified_top is not None and verified_top == estimate_top,
        "verified_top": verified_top,
        "estimate_top": estimate_top,
        "rank_in_estimate": (ranking.index(verified_top) + 1) if verified_top is not None else None,
        "lds": None if lds is None or not np.isfinite(lds) else round(float(lds), 3),
    }


def verify_rows(lm, record, indices: list[int], unit_map, estimates: dict[int, AttributionRow] | None = None, *,
                masks: int = VERIFY_MASKS, tail: int | None = VERIFY_TAIL, seed: int = 0, precision: str = "fp32",
                cancel: threading.Event | None = None, state: Verification | None = None) -> tuple[dict[int, AttributionRow] | None, Verification]:
    """Verified rows of `indices` (None while cut short by `cancel`: pass the returned state
    back to go on). `precision`: of the masked forwards (`masked_model.py`)."""
    if state is None:
        state = start(lm, record, indices, unit_map, masks=masks, seed=seed, tail=tail, precision=precision)
    if not advance(lm, record, state, unit_map, cancel):
        return None, state
    return finish(state, len(unit_map.units), estimates), state


def verify_record(lm, record, language: str | None = None, cancel: threading.Event | None = None,
                  state: Verification | None = None) -> tuple[dict[int, AttributionRow] | None, Verification]:
    """Verified rows of every token of `record` (the calls the language server makes), with the
    record's estimate rows, whatever method made them, as the prior, and the masked forwards in
    bf16 where this CPU runs them much faster (`masked_model.preferred_precision`); resumable
    like `verify_rows`."""
    from whence_ls.engine.attribution.units import unit_map as units_of

    units = units_of(record, language)
    estimates = {i: row for i, row in record.attribution.items() if isinstance(row, AttributionRow)}
    return verify_rows(lm, record, list(range(len(record.tokens))), units, estimates, cancel=cancel, state=state,
                       precision=preferred_precision(lm))
