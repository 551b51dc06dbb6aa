"""The stacked estimator's head features read while the completion is generated (issue 21).

`stacked_attention` reads, per (token, source), three things of every head summed over groups of
layers (`head_features`): the attention, the attention times ||W_O^h v_j|| (what position j can
write through the head) and the head's direct logit of the token through j (attention x
v_j . W_O^h^T u_token). All three are the decoding forward's own attention row times a quantity
of the cached values, so generation can sum them per head group and position at once and keep
only those sums ([groups, positions] per token, a few KB), never the heads' rows:

- ||W_O^h v_j|| = sqrt(v_j^T (W_O^h^T W_O^h) v_j): a d x d Gram matrix per head, computed once per
  position (values in the cache never change) instead of the D-wide product `head_features` takes;
- the direct logit needs the token, known only once generation chose it, so a token's row is
  held until the end of the completion (or a part shown early), and the batch is made when its
  rows are first read (`Deferred`), off the ghost text's path. It leaves out the final norm's
  1/RMS at the token: a positive scale of the whole row, which the stacked features' per-row
  normalisation removes.

The sums are linear in the heads, so mapping positions to sources afterwards (`unit_map`) gives
`head_features`' sums exactly; tests compare the two.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch

# what `stacked_attention.scalar_features` reads of the heads: each part summed over a third of
# the layers (the totals are the thirds' sum), and finer groups only where the scorer names them
PARTS = ("attention", "value", "logit")
# rows whose direct logits are one product (bounds its memory: ~16 x 3 x 1k floats a kv head)
ROWS_AT_ONCE = 16

# what a thread calls before each batch of rows' sums (`pausing`): the language server makes an
# offered completion's sums beside the next completion, and they step aside while one runs
_pause = threading.local()


@contextmanager
def pausing(wait: Callable[[], None]) -> Iterator[None]:
    """Within the block, this thread calls `wait()` before each batch of `ROWS_AT_ONCE` rows'
    sums (it may block, or raise to give the work up: the rows then stay unmade)."""
    before = getattr(_pause, "wait", None)
    _pause.wait = wait
    try:
        yield
    finally:
        _pause.wait = before


def group_names(features: list[str]) -> list[tuple[str, int, int]]:
    """(part, groups, group) for every head group the scorer's features need."""
    from whence_ls.engine.attribution.stacked_attention import GROUPS

    counts = [3] + [n for n, names in GROUPS.items() if any(name in features for name in names)]
    return [(part, n, g) for part in PARTS for n in counts for g in range(n)]


def group_label(part: str, n: int, g: int) -> str:
    """The name `scalar_features` gives the group (thirds are early / middle / late)."""
    return f"{part}_{('early', 'middle', 'late')[g]}" if n == 3 else f"{part}_{n}_{g}"


