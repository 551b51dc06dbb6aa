"""Every generated token's scores from the logits its step computed anyway: log-probability,
entropy and the top-k alternatives."""

from __future__ import annotations

import torch

from whence_ls.engine.records import Alternative, ScoredToken


def token_row(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logp = torch.log_softmax(logits.float(), dim=-1)
    entropy = -(logp.exp() * logp).sum()
    top = torch.topk(logp, k)
    return top.values, top.indices, entropy


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
