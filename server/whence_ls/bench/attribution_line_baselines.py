"""The trivial rankings `whence-ls bench attribution` puts beside every method (recency, lexical
overlap, random), and which sources hold an earlier occurrence of a generated identifier (the
copy cases)."""

from __future__ import annotations

import numpy as np


def copy_sources(record, index: int, units, sources: list[int]) -> set[int]:
    """Columns of `sources` holding an earlier occurrence of the identifier this token is part of."""
    from whence_ls.engine.attribution.stacked_attention import word_at
    from whence_ls.engine.attribution.units import COMMON_WORDS

    token = record.tokens[index]
    word = word_at(record.text, token.start, token.end)
    if len(word) < 2 or word in COMMON_WORDS or word.isdigit():
        return set()
    return {c for c, s in enumerate(sources) if any(i.text == word for i in units.units[s].identifiers)}


def baseline_scores(name: str, record, units, sources: list[int], indices: list[int], *, seed: int) -> np.ndarray:
    count = len(sources)
    if name == "recency":
        row = np.array([(c + 1) / count for c in range(count)])  # later source, higher score
        return np.tile(row, (len(indices), 1))
    if name == "random":
        generator = np.random.default_rng(seed)
        return generator.random((len(indices), count))
    # lexical overlap: identifiers the source shares with the generated line of the token (and
    # the context line it continues), ties to the nearer source
    rows = []
    line_start_of = record.text.rfind
    context_tail = record.context.text[record.context.text.rfind("\n") + 1 :]
    for index in indices:
        token = record.tokens[index]
        start = line_start_of("\n", 0, token.start) + 1
        end = record.text.find("\n", token.end)
        line = (context_tail if start == 0 else "") + record.text[start : len(record.text) if end == -1 else end]
        words = {w for w in _identifiers(line)}
        rows.append([len(words & {i.text for i in units.units[s].identifiers}) + 1e-3 * (c + 1) / count
                     for c, s in enumerate(sources)])
    return np.array(rows)


def _identifiers(text: str) -> list[str]:
    import re

    from whence_ls.engine.attribution.stacked_attention import word_at
    from whence_ls.engine.attribution.units import COMMON_WORDS

    return [w for w in re.findall(r"[^\W\d]\w*", text) if w not in COMMON_WORDS]
