"""One calibrated score for a candidate source, from all the evidence for it.

The score is a logistic model over the matching features; its coefficients are fitted by
`whence-ls bench trace --fit` on labelled queries (true source or not, negatives from code
outside the corpus), so a score reads as the estimated probability that the query was taken
from that source. Nothing below SHOW_THRESHOLD is shown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SHOW_THRESHOLD = 0.1

# Fitted by `whence-ls bench trace --fit` (docs/bench-trace.md); order as in `features()`.
COEFFICIENTS = (-3.747, 4.973, -3.433, -0.144, -0.201, -2.090, 3.033, 8.799, 0.483, 2.443)
# Embedding-only candidates (no shared fingerprint): bias and cosine slope. On the benchmark
# no kind of copy needs this channel (the fitted slope comes out negative: every copy shares
# fingerprints), so it is anchored on the null distribution instead: the top embedding-only
# cosine of code from outside the corpus was at most 0.86 (p99 0.85), so a hit is shown
# (score 0.1) from cosine 0.92 up and reaches 0.5 at 1.0. `bench trace --fit` prints both.
SIMILAR_SHOWN_FROM = 0.92
SIMILAR_COEFFICIENTS = (-27.46, 27.46)
FEATURE_NAMES = ("bias", "exact_fraction", "renamed_fraction", "log_exact_chars",
                 "log_renamed_chars", "cosine", "exact_fraction_x_length",
                 "renamed_fraction_x_length", "exact_fraction^4", "renamed_fraction^4")
# a match of this many normalised characters counts as fully long (for the interactions)
_LONG_MATCH = math.log1p(300)


@dataclass
class Evidence:
    exact_fraction: float = 0.0
    exact_chars: int = 0
    renamed_fraction: float = 0.0
    renamed_chars: int = 0
    cosine: float = 0.0

    def features(self) -> tuple[float, ...]:
        # a high fraction is strong evidence only when much text was matched: the products
        # let the linear model say so
        exact_length = min(math.log1p(self.exact_chars) / _LONG_MATCH, 1.0)
        renamed_length = min(math.log1p(self.renamed_chars) / _LONG_MATCH, 1.0)
        return (1.0, self.exact_fraction, self.renamed_fraction,
                math.log1p(self.exact_chars), math.log1p(self.renamed_chars), self.cosine,
                self.exact_fraction * exact_length, self.renamed_fraction * renamed_length,
                # near-complete matches are what copies look like; partial ones, coincidence
                self.exact_fraction ** 4, self.renamed_fraction ** 4)

    def has_fingerprints(self) -> bool:
        return self.exact_chars > 0 or self.renamed_chars > 0

    def kind(self) -> str:
        if self.exact_fraction >= 0.5:
            return "verbatim"
        if self.renamed_fraction >= 0.5:
            return "renamed"
        return "similar"

    def matched_fraction(self) -> float:
        kind = self.kind()
        if kind == "verbatim":
            return self.exact_fraction
        if kind == "renamed":
            return self.renamed_fraction
        return max(self.exact_fraction, self.renamed_fraction)


def calibrated_score(evidence: Evidence, coefficients=None, similar_coefficients=None) -> float:
    """Fingerprint evidence and embedding-only evidence are calibrated separately: with a
    fingerprint match the cosine adds little, without one it is all there is."""
    if evidence.has_fingerprints():
        weights = COEFFICIENTS if coefficients is None else coefficients
        z = sum(c * f for c, f in zip(weights, evidence.features()))
    else:
        bias, slope = SIMILAR_COEFFICIENTS if similar_coefficients is None else similar_coefficients
        z = bias + slope * evidence.cosine
    return 1.0 / (1.0 + math.exp(-max(min(z, 40.0), -40.0)))
