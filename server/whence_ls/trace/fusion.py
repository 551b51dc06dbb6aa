"""Fuse the evidence for each candidate source: fingerprint regions from both streams and
vector neighbours become one candidate per place, each with its `Evidence`."""

from __future__ import annotations

from typing import Callable

from whence_ls.trace.hit import TraceHit
from whence_ls.trace.matching import Region
from whence_ls.trace.scoring import Evidence, calibrated_score

MakeHit = Callable[[int, int, int, int, int], TraceHit]


def _overlaps(hit: TraceHit, file_id: int, start: int, end: int) -> bool:
    return hit.file_id == file_id and start <= hit.source_end_line and hit.source_start_line <= end


class CandidateSet:
    def __init__(self, make_hit: MakeHit):
        self._make_hit = make_hit
        self.pairs: list[tuple[TraceHit, Evidence]] = []

    def _new(self, file_id, start, end, q_start, q_end) -> Evidence:
        evidence = Evidence()
        self.pairs.append((self._make_hit(file_id, start, end, q_start, q_end), evidence))
        return evidence

    def _find(self, file_id, start, end) -> tuple[TraceHit, Evidence] | None:
        return next((pair for pair in self.pairs if _overlaps(pair[0], file_id, start, end)), None)

    def add_exact(self, region: Region) -> None:
        # each exact region is its own place (a file can hold the same text twice)
        evidence = self._new(region.file_id, region.source_start_line, region.source_end_line,
                             region.query_start_line, region.query_end_line)
        evidence.exact_fraction = region.matched_fraction
        evidence.exact_chars = region.matched_chars

    def add_renamed(self, region: Region) -> None:
        """The renamed stream's view of a place: joins the exact region it overlaps, whose
        spans then cover both."""
        found = self._find(region.file_id, region.source_start_line, region.source_end_line)
        if found is None:
            evidence = self._new(region.file_id, region.source_start_line, region.source_end_line,
                                 region.query_start_line, region.query_end_line)
        else:
            hit, evidence = found
            hit.source_start_line = min(hit.source_start_line, region.source_start_line)
            hit.source_end_line = max(hit.source_end_line, region.source_end_line)
            hit.query_start_line = min(hit.query_start_line, region.query_start_line)
            hit.query_end_line = max(hit.query_end_line, region.query_end_line)
        evidence.renamed_fraction = max(evidence.renamed_fraction, region.matched_fraction)
        evidence.renamed_chars = max(evidence.renamed_chars, region.matched_chars)

    def add_neighbour(self, file_id: int, start: int, end: int, query_lines: tuple[int, int],
                      cosine: float) -> None:
        """A chunk near the query in embedding space: its cosine joins the place it overlaps."""
        found = self._find(file_id, start, end)
        evidence = found[1] if found is not None else self._new(file_id, start, end, *query_lines)
        evidence.cosine = max(evidence.cosine, cosine)

    def verify(self, query_chars: int, query_lines: tuple[int, int], locate, most: int) -> None:
        """Check the strongest fingerprint candidates against their source text: where the
        whole normalised query occurs, the copy is certain and its span exact (fingerprints
        alone cannot tell apart places that share all of the query's fingerprinted text)."""
        with_prints = sorted((pair for pair in self.pairs if pair[1].exact_chars > 0),
                             key=lambda pair: -pair[1].exact_chars)[:most]
        for hit, evidence in with_prints:
            span = locate(hit)
            if span is None:
                continue
            hit.source_start_line, hit.source_end_line = span
            hit.query_start_line, hit.query_end_line = query_lines
            evidence.exact_fraction = 1.0
            evidence.exact_chars = max(evidence.exact_chars, query_chars)

    def ranked(self, cosine_near: Callable[[TraceHit], float]) -> list[tuple[TraceHit, Evidence]]:
        """Score every candidate and rank them; a place overlapping a better one is dropped."""
        for hit, evidence in self.pairs:
            if evidence.cosine == 0.0:
                evidence.cosine = cosine_near(hit)
            hit.kind = evidence.kind()
            hit.matched_fraction = evidence.matched_fraction()
            hit.score = calibrated_score(evidence)
        kept: list[tuple[TraceHit, Evidence]] = []
        for hit, evidence in sorted(self.pairs, key=lambda pair: -pair[0].score):
            if not any(_overlaps(other, hit.file_id, hit.source_start_line, hit.source_end_line)
                       for other, _ in kept):
                kept.append((hit, evidence))
        return kept
