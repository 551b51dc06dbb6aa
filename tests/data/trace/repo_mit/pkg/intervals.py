"""Interval arithmetic helpers (a fixture for the trace index tests)."""

import bisect

DEFAULT_TOLERANCE = 1e-9


def merge_intervals(intervals):
    """Merge overlapping closed intervals and return them sorted."""
    ordered = sorted(intervals, key=lambda pair: pair[0])
    merged = []
    for start, end in ordered:
        if merged and start <= merged[-1][1]:
            last_start, last_end = merged[-1]
            merged[-1] = (last_start, max(last_end, end))
        else:
            merged.append((start, end))
    return merged


def find_containing(boundaries, value):
    """Index of the interval of sorted `boundaries` that holds `value`, or -1."""
    position = bisect.bisect_right(boundaries, value) - 1
    if position < 0 or position >= len(boundaries) - 1:
        return -1
    return position


class IntervalSet:
    """A set of disjoint intervals with membership tests."""

    def __init__(self, intervals=()):
        self._intervals = merge_intervals(list(intervals))

    def add(self, start, end):
        self._intervals = merge_intervals(self._intervals + [(start, end)])

    def __contains__(self, value):
        for start, end in self._intervals:
            if start - DEFAULT_TOLERANCE <= value <= end + DEFAULT_TOLERANCE:
                return True
        return False

    def total_length(self):
        return sum(end - start for start, end in self._intervals)
