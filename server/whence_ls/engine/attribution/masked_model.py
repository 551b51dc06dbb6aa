"""The model that verification's masked forwards run: the model itself, or a bf16 copy of it on a
CPU that multiplies bf16 matrices much faster than fp32 ones.

A verification runs 32 masked copies of a completion's last positions, matrix products that are
bound by arithmetic, not by reading the weights. CPUs with native bf16 dot products (AVX-512
BF16, AMX) run them ~3x faster in bf16 than in fp32 (0.43 against 0.13 TFLOP/s for a
[256, 576] x [576, 3072] product on this project's 2-core test machine), and the outcomes lose
nothing measurable: on the benchmark suite, verified rows from bf16 forwards agree with the
fp32 held-out truth at LDS 0.659 against 0.661 from fp32 forwards (`whence-ls bench attribution
--reverify DIR --reverify-precision bf16`), at 1.4 s per target against 2.8 s. Where bf16 is not
at least `MIN_SPEEDUP` times faster (a CPU without native bf16 emulates it) the model itself is
used; `bf16_is_faster` times the two rather than reading CPU flags.

The copy costs half the fp32 model's memory (270 MB for the embedded 135M model), made on the
first verification; it is not made for models above `MAX_COPY_PARAMETERS`.
"""

from __future__ import annotations

import copy
import threading
import time
import weakref

import torch

PRECISIONS = ("fp32", "bf16")
# a bf16 copy of a bigger model costs more memory than a laptop should give to verification
MAX_COPY_PARAMETERS = 2_000_000_000
# bf16 must beat fp32 by this much on the probe product to be worth a copy of the model
MIN_SPEEDUP = 1.5

_lock = threading.Lock()
_copies: "weakref.WeakKeyDictionary[torch.nn.Module, torch.nn.Module]" = weakref.WeakKeyDictionary()  # model -> its bf16 copy
_probe: bool | None = None


def preferred_precision(lm) -> str:
    """"bf16" where the masked forwards should run on a bf16 copy (a CPU fp32 model, not too big,
    on a CPU that multiplies bf16 fast), else "fp32" (the model as it is)."""
    model = lm.model
    if lm.device.type != "cpu" or next(model.parameters()).dtype != torch.float32:
        return "fp32"
    if sum(p.numel() for p in model.parameters()) > MAX_COPY_PARAMETERS:
        return "fp32"
    return "bf16" if bf16_is_faster() else "fp32"


def masked_model(lm, precision: str) -> torch.nn.Module:
    """The model to run masked forwards with in `precision` ("fp32": the model itself)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown verification precision {precision!r}: use {' or '.join(PRECISIONS)}")
    if precision == "fp32" or next(lm.model.parameters()).dtype == torch.bfloat16:
        return lm.model
    with _lock:
        if lm.model not in _copies:
            # deepcopy, then cast: the fp32 model keeps its own storage (the fast decoder's
            # transposed weights are views of it)
            _copies[lm.model] = copy.deepcopy(lm.model).to(torch.bfloat16).eval()
        return _copies[lm.model]


def bf16_is_faster() -> bool:
    """Whether a bf16 matrix product runs at least `MIN_SPEEDUP` times faster than fp32 on this
    CPU with torch's threads (measured once per process)."""
    global _probe
    if _probe is None:
        x, w = torch.randn(256, 576), torch.randn(1536, 576)
        fp32 = _best_of(lambda: torch.nn.functional.linear(x, w))
        xb, wb = x.bfloat16(), w.bfloat16()
        bf16 = _best_of(lambda: torch.nn.functional.linear(xb, wb))
        _probe = fp32 >= MIN_SPEEDUP * bf16
    return _probe


def _best_of(product, runs: int = 5) -> float:
    product()  # the first call pays for kernel selection
    best = float("inf")
    for _ in range(runs):
        began = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - began)
    return best
