"""Winnowing (Schleimer, Wilkerson and Aiken, 2003) over a normalised character stream.

Every k-gram of the stream is hashed; in each window of `w` consecutive hashes the smallest is
kept (the rightmost one on ties). Two texts that share a run of at least `w + k - 1` normalised
characters are then guaranteed to share a fingerprint, and no match shorter than `k` is ever
seen, which is what lets the index promise 100% recall on copied spans of a known length while
ignoring tiny coincidences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_BASE = np.uint64(1_000_003)
_MIX = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class WinnowParams:
    k: int  # k-gram length in normalised characters: shorter matches are never reported
    w: int  # window length in k-grams: matches of w + k - 1 characters are always found

    @property
    def guaranteed_length(self) -> int:
        return self.w + self.k - 1


@dataclass
class Fingerprints:
    hashes: np.ndarray  # uint64
    positions: np.ndarray  # int64, start of the k-gram in the normalised stream


def kgram_hashes(text: str, k: int) -> np.ndarray:
    """Polynomial hash of every k-gram (mod 2**64), then mixed so that minima are spread."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    count = codes.size - k + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    acc = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):
            acc = acc * _BASE + codes[j : j + count]
        acc ^= acc >> np.uint64(29)
        acc *= _MIX
        acc ^= acc >> np.uint64(32)
    return acc


def winnow(text: str, params: WinnowParams) -> Fingerprints:
    hashes = kgram_hashes(text, params.k)
    if hashes.size == 0:
        return Fingerprints(np.empty(0, np.uint64), np.empty(0, np.int64))
    if hashes.size <= params.w:
        # shorter than one window: the whole text is one window
        windows = hashes[None, :]
    else:
        windows = np.lib.stride_tricks.sliding_window_view(hashes, params.w)
    width = windows.shape[1]
    rightmost_min = width - 1 - np.argmin(windows[:, ::-1], axis=1)
    positions = np.unique(np.arange(windows.shape[0]) + rightmost_min)
    return Fingerprints(hashes=hashes[positions], positions=positions.astype(np.int64))
