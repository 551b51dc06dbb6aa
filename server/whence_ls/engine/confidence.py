"""Which generated tokens are worth a "low confidence" flag.

Raw probability over-flags: a token whose runner-up is the same word with another spacing
(` size` vs `size`) or another case of one literal is not doubtful, only split. The flag score
is the chance the model gives to *different* text: one minus the probability of every top
alternative that reads the same once whitespace is ignored. `whence-ls bench quality` measures
it against raw improbability (AUROC for "this token differs from the file").

A flag is only raised on a token with a letter or digit in it (whitespace and punctuation alone
tell a reader nothing), at most one per completion line: its least sure token.
"""

from __future__ import annotations

import math

from whence_ls.engine.records import ScoredText

# a flag means: the model put at least this much probability on writing something else here
FLAG_THRESHOLD = 0.6


def flag_score(record: ScoredText, index: int) -> float:
    token = record.tokens[index]
    same = token.text.strip()
    alike = sum(math.exp(a.logprob) for a in token.alternatives if a.token_id != token.token_id and a.text.strip() == same)
    return max(0.0, 1.0 - token.prob - alike)


def readable(text: str) -> bool:
    return any(c.isalnum() for c in text)


def flagged_tokens(record: ScoredText, skip: set[int] | None = None, threshold: float = FLAG_THRESHOLD,
                   score=flag_score) -> list[int]:
    """The token to flag on each completion line (at most one), in order: the line's highest
    flag score, when it is at least `threshold`, among readable tokens not in `skip`. `score`
    (record, index) -> float may be another score (a workspace's calibrated chance of a rewrite)."""
    best: dict[int, tuple[float, int]] = {}
    line = 0
    for index, token in enumerate(record.tokens):
        visible = len(token.text) - len(token.text.lstrip())
        here = line + token.text[:visible].count("\n")  # the line of its first visible character
        if index not in (skip or ()) and readable(token.text):
            value = score(record, index)
            if value >= threshold and value > best.get(here, (-1.0, -1))[0]:
                best[here] = (value, index)
        line += token.text.count("\n")
    return [index for _, (_, index) in sorted(best.items())]


def instead(record: ScoredText, index: int) -> str | None:
    """What the model would have written instead: its best alternative that reads differently."""
    token = record.tokens[index]
    same = token.text.strip()
    for alternative in token.alternatives:
        if alternative.token_id != token.token_id and alternative.text.strip() != same:
            return alternative.text
    return None
