"""The unmasked context's keys and values, for methods that run only a tail of the sequence
again (verified rows, the leave-one-out part of `stacked_leave_one_out`, the patching part of
`stacked_patching`).

The completion that made the record ran this very context, and the model's prefix cache usually
still holds its keys and values: a copy of them saves the one full forward such a method would
otherwise begin with (a third of verification's time at 512 context tokens). They came from the
decoding forward, so in fp16 or int8 they carry that precision's rounding (mean KL from fp32 2e-6
for fp16, `whence-ls bench generate`), far below any mask's effect.
"""

from __future__ import annotations

import torch

from whence_ls.engine.attribution.base import TeacherForced


def unmasked_prefix(job: TeacherForced, model, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the unmasked keys and values of positions [0, length) ([1, kv heads, L, d]),
    in `model`'s precision: a copy from the prefix cache where it holds them, else one forward."""
    cache = getattr(job.lm, "prefix_cache", None)
    if cache is not None:
        ids = job.ids[:length].tolist()
        kept = cache.copy_of_prefix(ids, length)
        if kept is not None:
            dtype = next(model.parameters()).dtype
            return [(k.to(dtype), v.to(dtype)) for k, v in kept]
    return prefix_forward(job, model, length)


def prefix_forward(job: TeacherForced, model, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the unmasked keys and values of positions [0, length), from one forward."""
    with torch.inference_mode():
        out = model(input_ids=job.ids[:length].unsqueeze(0), use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    return [(layer.keys, layer.values) for layer in cache.layers]
