"""Random-subset ablation (ContextCite's design, MadryLab): the reference every other method is
measured against, and the on-demand "deep explain".

k random masks drop each source with probability 1/2. Every mask is one teacher-forced forward
over context + completion in which the dropped sources' tokens are removed from attention by a
4-D mask: positions stay as they were, and all masks of a batch share one forward. One batch of
forwards scores every generated token at once. Per token, a sparse linear fit (Lasso) of the
token's log-odds on the masks gives each source's effect: how much keeping it raises the token's
log-odds, other sources held at random. Unlike leaving one source out, this credits a source
that repeats what another says (an identifier used on several lines) instead of splitting the
credit to nothing.
"""

from __future__ import annotations

import numpy as np
import torch

from whence_ls.engine.attribution.base import ALL_ROWS, RawRow, TeacherForced

DEFAULT_MASKS = 32
KEEP_PROBABILITY = 0.5
# ContextCite's default sparsity; on 20-60 sources with 32 masks it keeps the handful that matter
LASSO_ALPHA = 0.01
# masks per forward batch: enough to amortise Python overhead, small enough that a cancel (or an
# interactive request) waits at most one batch
MASKS_PER_BATCH = 4


class Ablation:
    name = "ablation"
    rank_by_abs = False  # a positive effect supports the token, a negative one argued against it
    rows_per_batch = ALL_ROWS  # the forwards are shared by every row

    def __init__(self, masks: int = DEFAULT_MASKS, seed: int = 0, alpha: float = LASSO_ALPHA) -> None:
        if masks < 2:
            raise ValueError("ablation needs at least 2 masks")
        self.masks = masks
        self.seed = seed
        self.alpha = alpha

    def compute(self, job: TeacherForced, indices: list[int], unit_map) -> dict[int, RawRow]:
        sources = ablatable_sources(unit_map)
        if not sources:
            return {i: RawRow(unit_scores=torch.zeros(len(unit_map.units), dtype=torch.float64)) for i in indices}
        masks = random_masks(self.masks, len(sources), self.seed)
        outcomes = masked_log_odds(job, indices, unit_map, sources, masks)
        if outcomes is None:
            return {}  # cancelled
        coefficients = fit_effects(masks, outcomes, self.alpha)  # [rows, sources]
        rows = {}
        for k, index in enumerate(indices):
            scores = torch.zeros(len(unit_map.units), dtype=torch.float64)
            scores[torch.tensor(sources)] = torch.from_numpy(coefficients[k])
            rows[index] = RawRow(unit_scores=scores, extra={"masks": self.masks})
        return rows


def ablatable_sources(unit_map) -> list[int]:
    """Sources that own at least one non-sink position (the others cannot be removed)."""
    owner = position_owner(unit_map)
    return sorted({u for p, u in enumerate(owner) if u >= 0})


def position_owner(unit_map) -> list[int]:
    """Per context position, the one source that removing takes it away (the one with the
    largest share of it; -1 for sinks and special tokens, which are never removed)."""
    weights = unit_map.weights
    owner = []
    for p in range(weights.shape[0]):
        row = weights[p]
        owner.append(int(row.argmax()) if p >= unit_map.sink_positions and float(row.sum()) > 0 else -1)
    return owner


def random_masks(count: int, sources: int, seed: int) -> np.ndarray:
    """[count, sources] booleans, True where the source is kept."""
    generator = np.random.default_rng(seed)
    return generator.random((count, sources)) < KEEP_PROBABILITY


def masked_log_odds(job: TeacherForced, indices: list[int], unit_map, sources: list[int], masks: np.ndarray) -> np.ndarray | None:
    """[masks, rows]: log(p / (1 - p)) of each asked token with each mask's sources kept (and
    the rest removed from attention). None when `job.cancel` was set between batches."""
    logp = masked_logprobs(job, indices, unit_map, sources, masks)
    if logp is None:
        return None
    return log_odds(logp)


def log_odds(logp: np.ndarray) -> np.ndarray:
    # ContextCite fits log-odds rather than probabilities: linear in what sources add, and not
    # squashed at p near 0 or 1
    logp = np.minimum(logp, -1e-6)
    return logp - np.log(-np.expm1(logp))


def masked_logprobs(job: TeacherForced, indices: list[int], unit_map, sources: list[int], masks: np.ndarray) -> np.ndarray | None:
    model = job.lm.model
    end = max(job.target_position(i) for i in indices) + 1
    ids = job.ids[:end]
    device = ids.device
    owner = torch.tensor(position_owner(unit_map) + [-1] * (end - job.context_len), device=device)[:end]
    targets = torch.tensor([job.target_id(i) for i in indices], device=device)
    keep_logits = torch.tensor([job.target_position(i) for i in indices], device=device)
    source_index = torch.full((len(unit_map.units) + 1,), -1, dtype=torch.long, device=device)
    source_index[torch.tensor(sources, device=device)] = torch.arange(len(sources), device=device)
    column = source_index[owner.clamp(min=0)]  # per position, its source's column in the mask, or -1
    column = torch.where(owner >= 0, column, torch.full_like(column, -1))
    causal = torch.ones(end, end, dtype=torch.bool, device=device).tril()
    dtype = next(model.parameters()).dtype
    blocked = torch.finfo(dtype).min
    positions = torch.arange(end, device=device).unsqueeze(0)
    results = []
    with torch.inference_mode():
        for start in range(0, len(masks), MASKS_PER_BATCH):
            if job.cancel is not None and job.cancel.is_set():
                return None
            chunk = torch.from_numpy(masks[start : start + MASKS_PER_BATCH]).to(device)  # [B, S]
            batch = chunk.shape[0]
            kept_keys = torch.ones(batch, end, dtype=torch.bool, device=device)
            removable = column >= 0
            kept_keys[:, removable] = chunk[:, column[removable]]
            allowed = causal.unsqueeze(0) & kept_keys.unsqueeze(1)  # [B, query, key]
            # a removed position still attends to itself so its own row is never empty (its output
            # is read by nobody: no kept query attends to it)
            allowed |= torch.eye(end, dtype=torch.bool, device=device).unsqueeze(0)
            mask = torch.zeros(batch, 1, end, end, dtype=dtype, device=device)
            mask.masked_fill_(~allowed.unsqueeze(1), blocked)
            logits = model(
                input_ids=ids.unsqueeze(0).expand(batch, -1),
                attention_mask=mask,
                position_ids=positions.expand(batch, -1),
                use_cache=False,
                logits_to_keep=keep_logits,
            ).logits.float()
            logp = torch.log_softmax(logits, dim=-1)[:, torch.arange(len(indices), device=device), targets]
            results.append(logp.double().cpu().numpy())
    return np.concatenate(results, axis=0)


def fit_effects(masks: np.ndarray, outcomes: np.ndarray, alpha: float = LASSO_ALPHA) -> np.ndarray:
    """[rows, sources]: per row, the Lasso coefficients of outcome on the kept sources."""
    from sklearn.linear_model import Lasso

    features = masks.astype(np.float64)
    coefficients = np.zeros((outcomes.shape[1], masks.shape[1]))
    for row in range(outcomes.shape[1]):
        target = outcomes[:, row]
        if np.ptp(target) < 1e-9:
            continue  # no mask moved this token: no source mattered
        fit = Lasso(alpha=alpha, fit_intercept=True, max_iter=5000)
        fit.fit(features, target)
        coefficients[row] = fit.coef_
    return coefficients
