"""How fast this machine prefills context right now, so that a completion can bound the part of
its prompt that no cache holds.

A prefill on a CPU is compute-bound: ~0.6 ms a token for the embedded model on 2 idle cores, and
twice that with one core taken by a browser or a build (`whence-ls bench lsp --busy-cores`).
A jump to a part of a file the prefix cache does not hold would wait for the whole window (1-2 s
for 1024 tokens on a busy machine) before its first token; with the rate at hand, the window is
cut to what fits the time allowed, and the full window is warmed for the next request.

The rate is the latest prefills' seconds per token, weighted towards the newest: the load on a
user's machine changes within seconds, so an old average would be wrong both ways."""

from __future__ import annotations

# prefills shorter than this say more about per-forward overhead than about the rate (a
# completion's first forward also reads its live rows: ~100 ms on a busy machine, which made a
# 57-token prefill in the real editor read as 7.7 ms a token against ~2.5 for a long one)
MIN_TOKENS = 96
# the newest measurement's weight against what was known before
NEWEST_WEIGHT = 0.5


class PrefillRate:
    def __init__(self) -> None:
        self.seconds_per_token: float | None = None  # None: no prefill measured yet

    def observe(self, tokens: int, seconds: float) -> None:
        """A prefill of `tokens` new tokens took `seconds` (a chunk of one counts too)."""
        if tokens < MIN_TOKENS or seconds <= 0:
            return
        newest = seconds / tokens
        known = self.seconds_per_token
        self.seconds_per_token = newest if known is None else NEWEST_WEIGHT * newest + (1 - NEWEST_WEIGHT) * known

    def tokens_within(self, seconds: float) -> int | None:
        """How many new tokens a prefill can run in `seconds` now; None before any was measured."""
        if self.seconds_per_token is None:
            return None
        return max(0, int(seconds / self.seconds_per_token))
