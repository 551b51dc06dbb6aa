"""The stacked estimator's head features read while the completion is generated (issue 21).

`stacked_attention` reads, per (token, source), three things of every head summed over groups of
layers (`head_features`): the attention, the attention times ||W_O^h v_j|| (what position j can
write through the head) and the head's direct logit of the token through j (attention x
v_j . W_O^h^T u_token). All three are the decoding forward's own attention row times a quantity
of the cached values, so generation can sum them per head group and position at once and keep
only those sums ([groups, positions] per token, a few KB), never the heads' rows:

- ||W_O^h v_j|| = sqrt(v_j^T (W_O^h^T W_O^h) v_j): a d x d Gram matrix per head, computed once per
  position (values in the cache never change) instead of the D-wide product `head_features` takes;
- the direct logit needs the token, known only once generation chose it (`complete`), and
  leaves out the final norm's 1/RMS at the token: a positive scale of the whole row, which the
  stacked features' per-row normalisation removes.

The sums are linear in the heads, so mapping positions to sources afterwards (`unit_map`) gives
`head_features`' sums exactly; tests compare the two.
"""

from __future__ import annotations

import numpy as np
import torch

# what `stacked_attention.scalar_features` reads of the heads: each part summed over a third of
# the layers (the totals are the thirds' sum), and finer groups only where the scorer names them
PARTS = ("attention", "value", "logit")


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
    per kept token, its head groups' sums over positions."""

    def __init__(self, lm, modules, features: list[str]) -> None:
        self.modules = modules
        self.groups = group_names(features)
        self.labels = tuple(group_label(*g) for g in self.groups)
        first = modules[0]
        self.head_dim = first.head_dim
        out = [m.o_proj.weight.detach().float() for m in modules]  # [D, H * d] each
        self.heads = out[0].shape[1] // self.head_dim
        total = self.heads * len(modules)
        # [groups, layers * heads]: 1 where the head is in the group (heads are layer-major)
        self.membership = torch.zeros(len(self.groups), total)
        for k, (_part, n, g) in enumerate(self.groups):
            self.membership[k, np.array_split(np.arange(total), n)[g]] = 1.0
        self.out = [o.view(o.shape[0], self.heads, self.head_dim) for o in out]  # [D, H, d]
        self.gram = [torch.einsum("ohd,ohe->hde", o, o) for o in self.out]  # [H, d, d]: W_O^h^T W_O^h
        model = lm.model
        self.unembed = model.get_output_embeddings().weight
        norm = getattr(getattr(model, "model", model), "norm", None)
        self.norm_scale = norm.weight.detach().float() if norm is not None and getattr(norm, "weight", None) is not None else None
        self.norms: torch.Tensor | None = None  # [layers * heads, capacity] ||W_O^h v_j||
        self.normed = 0  # positions whose norms are current

    def observe_cache(self, cache, fed: int) -> None:
        """Norms for the positions the last forward wrote (and any the cache held before this
        generation, from a prefix cache): a cropped draft is rewritten, so its positions count
        as new whatever was computed for them before."""
        values = [cache.layers[getattr(m, "layer_idx", i)].values for i, m in enumerate(self.modules)]
        length = values[0].shape[2]
        start = min(self.normed, max(0, length - fed))
        if self.norms is None or self.norms.shape[1] < length:
            grown = torch.zeros(self.heads * len(self.modules), max(length, 2 * (self.norms.shape[1] if self.norms is not None else 0)))
            if self.norms is not None:
                grown[:, : self.normed] = self.norms[:, : self.normed]
            self.norms = grown
        group = self.heads // values[0].shape[1]
        for layer, value in enumerate(values):
            v = value[0, :, start:length].float().repeat_interleave(group, dim=0)  # [H, new, d]
            squared = ((v @ self.gram[layer]) * v).sum(-1)  # [H, new]
            self.norms[layer * self.heads : (layer + 1) * self.heads, start:length] = squared.clamp(min=0).sqrt()
        self.normed = length

    def sums(self, probs: torch.Tensor, token_id: int, cache) -> torch.Tensor:
        """[groups, end]: the head groups' sums at each position for a token whose attention row
        over positions [0, end) is `probs` ([layers * heads, end]), read while `cache` still
        holds the forward's values."""
        end = probs.shape[1]
        u = self.unembed[token_id].detach().float()
        if self.norm_scale is not None:
            u = u * self.norm_scale  # the final RMSNorm's scale folds into the unembedding
        direct = []
        for layer, module in enumerate(self.modules):
            value = cache.layers[getattr(module, "layer_idx", layer)].values[0, :, :end].float()  # [kv, end, d]
            w = torch.einsum("ohd,o->hd", self.out[layer], u)  # [H, d]: W_O^h^T u
            group = self.heads // value.shape[0]
            grouped = w.view(value.shape[0], group, self.head_dim)  # query head h reads kv head h // group
            direct.append(torch.einsum("kcd,kgd->kgc", value, grouped).reshape(self.heads, end))
        parts = {"attention": probs, "value": probs * self.norms[:, :end], "logit": probs * torch.cat(direct)}
        return torch.stack([self.membership[k] @ parts[part] for k, (part, _n, _g) in enumerate(self.groups)])
