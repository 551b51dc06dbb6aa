"""The one order of an attribution row's sources, torch-free so every view (hover, tint, the
matrix, the CLI) can import it without the model: strongest first, by size (|score|) for
magnitude methods or by signed score for signed ones, ties in document order.

    ranking([0.1, -0.5, 0.3], by_size=True)            # [1, 2, 0]
    top_sources([0.1, -0.5, 0.3], by_size=False, k=2)  # [(2, 0.3), (0, 0.1)]
    strongest_sources([0.1, -0.5, 0.3], by_size=False) # [(2, 0.3), (0, 0.1)]: supporters only
"""

from __future__ import annotations

from typing import Sequence


def ranking(scores: Sequence[float], by_size: bool) -> list[int]:
    """Every source index, strongest first (ties keep document order)."""
    if by_size:
        return sorted(range(len(scores)), key=lambda u: -abs(scores[u]))
    return sorted(range(len(scores)), key=lambda u: -scores[u])


def top_sources(scores: Sequence[float], by_size: bool, k: int | None = None) -> list[tuple[int, float]]:
    """The k strongest sources as (index, signed score), strongest first; a zero is never a
    source. `k=None`: all of them."""
    order = [u for u in ranking(scores, by_size) if scores[u] != 0.0]
    return [(u, scores[u]) for u in (order if k is None else order[:k])]


def strongest_sources(scores: Sequence[float], by_size: bool, limit: int | None = None) -> list[tuple[int, float]]:
    """The sources a view shows, strongest first (`top_sources`), and for a signed method only
    those that supported the token: a source that argued against it is not what drove it. The
    hover, the tint and the matrix agree because all of them read this."""
    return [(u, score) for u, score in top_sources(scores, by_size, limit) if score > 0 or by_size]
