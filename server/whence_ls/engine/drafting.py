"""Prompt-lookup drafts: the tokens that followed the last occurrence of the newest n-gram.

Code repeats its own context (names, call patterns, whole lines), so the tokens that followed
the same few tokens earlier are a good guess at what comes next. `generate` feeds such a draft
after the token it just chose and checks every draft token against the model's own greedy
choice from the same forward: the output, and every token's scores, are those of plain
greedy decoding; only the number of forwards changes. (The idea is prompt lookup decoding,
Saxena 2023; transformers has it as `prompt_lookup_num_tokens`, but not with our per-token
scores, prefix cache, healing and cancel, so the few lines are ours.)
"""

from __future__ import annotations

# the longest n-gram looked up first; shorter ones only when it has no earlier occurrence
MAX_NGRAM = 3
MIN_NGRAM = 2


class NgramDrafter:
    def __init__(self, ids: list[int]) -> None:
        self.history: list[int] = []
        # n-gram -> the position just after its latest occurrence (before the newest tokens)
        self._after: dict[tuple[int, ...], int] = {}
        for token in ids:
            self.push(token)

    def push(self, token: int) -> None:
        history = self.history
        # index the n-grams that end at the previous token: they now have a follower
        for n in range(MIN_NGRAM, MAX_NGRAM + 1):
            if len(history) >= n:
                self._after[tuple(history[-n:])] = len(history)
        history.append(token)

    def propose(self, limit: int) -> list[int]:
        """Up to `limit` tokens that followed the newest n-gram the last time it occurred."""
        if limit <= 0:
            return []
        history = self.history
        for n in range(MAX_NGRAM, MIN_NGRAM - 1, -1):
            if len(history) <= n:
                continue
            start = self._after.get(tuple(history[-n:]))
            if start is not None and start < len(history):
                return history[start : start + limit]
        return []