class LiveHeadSums:
    """Per generation: the value norms of the cached positions (grown as the cache grows) and,
    per kept token, its head groups' sums over positions. Every layer is read in one batched
    product (a loop over 30 layers' small products cost ~25 ms a token on a busy core)."""

    def __init__(self, lm, modules, features: list[str]) -> None:
        self.lm = lm
        self.modules = modules
        self.groups = group_names(features)
        self.labels = tuple(group_label(*g) for g in self.groups)
        self.head_dim = modules[0].head_dim
        self.heads = modules[0].o_proj.weight.shape[1] // self.head_dim
        total = self.heads * len(modules)
        # [groups of a part, layers * heads]: 1 where the head is in the group (heads are
        # layer-major); the groups are the same for every part
        per_part = [(n, g) for part, n, g in self.groups if part == PARTS[0]]
        self.membership = torch.zeros(len(per_part), total)
        for k, (n, g) in enumerate(per_part):
            self.membership[k, np.array_split(np.arange(total), n)[g]] = 1.0
        self.out, self.gram = _weights(lm, modules, self.heads, self.head_dim)
        model = lm.model
        self.unembed = model.get_output_embeddings().weight
        norm = getattr(getattr(model, "model", model), "norm", None)
        self.norm_scale = norm.weight.detach().float() if norm is not None and getattr(norm, "weight", None) is not None else None
        self.norms: torch.Tensor | None = None  # [layers * heads, capacity] ||W_O^h v_j||
        self.normed = 0  # positions whose norms are current
        self.context_ids: list[int] = []  # the ids the cache's first positions hold (set by generation)

    def observe_cache(self, cache, fed: int) -> None:
        """Norms for the positions the last forward wrote (and any the cache held before this
        generation, from a prefix cache): a cropped draft is rewritten, so its positions count
        as new whatever was computed for them before."""
        length = _length(cache, self.modules)
        if self.norms is None or self.norms.shape[1] < length:
            capacity = max(length, 2 * (self.norms.shape[1] if self.norms is not None else 0))  # grows by doubling
            grown = torch.zeros(self.heads * len(self.modules), capacity, device=self.gram.device)  # the model's device
            if self.norms is not None:
                grown[:, : self.normed] = self.norms[:, : self.normed]
            self.norms = grown
        start = min(self.normed, max(0, length - fed))
        if self.normed == 0:
            start = self._remembered(length - fed)
        values = _values(self, cache, start, length)  # [layers, kv, new, d]
        v = values.repeat_interleave(self.heads // values.shape[1], dim=1)  # [layers, H, new, d]
        squared = ((v @ self.gram) * v).sum(-1)  # [layers, H, new]
        self.norms[:, start:length] = squared.clamp(min=0).sqrt().reshape(-1, length - start)
        if self.normed == 0:
            self._remember(length - fed)
        self.normed = length

    def _remembered(self, limit: int) -> int:
        """Copies the norms an earlier generation computed for the same leading ids (a value
        depends on the ids up to its own position only); returns how many positions it copied.
        Typing re-runs mostly the same window: this spares recomputing ~1k positions each time."""
        kept = getattr(self.lm, "_whence_value_norms", None)
        if kept is None or kept[1].shape[0] != self.norms.shape[0]:
            return 0
        ids, norms = kept
        same = 0
        for a, b in zip(ids, self.context_ids[:limit]):
            if a != b:
                break
            same += 1
        self.norms[:, :same] = norms[:, :same]
        return same

    def _remember(self, count: int) -> None:
        count = min(count, len(self.context_ids))
        self.lm._whence_value_norms = (list(self.context_ids[:count]), self.norms[:, :count].clone())

    def sums(self, rows: list[tuple[torch.Tensor, int]], values: torch.Tensor, norms: torch.Tensor) -> list[torch.Tensor]:
        """[groups, end] per row: the head groups' sums at each position for a token (the id)
        whose attention over positions [0, end) is the row's `probs` ([layers * heads, end]),
        from the positions' cached values ([layers, kv, L, d]) and `norms` ([layers * heads, L]).
        Rows come in a batch: W_O^h^T u for every head reads every layer's W_O (~40 MB), once
        for the batch, not once a token."""
        if not rows:
            return []
        device = values.device  # the model's (the rows' and norms' too)
        u = self.unembed[torch.tensor([token for _probs, token in rows], device=self.unembed.device)].detach().float()  # [T, D]
        if self.norm_scale is not None:
            u = u * self.norm_scale  # the final RMSNorm's scale folds into the unembedding
        every = (u @ self.out).to(device)  # [T, layers * H * d]: W_O^h^T u
        membership = self.membership.to(device)
        length = max(probs.shape[1] for probs, _token in rows)
        values = values[:, :, :length]
        layers, kv = values.shape[:2]
        group = self.heads // kv  # head h reads kv head h // group
        keys = values.reshape(layers * kv, length, self.head_dim).transpose(-1, -2)  # [layers * kv, d, L]
        result = []
        wait = getattr(_pause, "wait", None)
        for first in range(0, len(rows), ROWS_AT_ONCE):
            if wait is not None:
                wait()
            batch = rows[first : first + ROWS_AT_ONCE]
            w = every[first : first + len(batch)].view(len(batch), layers * kv, group, self.head_dim)
            # one product for the batch's rows together: a few rows of 3 x 64 each would leave
            # the matrix product nearly idle
            direct = (w.transpose(0, 1).reshape(layers * kv, len(batch) * group, self.head_dim) @ keys)
            direct = direct.view(layers * kv, len(batch), group, length).transpose(0, 1).reshape(len(batch), -1, length)
            # the rows' attention padded to the batch's longest (a causal row is 0 past its own
            # position anyway), so every part is one product for the batch, not three a row
            probs = torch.zeros(len(batch), layers * self.heads, length, device=device)
            for k, (row, _token) in enumerate(batch):
                probs[k, :, : row.shape[1]] = row
            parts = (probs, probs * norms[:, :length].to(device), probs * direct)  # [B, layers * H, L] each
            summed = torch.cat([membership @ part for part in parts], dim=1)  # [B, groups, L], `self.groups`' order
            result.extend(summed[k, :, : row.shape[1]] for k, (row, _token) in enumerate(batch))
        return result


class Deferred:
    """A completion's rows whose sums are made when first read (`result`), on the thread that
    reads them, not while a person waits for the ghost text (~20-40 ms a completion). What they
    need of the cache is copied first: the cache goes on to the next completion. Shared, not
    copied, by a deep copy of the record (it holds the model)."""

    def __init__(self, head_sums: LiveHeadSums, rows: list[tuple[torch.Tensor, int]], cache) -> None:
        length = max(probs.shape[1] for probs, _token in rows)
        self.head_sums = head_sums
        self.labels = head_sums.labels
        self._rows: list | None = rows
        self._values = _values(head_sums, cache, 0, length).clone()  # [layers, kv, L, d]
        self._norms = head_sums.norms[:, :length].clone()
        self._results: list[torch.Tensor] | None = None
        self._lock = threading.Lock()

    def result(self, k: int) -> torch.Tensor:
        """The sums of the batch's `k`-th row (the batch's all made at the first call)."""
        with self._lock:
            if self._results is None:
                with torch.inference_mode():
                    self._results = [r.cpu() for r in self.head_sums.sums(self._rows, self._values, self._norms)]
                self._rows = self._values = self._norms = None  # the copies go once the sums are made
            return self._results[k]

    def __deepcopy__(self, memo) -> "Deferred":
        return self


def _weights(lm, modules, heads: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every layer's W_O side by side, [D, layers * H * d] (~40 MB for SmolLM2-135M: one product
    then gives W_O^h^T u for every head), and W_O^h^T W_O^h, [layers, H, d, d]; built once per
    model, not once per completion."""
    kept = getattr(lm, "_whence_live_stacked_weights", None)
    if kept is None:
        out = [m.o_proj.weight.detach().float() for m in modules]  # [D, H * d] each
        shaped = [o.view(o.shape[0], heads, head_dim) for o in out]
        kept = (torch.cat(out, dim=1).contiguous(), torch.stack([torch.einsum("ohd,ohe->hde", o, o) for o in shaped]))
        lm._whence_live_stacked_weights = kept
    return kept


def _length(cache, modules) -> int:
    return cache.layers[getattr(modules[0], "layer_idx", 0)].values.shape[2]


def _values(head_sums: "LiveHeadSums", cache, start: int, end: int) -> torch.Tensor:
    """The cached values of positions [start, end), every layer: [layers, kv, end - start, d]
    (a view of the fast decoder's cache; a copy from transformers' per-layer one)."""
    whole = getattr(cache, "values", None)
    if isinstance(whole, torch.Tensor) and whole.dim() == 4:
        return whole[:, :, start:end].float()
    return torch.stack([cache.layers[getattr(m, "layer_idx", i)].values[0, :, start:end]
                        for i, m in enumerate(head_sums.modules)]).float()
