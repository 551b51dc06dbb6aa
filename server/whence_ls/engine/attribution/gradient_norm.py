"""Gradient norm: |d log p(token) / d embedding| per position (magnitude only, no sign).

Same cost as input x gradient (same graph, same backwards); the first probe found it among the
most faithful beyond the last few tokens, so the benchmark keeps measuring it.
"""

from __future__ import annotations

from whence_ls.engine.attribution.input_x_gradient import InputXGradient


class GradientNorm(InputXGradient):
    name = "gradient_norm"
    rank_by_abs = True
    score_kind = "gradient_norm"
