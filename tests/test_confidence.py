"""Confidence flags: one per completion line at most, never on whitespace or punctuation alone,
and a token whose runner-up is the same text with other spacing is not doubtful."""

from __future__ import annotations

import math

from whence_ls.engine.confidence import flag_score, flagged_tokens, instead
from whence_ls.engine.records import Alternative, ContextWindow, ScoredText, ScoredToken


def _token(i: int, text: str, p: float, alternatives: list[tuple[str, float]]) -> ScoredToken:
    alts = [Alternative(text, math.log(p), i)] + [Alternative(t, math.log(q), 1000 + k) for k, (t, q) in enumerate(alternatives)]
    return ScoredToken(i, text, 0, len(text), math.log(p), 1.0, sorted(alts, key=lambda a: -a.logprob))


def _record(tokens: list[ScoredToken]) -> ScoredText:
    context = ContextWindow("x = 1\n", 0, [1], [(0, 5)], False)
    return ScoredText("completion", "".join(t.text for t in tokens), 6, tokens, context, "tiny", "cpu")


def test_split_spelling_is_not_doubt_and_alternatives_read_differently():
    token = _token(0, " size", 0.3, [("size", 0.5), (" len", 0.1)])
    record = _record([token])
    assert abs(flag_score(record, 0) - 0.2) < 1e-9  # 1 - 0.3 - 0.5: only " len" (and the rest) is other text
    assert instead(record, 0) == " len"


def test_at_most_one_flag_per_line_on_readable_tokens():
    tokens = [
        _token(0, "total", 0.2, [("count", 0.3)]),
        _token(1, " =", 0.1, [(" +=", 0.5)]),  # punctuation alone: never flagged
        _token(2, " compute", 0.1, [(" sum", 0.2)]),  # the line's least sure readable token
        _token(3, "(", 0.05, [("[", 0.5)]),
        _token(4, "\n    return", 0.9, [("\n    yield", 0.05)]),  # sure: no flag on the second line
        _token(5, " total", 0.3, [(" count", 0.2)]),
        _token(6, "\nprint", 0.1, [("\nlog", 0.3)]),
    ]
    record = _record(tokens)
    flagged = flagged_tokens(record)
    assert flagged == [2, 5, 6]
    assert flagged_tokens(record, skip={2}) == [0, 5, 6]
    assert flagged_tokens(record, threshold=0.75) == [2, 6]
