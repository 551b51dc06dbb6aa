"""Fingerprints of a text in both normalised streams, with where each one sits."""

from __future__ import annotations

import numpy as np

from whence_ls.trace.tokens import TokenStream, normalise
from whence_ls.trace.winnow import WinnowParams, winnow

# Winnowing parameters per stream, chosen with `whence-ls bench trace` (docs/bench-trace.md):
# exact: any shared run of 40 normalised characters is found, none shorter than 20 is seen.
# renamed: the stream is less specific (every name is `v`), so its k-grams are longer.
STREAM_PARAMS = {
    "exact": WinnowParams(k=20, w=21),
    "renamed": WinnowParams(k=20, w=21),
}
STREAMS = tuple(STREAM_PARAMS)


def stream_fingerprints(stream: TokenStream, params: WinnowParams) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, rows) where rows are int32 [file (0 here), position, start line, end line]."""
    prints = winnow(stream.text, params)
    rows = np.zeros((prints.hashes.size, 4), dtype=np.int32)
    if prints.hashes.size:
        rows[:, 1] = prints.positions
        rows[:, 2] = stream.lines[prints.positions]
        rows[:, 3] = stream.lines[prints.positions + params.k - 1]
    return prints.hashes, rows


def file_fingerprints(text: str, language: str | None, first_line: int = 1) -> dict:
    normalised = normalise(text, language, first_line)
    return {
        "exact": stream_fingerprints(normalised.exact, STREAM_PARAMS["exact"]),
        "renamed": stream_fingerprints(normalised.renamed, STREAM_PARAMS["renamed"]),
    }
