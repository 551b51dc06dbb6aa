"""The calibrated estimator's rows read while the completion is generated.

Each decoding forward already has, per layer, the fed positions' hidden states and every key of
the context in the KV cache. A forward hook on each attention module recomputes the fed
positions' queries and their softmax over those keys (n x L per head, the same scores the
attention computed, as `attention_probe._rows_from_queries` does after the fact) and keeps, per
generated token, only what the row needs: the attention summed with the calibrated head weights,
the copy heads' mean attention, and each layer's hidden state for the logit lens. So the whole
matrix of a completion comes with it: no forward after the fact, and a hover on any token,
the healed first one included, finds its row ready.

For `stacked_attention` (asked with `stacked=True`, where its scorer ships) each row also keeps
the stacked estimator's head-group sums over positions (`live_stacked.py`), made from what the
forwards kept once the tokens are chosen (`complete`, `finish`, and `resolve` when the rows are
first read): its rows then need no forward either.

Used only where `attention_probe` has checked that this recomputation reproduces the model's own
attention weights, and only for a calibrated model; otherwise generation runs without it and
rows are computed afterwards as before.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import torch

# what generation reads for a method's rows: its own, or (the stacked mixes) their stacked half's
_LIVE_PART = {"calibrated_attention": "calibrated_attention", "stacked_attention": "stacked_attention",
              "stacked_patching": "stacked_attention", "stacked_leave_one_out": "stacked_attention"}
# the methods whose rows generation can read (`generate(live_rows=...)`)
LIVE_METHODS = tuple(method for method, part in _LIVE_PART.items() if part == method)


def live_part(method: str) -> str | bool:
    """The `live_rows` argument of `generate` for `method`'s rows: what it can read while the
    completion decodes, or False."""
    return _LIVE_PART.get(method, False)


@dataclass
class LiveRow:
    """What generation kept for one generated token (positions up to the one predicting it)."""

    scores: torch.Tensor  # [position + 1] calibrated attention over the sequence, float32
    copy_attention: torch.Tensor | None  # [position + 1] the copy heads' mean attention
    lens_top: torch.Tensor | None  # [layers] each layer's top token (the logit lens), not the
    # layers' hidden states: a row stays ~9 KB at 1k positions, not ~80 KB
    # the stacked estimator's head groups summed per position, [groups, position + 1] (named by
    # `head_labels`), when generation was asked for them: ~36 KB at 1k positions for its 9
    # groups, not every head's row (~1 MB)
    head_sums: torch.Tensor | None = None
    head_labels: tuple[str, ...] = ()
    # every head's attention row, held only until `LiveAttention.complete` knows the token
    pending: torch.Tensor | None = field(default=None, repr=False)
    # the batch that makes `head_sums` when the row is first read (`resolve`), and the row's place in it
    deferred: Any = field(default=None, repr=False)
    deferred_index: int = 0


def resolve(row: LiveRow) -> LiveRow:
    """`row` with its stacked sums made (a no-op when they are, or were never asked for)."""
    # Two threads may read one row at once (the rows lane and a hover): each keeps its own
    # reference to the batch (the other may clear `row.deferred` meanwhile; the batch makes its
    # sums once, under its lock), and the labels are in place before the sums say "made".
    deferred = row.deferred
    if row.head_sums is None and deferred is not None:
        sums = deferred.result(row.deferred_index)
        row.head_labels = deferred.labels
        row.head_sums = sums
        row.deferred = None
    return row


def serves(method: str, rows: dict, indices) -> bool:
    """Whether the live `rows` hold what `method` needs for every token of `indices`."""
    if method not in LIVE_METHODS or not all(i in rows for i in indices):
        return False
    return method != "stacked_attention" or all(rows[i].head_sums is not None or rows[i].deferred is not None for i in indices)


class LiveAttention:
    """Hooks on the attention modules for the length of a generation (a context manager)."""

    def __init__(self, lm, head_weights: torch.Tensor, induction_heads: list[int], stacked=None) -> None:
        self.lm = lm
        self.modules = self._modules(lm)
        self.stacked = stacked  # a `LiveHeadSums` when the stacked estimator's sums are kept
        self.head_weights = head_weights
        self.induction = torch.tensor(induction_heads, dtype=torch.long, device=head_weights.device) if induction_heads else None
        self.cache = None  # the generation's KV cache, set before the first forward
        # how many of a forward's last fed positions to read (the token that ends the context or
        # was just chosen, and the draft tokens after it): the prefill before them needs no row
        self.trailing = 1
        self._per_layer: list[torch.Tensor | None] = [None] * len(self.modules)
        self._hooks: list = []
        self._unfinished: list[tuple[LiveRow, int]] = []  # rows whose stacked sums `finish` makes

    def begin(self, context_ids: list[int]) -> None:
        """The ids the generation's cache holds first: the stacked sums reuse what an earlier
        generation computed for the same leading ids."""
        if self.stacked is not None:
            self.stacked.context_ids = list(context_ids)

    @classmethod
    def for_model(cls, lm, stacked: bool = False) -> "LiveAttention | None":
        """A capture for `lm`, or None when its rows cannot be read this way (no calibration, or
        a family whose attention the recomputation does not reproduce). `stacked`: also keep
        the stacked estimator's sums, where its scorer ships (else the rows are the calibrated
        estimator's alone, and stacked rows are computed afterwards)."""
        from whence_ls.engine.attribution.attention_probe import _rows_recomputable
        from whence_ls.engine.attribution.calibration import load_calibration
        from whence_ls.engine.attribution.live_stacked import LiveHeadSums
        from whence_ls.engine.attribution.stacked_attention import load_scorer

        if not getattr(getattr(lm, "decoder", None), "gives_attention", True):
            return None  # a graph runtime (`onnx_decode.py`) keeps its attention: rows come afterwards
        calibration = load_calibration(lm)
        if calibration is None or not _rows_recomputable(lm):
            return None
        weights = torch.tensor(calibration.weights, dtype=torch.float32, device=lm.device)  # beside the rows it weighs
        layers = len(cls._modules(lm))
        if layers == 0 or weights.numel() % layers:
            return None
        scorer = load_scorer(lm) if stacked else None
        sums = LiveHeadSums(lm, cls._modules(lm), scorer.features) if scorer is not None else None
        return cls(lm, weights, list(calibration.induction_heads), sums)

    @staticmethod
    def _modules(lm):
        from whence_ls.engine.taps import attention_modules

        return attention_modules(lm.model)

    def observe(self, layer: int, probs: torch.Tensor) -> None:
        """The softmax of the trailing fed positions over every key, [n, heads, L], from a
        forward that computes it itself (`fast_decode.py`): no hook, nothing recomputed."""
        self._per_layer[layer] = probs.float()

    def __enter__(self) -> "LiveAttention":
        if getattr(self.lm, "decoder", None) is not None:
            return self  # the fast decoder hands its attention to `observe`
        for layer, module in enumerate(self.modules):
            self._hooks.append(module.register_forward_hook(self._hook(layer), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def _hook(self, layer: int):
        def hook(module, args, kwargs, output):
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            embeddings = kwargs.get("position_embeddings", args[1] if len(args) > 1 else None)
            if self.cache is None or hidden is None or embeddings is None:
                return
            keys = self.cache.layers[getattr(module, "layer_idx", layer)].keys
            cos, sin = embeddings
            n = min(self.trailing, hidden.shape[1])
            self._per_layer[layer] = _rows_over_keys(module, hidden[:, -n:], cos[:, -n:], sin[:, -n:], keys)

        return hook

    def take(self, rows: list[int], hidden_states=None, logits: torch.Tensor | None = None) -> list[LiveRow]:
        """The kept rows of the last forward: `rows` index its last `trailing` fed positions
        (0: the first of them) whose next token was generated; `hidden_states` and `logits`
        ([trailing, vocab]) the forward's own."""
        from whence_ls.engine.attribution.calibrated_attention import lens_top_ids

        if any(t is None for t in self._per_layer):
            return []
        weights = torch.cat(self._per_layer, dim=1)  # [n, layers * heads, L]
        self._per_layer = [None] * len(self.modules)
        if weights.shape[1] != self.head_weights.numel():
            return []
        length, fed = weights.shape[2], weights.shape[0]
        if self.stacked is not None and self.cache is not None:
            self.stacked.observe_cache(self.cache, fed)
        tops = None
        if hidden_states is not None and logits is not None and rows:
            at = torch.tensor([row - fed for row in rows], device=logits.device)  # the rows counted from the forward's end
            hidden = torch.stack([h[0, at] for h in hidden_states[1:]], dim=1)  # [rows, layers, hidden]
            tops = lens_top_ids(self.lm, hidden, logits[at])
        kept = []
        for k, row in enumerate(rows):
            end = length - fed + row + 1  # the row's own position + 1: later keys are masked
            scores = torch.einsum("hp,h->p", weights[row, :, :end], self.head_weights)
            copy = weights[row, self.induction, :end].mean(0) if self.induction is not None else None
            kept.append(LiveRow(scores.cpu(), copy.cpu() if copy is not None else None, tops[k] if tops is not None else None,
                                pending=weights[row, :, :end] if self.stacked is not None else None))
        return kept

    def complete(self, row: LiveRow, token_id: int) -> LiveRow:
        """`row` once generation chose its token (the stacked sums need it: its direct logit);
        its sums come with the next `finish`."""
        if row.pending is not None:
            self._unfinished.append((row, token_id))
        return row

    def finish(self) -> None:
        """Every row completed since the last call becomes one batch whose stacked sums are made
        when a row is first read (`live_stacked.Deferred`): at the end of the generation, or of
        a part shown early. Its copy of the cache is safe then: a completed row's positions are
        all chosen tokens', which no crop drops."""
        from whence_ls.engine.attribution.live_stacked import Deferred

        rows, self._unfinished = self._unfinished, []
        if self.stacked is None or self.cache is None or not rows:
            for row, _token in rows:
                row.pending = None
            return
        batch = Deferred(self.stacked, [(row.pending, token) for row, token in rows], self.cache)
        for k, (row, _token) in enumerate(rows):
            row.deferred, row.deferred_index, row.pending = batch, k, None


def _rows_over_keys(module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T * scaling) of the fed positions over every cached key (causal): [n, H, L]."""
    rotary = sys.modules[type(module).__module__].apply_rotary_pos_emb  # the family's own rotation
    head_dim = module.head_dim
    fed = hidden.shape[1]
    query = module.q_proj(hidden).view(1, fed, -1, head_dim)
    if getattr(module, "q_norm", None) is not None:  # qk-norm families (Qwen3, Gemma 3)
        query = module.q_norm(query)
    query = query.transpose(1, 2)  # [1, heads, n, d]
    query, _ = rotary(query, query, cos, sin)
    heads, kv_heads, length = query.shape[1], keys.shape[1], keys.shape[2]
    # query heads come in groups that share one key head (head h reads key head h // group): a
    # grouped product reads each key once instead of copying the keys per head every step
    grouped = query.float().reshape(1, kv_heads, (heads // kv_heads) * fed, head_dim)
    scores = (grouped @ keys.float().transpose(-1, -2)).view(1, heads, fed, length) * module.scaling  # [1, H, n, L]
    positions = torch.arange(length - fed, length, device=hidden.device)
    future = torch.arange(length, device=hidden.device)[None, :] > positions[:, None]  # [n, L]
    scores = scores.masked_fill(future[None, None], float("-inf"))
    return torch.softmax(scores, dim=-1)[0].transpose(0, 1)  # [n, H, L]
