"""One calibrated score for a candidate source, from all the evidence for it.

The score is a logistic model over the matching features; its coefficients are fitted by
`whence-ls bench trace --fit` on labelled queries (true source or not, negatives from code
outside the corpus), so a score reads as the estimated probability that the query was taken
from that source. Nothing below SHOW_THRESHOLD is shown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SHOW_THRESHOLD = 0.5

# Fitted by `whence-ls bench trace --fit` (docs/bench-trace.md); order as in `features()`.
COEFFICIENTS = (-9.0, 7.0, 3.0, 0.8, 0.0, 6.0)
FEATURE_NAMES = ("bias", "exact_fraction", "renamed_fraction", "log_exact_chars",
                 "log_renamed_chars", "cosine")


@dataclass
class Evidence:
    exact_fraction: float = 0.0
    exact_chars: int = 0
    renamed_fraction: float = 0.0
    renamed_chars: int = 0
    cosine: float = 0.0

    def features(self) -> tuple[float, ...]:
        return (1.0, self.exact_fraction, self.renamed_fraction,
                math.log1p(self.exact_chars), math.log1p(self.renamed_chars), self.cosine)

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


def calibrated_score(evidence: Evidence, coefficients=COEFFICIENTS) -> float:
    z = sum(c * f for c, f in zip(coefficients, evidence.features()))
    return 1.0 / (1.0 + math.exp(-max(min(z, 40.0), -40.0)))
