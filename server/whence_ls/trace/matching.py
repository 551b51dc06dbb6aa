"""Fingerprint matching: query fingerprints -> per-source regions with line spans on both
sides and the share of the query they cover."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# At most this many source files are examined per stream (those sharing the most query
# fingerprints); the rest could not outrank them anyway.
MAX_FILES_PER_STREAM = 24


@dataclass
class StreamIndex:
    hashes: np.ndarray  # uint64, sorted
    rows: np.ndarray  # int32 [n, 4]: file, position, start line, end line
    common: np.ndarray  # uint64, sorted: fingerprints that attribute nothing
    k: int


@dataclass
class QueryPrints:
    hashes: np.ndarray
    positions: np.ndarray
    start_lines: np.ndarray
    end_lines: np.ndarray
    length: int  # normalised characters


@dataclass
class Region:
    """Where one source file matches the query in one stream."""

    file_id: int
    source_start_line: int
    source_end_line: int
    query_start_line: int
    query_end_line: int
    matched_fraction: float  # of the query's attributable (non-common) normalised text
    matched_chars: int


def _coverage(positions: np.ndarray, k: int, length: int) -> np.ndarray:
    """Boolean mask of the normalised characters covered by k-grams starting at `positions`."""
    marks = np.zeros(length + 1, dtype=np.int32)
    np.add.at(marks, positions, 1)
    np.add.at(marks, np.minimum(positions + k, length), -1)
    return np.cumsum(marks[:-1]) > 0


def match_stream(query: QueryPrints, index: StreamIndex) -> list[Region]:
    if query.hashes.size == 0 or index.hashes.size == 0:
        return []
    attributable = ~np.isin(query.hashes, index.common)
    if not attributable.any():
        return []  # nothing but common patterns: boilerplate attributes nothing
    attributable_mask = _coverage(query.positions[attributable], index.k, query.length)
    attributable_chars = int(attributable_mask.sum())

    lo = np.searchsorted(index.hashes, query.hashes, side="left")
    hi = np.searchsorted(index.hashes, query.hashes, side="right")
    counts = hi - lo
    total = int(counts.sum())
    if total == 0:
        return []
    starts = np.repeat(lo - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
    row_index = starts + np.arange(total)
    query_index = np.repeat(np.arange(query.hashes.size), counts)
    rows = index.rows[row_index]
    files = rows[:, 0]

    # the files sharing the most distinct query fingerprints
    pairs = np.unique(np.stack([files.astype(np.int64), query_index]), axis=1)
    candidate_files, shared = np.unique(pairs[0], return_counts=True)
    best = candidate_files[np.argsort(-shared, kind="stable")[:MAX_FILES_PER_STREAM]]

    regions = []
    gap_limit = max(2 * query.length, 200)
    for file_id in best:
        in_file = np.flatnonzero(files == file_id)
        order = in_file[np.argsort(rows[in_file, 1], kind="stable")]
        source_positions = rows[order, 1]
        # a copy sits in one place: split the file's matches where they are far apart
        breaks = np.flatnonzero(np.diff(source_positions) > gap_limit) + 1
        file_regions: list[Region] = []
        for cluster in np.split(order, breaks):
            file_regions += _bands(cluster, rows, query, query_index, index.k,
                                   attributable_mask, attributable_chars, int(file_id))
        if file_regions:
            # the same text can sit twice in a file (sibling methods): keep every place that
            # matches about as well as the best one, and let the ranking order them
            strongest = max(r.matched_chars for r in file_regions)
            regions += [r for r in file_regions if r.matched_chars >= 0.8 * strongest]
    return regions


def _bands(cluster, rows, query, query_index, k, attributable_mask, attributable_chars,
           file_id, most: int = 8) -> list[Region]:
    """Regions of one cluster of matches, densest first.

    A copy keeps its matches near one diagonal (source position - query position), shifted
    only by the edits made to it; matches on other diagonals are look-alike code nearby
    (sibling methods, repeated idioms), and form regions of their own.
    """
    diagonal = rows[cluster, 1] - query.positions[query_index[cluster]]
    by_diagonal = np.argsort(diagonal, kind="stable")
    remaining, diagonal = cluster[by_diagonal], diagonal[by_diagonal]
    band = 0.3 * query.length + 40
    found = []
    while remaining.size and len(found) < most:
        band_end = np.searchsorted(diagonal, diagonal + band, side="right")
        first = int(np.argmax(band_end - np.arange(diagonal.size)))
        members = remaining[first:band_end[first]]
        matched_q = query_index[members]
        covered = _coverage(query.positions[matched_q], k, query.length) & attributable_mask
        matched_chars = int(covered.sum())
        if matched_chars:
            found.append(Region(
                file_id=file_id,
                source_start_line=int(rows[members, 2].min()),
                source_end_line=int(rows[members, 3].max()),
                query_start_line=int(query.start_lines[matched_q].min()),
                query_end_line=int(query.end_lines[matched_q].max()),
                matched_fraction=matched_chars / attributable_chars,
                matched_chars=matched_chars,
            ))
        keep = np.ones(remaining.size, dtype=bool)
        keep[first:band_end[first]] = False
        remaining, diagonal = remaining[keep], diagonal[keep]
    return found
