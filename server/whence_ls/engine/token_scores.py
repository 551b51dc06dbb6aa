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
    decode time it doubled), against ~0.5 ms every time here."""
    row = logits.detach()
    if row.device.type != "cpu" or row.dtype != torch.float32:
        row = row.to("cpu", torch.float32)
    values = row.numpy().astype(np.float64)
    shifted = values - values.max()
    exp = np.exp(shifted)
    total = exp.sum()
    logp = shifted - np.log(total)
    entropy = float(-(exp * logp).sum() / total)
    k = min(k, logp.shape[0])
    top = np.argpartition(-logp, k - 1)[:k] if k < logp.shape[0] else np.arange(logp.shape[0])
    top = top[np.lexsort((top, -logp[top]))]  # best first; a tie goes to the lower id
    best = int(np.argmax(logp))  # the first of equal maxima, as greedy decoding picks it
    if top[0] != best:  # a tie at the top that the partition cut the lower id out of
        top = np.concatenate(([best], top[top != best]))[:k]
    return torch.from_numpy(logp[top].astype(np.float32)), torch.from_numpy(top.astype(np.int64)), torch.tensor(entropy)


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
