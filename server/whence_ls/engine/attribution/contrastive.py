"""Contrastive input x gradient: the gradient of logit(token) - logit(runner-up), dotted with
the embedding. It answers "why this token and not the runner-up" (Yin & Neubig 2022), so its
rows are about the choice, not about the token's probability as a whole.
"""

from __future__ import annotations

from whence_ls.engine.attribution.input_x_gradient import InputXGradient


class Contrastive(InputXGradient):
    name = "contrastive"
    rank_by_abs = True
    objective = "margin"
