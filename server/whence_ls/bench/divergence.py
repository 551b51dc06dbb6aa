"""How far an engine's next-token distributions are from the fp32 model's, and how fast this
machine reads memory: the KL and bandwidth columns of `whence-ls bench generate`."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass


@dataclass
class Divergence:
    mean_kl: float  # mean over positions of KL(fp32 || engine), nats
    argmax_changed: int  # positions whose most likely token is not fp32's
    positions: int


class StreamingRead:
    """A buffer of `nbytes` of fp32 and the GB/s of a streaming read of it (a sum, with torch's
    threads), the best of `repeats`: the ceiling for a forward that must read that many bytes of
    weights. One buffer, read again for each reading (this machine's bandwidth moves with its
    neighbours: a reading beside each timed run says what that run could have read)."""

    def __init__(self, nbytes: int) -> None:
        import torch

        self.nbytes = nbytes
        self.buffer = torch.ones(max(1, nbytes // 4), dtype=torch.float32)
        self.buffer.sum()  # touch every page once before timing

    def gbps(self, repeats: int = 5) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            self.buffer.sum()
            times.append(time.perf_counter() - started)
        return self.nbytes / min(times) / 1e9


def read_bandwidth(nbytes: int, repeats: int = 5) -> float:
    """GB/s of a streaming read of `nbytes` of fp32, the best of `repeats` (`StreamingRead`)."""
    return StreamingRead(nbytes).gbps(repeats)


def fp32_logprobs(lm, context: list[int], continuation: list[int]):
    """The model's own (transformers, fp32) log-probabilities at each position that predicts a
    token of `continuation`: [len(continuation), vocab]."""
    import torch

    ids = torch.tensor([context + continuation[:-1]], device=lm.device)
    with torch.inference_mode():
        logits = lm.model(input_ids=ids, use_cache=False, logits_to_keep=len(continuation)).logits[0]
    return torch.log_softmax(logits.double(), dim=-1).cpu()


def kl_of_engine(lm, context: list[int], continuation: list[int], truth) -> Divergence | None:
    """`lm`'s decoding forward (fast decoder, either precision), teacher-forced the same way."""
    import torch

    from whence_ls.engine.decoding_forward import forward, new_cache

    if not continuation:
        return None
    ids = context + continuation[:-1]
    with torch.inference_mode():
        logits, _ = forward(lm, ids, new_cache(lm, len(ids)), logits_to_keep=len(continuation))
    return compare(truth, torch.log_softmax(logits.double(), dim=-1).cpu())


def compare(truth, logprobs) -> Divergence:
    """KL(truth || logprobs) per row, both [positions, vocab] log-probabilities."""
    truth, logprobs = truth.double(), logprobs.double()  # float32 sums of near-equal terms go below 0
    kl = (truth.exp() * (truth - logprobs)).sum(-1)
    changed = int((truth.argmax(-1) != logprobs.argmax(-1)).sum())
    return Divergence(float(statistics.fmean(kl.tolist())), changed, truth.shape[0])
