"""One forward of generation: the fast decoder where the model has one (`fast_decode.py`), else the
model's own forward, over a KV cache that the caller keeps."""

from __future__ import annotations

import torch

from whence_ls.engine.loading import LoadedModel


def new_cache(lm: LoadedModel, capacity: int):
    """An empty KV cache for `forward`, with room for `capacity` tokens (it grows past them)."""
    if lm.decoder is not None:
        return lm.decoder.new_cache(capacity)
    from transformers import DynamicCache

    return DynamicCache(config=lm.model.config)


def forward(lm: LoadedModel, ids: list[int], cache, *, logits_to_keep: int = 1, hidden_states: bool = False,
            live=None) -> tuple[torch.Tensor, tuple | None]:
    """Run `ids` after what `cache` holds, with the fast decoder where the model has one
    (`fast_decode.py`), else with the model's own forward: the last `logits_to_keep` positions'
    logits [keep, vocab], and the hidden states when asked. `live` receives the attention."""
    if lm.decoder is not None:
        return lm.decoder.forward(ids, cache, logits_to_keep=logits_to_keep, hidden_states=hidden_states, live=live)
    out = lm.model(input_ids=torch.tensor([ids], device=lm.device), use_cache=True, logits_to_keep=logits_to_keep,
                   output_hidden_states=hidden_states, **{lm.cache_argument: cache})
    return out.logits[0], out.hidden_states


def croppable(cache) -> bool:
    """Whether dropping the newest entries is exact for this cache: a plain KV cache, not a
    sliding window (which forgets) nor a recurrent state."""
    from whence_ls.engine.fast_decode import KVCache

    if isinstance(cache, KVCache):
        return True
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer).__name__ == "DynamicLayer" for layer in layers)
