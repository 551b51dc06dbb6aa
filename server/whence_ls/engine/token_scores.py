"""Every generated token's scores from the logits its step computed anyway: log-probability,
entropy and the top-k alternatives."""

from __future__ import annotations

import numpy as np
import torch

from whence_ls.engine.records import Alternative, ScoredToken


def token_row(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top-k log-probabilities (best first; equal ones by lower token id, as argmax picks),
    their token ids, and the entropy, of one step's logits.

    In numpy, on the calling thread: a row is a vocabulary's worth of numbers (49k), over torch's
    grain size for its thread pool, and on a busy machine each pooled op waited for a descheduled
    thread: up to 26 ms a token for log_softmax, exp and sum after an onnxruntime forward (whose
    decode time it doubled). The exponentials are float32 with float64 sums, no BLAS call, and
    the top k come from the few logits near the maximum (`_top_ids`), not a partition of the
    whole row (`argpartition` of 49k values took ~0.4 ms)."""
    row = logits.detach()
    if row.device.type != "cpu" or row.dtype != torch.float32:
        row = row.to("cpu", torch.float32)
    values = row.numpy()
    top_value = float(values.max())
    shifted = values - np.float32(top_value)
    exp = np.exp(shifted)
    total = float(exp.sum(dtype=np.float64))
    log_total = float(np.log(total))
    # entropy = log Z - sum(p * shifted), with p = exp / Z; a masked logit (-inf) adds nothing.
    # Not np.dot: BLAS's dot goes to its own thread pool, which on a busy machine took 0.5 ms
    weighted = exp * np.maximum(shifted, np.float32(-1e30))
    entropy = log_total - float(weighted.sum(dtype=np.float64)) / total
    top = _top_ids(values, min(k, values.shape[0]), top_value)
    logp = values[top].astype(np.float64) - top_value - log_total
    return torch.from_numpy(logp.astype(np.float32)), torch.from_numpy(top.astype(np.int64)), torch.tensor(entropy)


def _top_ids(values: np.ndarray, k: int, top_value: float) -> np.ndarray:
    """The ids of the k largest values, best first, a tie to the lower id: sorted from those
    within a gap of the maximum that holds at least k of them (a few dozen comparisons' worth of
    the row, where `argpartition` of 49k values took ~0.4 ms). `top_value`: their maximum."""
    gap = 1.0
    while True:
        threshold = top_value - gap
        if not threshold > -3e38:  # past float32's range: every id (masked ones at -inf too)
            candidates = np.arange(values.shape[0])
            break
        candidates = np.flatnonzero(values >= np.float32(threshold))
        if len(candidates) >= k:
            break
        gap *= 2.0
    if len(candidates) > 64 * k:  # a flat row: only those at least as large as the k-th
        kth = np.partition(values[candidates], len(candidates) - k)[len(candidates) - k]
        candidates = candidates[values[candidates] >= kth]
    order = np.lexsort((candidates, -values[candidates]))[:k]
    return candidates[order]


def top_alternatives(tokenizer, values: torch.Tensor, indices: torch.Tensor) -> list[Alternative]:
    """The top-k of one next-token distribution as `Alternative`s, best first."""
    return [
        Alternative(text=tokenizer.decode([int(i)], clean_up_tokenization_spaces=False), logprob=float(v), token_id=int(i))
        for v, i in zip(values.tolist(), indices.tolist())
    ]


def scored_tokens(tokenizer, ids, texts, rows, cut: int) -> list[ScoredToken]:
    tokens: list[ScoredToken] = []
    position = 0
    for token_id, text, (logprob, values, indices, entropy) in zip(ids, texts, rows):
        if position >= cut:
            break  # tokens with no visible text before the cut (healing, split UTF-8) are kept
        kept = text[: max(0, cut - position)]
        alternatives = top_alternatives(tokenizer, values, indices)
        tokens.append(
            ScoredToken(
                token_id=token_id,
                text=kept,
                start=position,
                end=position + len(kept),
                logprob=logprob,
                entropy=float(entropy),
                alternatives=alternatives,
            )
        )
        position += len(kept)
    return tokens
