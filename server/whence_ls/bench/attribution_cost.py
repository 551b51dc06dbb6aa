"""Cost of a whole attribution matrix in `whence-ls bench attribution --cost`: seconds and
forward-equivalents for every row of a 32-token completion after ~1k context tokens."""

from __future__ import annotations

import time
from typing import Callable


COST_METHODS = ("calibrated_attention", "value_norm", "gradient_norm", "ablation")


def cost_of_matrix(lm, *, context_tokens: int, new_tokens: int, log: Callable[[str], None],
                   methods: tuple[str, ...] = COST_METHODS) -> dict:
    """Seconds and forward-equivalents for the whole matrix of a `new_tokens` completion after
    about `context_tokens` of context (a held-out file), for every method."""
    import torch

    from whence_ls.bench.attribution import _fresh, heldout_targets
    from whence_ls.engine.attribution import attribute_rows
    from whence_ls.engine.attribution.base import TeacherForced
    from whence_ls.engine.context import build_context
    from whence_ls.engine.generation import generate

    target = max(heldout_targets(40), key=lambda t: t.cursor)
    # exactly `new_tokens` generated tokens: no block-end stop, the matrix size the goal names
    context = build_context(lm.tokenizer, target.text, target.cursor, context_tokens)
    record = generate(lm, context, max_new_tokens=new_tokens)
    job = TeacherForced.of(lm, record)
    with torch.inference_mode():
        times = []
        for _ in range(3):
            began = time.perf_counter()
            lm.model(input_ids=job.ids.unsqueeze(0), use_cache=False, logits_to_keep=1)
            times.append(time.perf_counter() - began)
    forward = min(times)
    indices = list(range(len(record.tokens)))
    costs = {"context_tokens": len(record.context.token_ids), "tokens": len(indices), "forward_s": forward, "methods": {}}
    for name in methods:
        began = time.perf_counter()
        attribute_rows(lm, _fresh(record), indices, name, language="python")
        seconds = time.perf_counter() - began
        costs["methods"][name] = {"seconds": seconds, "fe": seconds / forward}
        log(f"cost {name}: {seconds:.1f} s = {seconds / forward:.1f} FE")
    return costs


def print_cost(cost: dict) -> None:
    print(f"\nwhole matrix of {cost['tokens']} tokens after {cost['context_tokens']} context tokens "
          f"(one forward {cost['forward_s']:.2f} s):")
    for name, entry in cost["methods"].items():
        print(f"  {name}: {entry['seconds']:.1f} s = {entry['fe']:.1f} FE")
