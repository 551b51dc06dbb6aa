"""Where a decoding step's time goes: the step's products alone (every weight read once, the
floor of a step) against whole one-token steps, per precision of the fast decoder.

A one-token step on a CPU is memory-bound: if its products alone take most of it, a faster step
needs fewer bytes; if the rest (attention, norms, rotations, the framework's dispatch of some
thirty small operations per layer) takes a large share, it needs fewer, fused operations (a
compiled graph), not smaller weights. `whence-ls bench generate` prints this below its table.
"""

from __future__ import annotations

import statistics
import time


def step_floor(engines: dict, context_ids: list[int], steps: int = 32, repeats: int = 5) -> list[str]:
    """Markdown rows `| precision | products alone ms | whole step ms | products' share |`, medians
    of `repeats` alternating runs of `steps` steps each after `context_ids`."""
    import torch

    decoders = {precision: lm.decoder for precision, lm in engines.items() if lm.decoder is not None}
    if not decoders:
        return []
    caches = {}
    with torch.inference_mode():
        for precision, decoder in decoders.items():
            cache = decoder.new_cache(len(context_ids) + steps * (repeats + 1) + 8)
            decoder.forward(list(context_ids), cache)
            caches[precision] = cache
        token = [int(context_ids[-1])]
        timings: dict[str, dict[str, list[float]]] = {p: {"products": [], "step": []} for p in decoders}
        for round_ in range(repeats + 1):  # the first round warms up and is not kept
            for precision, decoder in decoders.items():
                started = time.perf_counter()
                for _ in range(steps):
                    decoder.products_only()
                products = (time.perf_counter() - started) / steps
                started = time.perf_counter()
                for _ in range(steps):
                    decoder.forward(token, caches[precision])
                step = (time.perf_counter() - started) / steps
                if round_:
                    timings[precision]["products"].append(products)
                    timings[precision]["step"].append(step)
    rows = []
    for precision, timing in timings.items():
        products, step = statistics.median(timing["products"]), statistics.median(timing["step"])
        rows.append(f"| {precision} | {1000 * products:.1f} | {1000 * step:.1f} | {100 * products / step:.0f}% |")
    return rows
