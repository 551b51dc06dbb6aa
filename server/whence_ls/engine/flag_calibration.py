"""Flags that learn from one workspace: the chance a token gets rewritten, fitted on what the
programmer did to earlier completions here.

The global flag (`confidence.py`) is the model's probability on different text, one threshold
for everyone. A workspace has its habits (a naming scheme the model misses, literals it always
gets wrong), and after enough accepted completions the tokens the person rewrote say which
tokens to doubt here. The calibration is a small logistic model over a token's flag score (on
the logit scale), its entropy, its kind (name, keyword, number, string, operator) and whether it
is a completion's first token, pulled towards the global flag (weight 1 on the score's logit,
nothing else) by a ridge penalty, so a few edits move it little.

"Tokens like this" in a diagnostic are the workspace's earlier tokens of the same kind whose
flag score fell in the same fifth: counts a person can check, beside the model's estimate.

`whence-ls bench retention` measures whether this beats the global flag on held-out cursors.
"""

from __future__ import annotations

import keyword
import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

KINDS = ("name", "keyword", "number", "string", "operator")
BINS = 5  # "a similar score": the same fifth of 0..1
RIDGE = 2.0  # pull towards the global flag; fitted weights move far only with many edits
EDGE = 1e-3


@dataclass(frozen=True)
class TokenFacts:
    """What the calibration reads of one generated token."""

    kind: str
    flag: float  # the global flag score (`confidence.flag_score`)
    entropy: float
    first: bool  # the completion's first token (healed, often re-produces typed text)


@dataclass
class Example:
    facts: TokenFacts
    edited: bool


def token_kind(text: str) -> str:
    """The kind of a token's visible text, as a person would name it."""
    stripped = text.strip()
    if not stripped:
        return "operator"
    if stripped[0] in "\"'" or stripped[-1] in "\"'" or stripped[:2].lower() in ('f"', "f'", 'b"', "b'", 'r"', "r'"):
        return "string"
    if stripped[0].isdigit():
        return "number"
    if stripped.isidentifier() or stripped.replace(".", "").replace("_", "").isalnum():
        return "keyword" if keyword.iskeyword(stripped) or stripped in ("self", "cls", "None", "True", "False") else "name"
    return "operator"


def facts_of(record, index: int) -> TokenFacts:
    """The facts of token `index` of a ScoredText."""
    from whence_ls.engine.confidence import flag_score

    token = record.tokens[index]
    return TokenFacts(token_kind(token.text), flag_score(record, index), float(token.entropy), index == 0)


def _features(facts: TokenFacts) -> np.ndarray:
    flag = min(1.0 - EDGE, max(EDGE, facts.flag))
    kind = [1.0 if facts.kind == k else 0.0 for k in KINDS[1:]]  # "name" is the base
    return np.array([1.0, math.log(flag / (1.0 - flag)), min(facts.entropy, 8.0) / 4.0, float(facts.first), *kind])


# the global flag on this scale: the score's own logit, nothing more
_PRIOR = np.zeros(4 + len(KINDS) - 1)
_PRIOR[1] = 1.0


def score_bin(flag: float) -> int:
    return min(BINS - 1, max(0, int(flag * BINS)))


@dataclass
class WorkspaceCalibration:
    """A fitted calibration: `edit_chance(facts)` and the counts behind "tokens like this"."""

    weights: np.ndarray = field(default_factory=lambda: _PRIOR.copy())
    edited_tokens: int = 0
    tokens: int = 0
    counts: dict[tuple[str, int], list[int]] = field(default_factory=dict)  # (kind, bin) -> [edited, seen]

    def edit_chance(self, facts: TokenFacts) -> float:
        z = float(_features(facts) @ self.weights)
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def like(self, facts: TokenFacts) -> tuple[int, int, str]:
        """(rewritten, seen, what "like this" meant) among this workspace's tokens: of the same
        kind and score fifth; failing any, of the same score fifth; failing any, of the same kind."""
        fifth = score_bin(facts.flag)
        for key, what in (((facts.kind, fifth), "tokens like this"),
                          (lambda k: k[1] == fifth, "tokens this unsure"),
                          (lambda k: k[0] == facts.kind, KIND_WORDS.get(facts.kind, "tokens of this kind"))):
            cells = [self.counts[key]] if isinstance(key, tuple) and key in self.counts else \
                [v for k, v in self.counts.items() if callable(key) and key(k)]
            seen = sum(c[1] for c in cells)
            if seen:
                return sum(c[0] for c in cells), seen, what
        return 0, 0, ""


KIND_WORDS = {"name": "names", "keyword": "keywords", "number": "numbers", "string": "strings", "operator": "operators"}


def fit(examples: Iterable[Example], ridge: float = RIDGE) -> WorkspaceCalibration:
    """Penalised logistic regression (Newton's method) towards the global flag."""
    examples = list(examples)
    calibration = WorkspaceCalibration(tokens=len(examples), edited_tokens=sum(e.edited for e in examples))
    for example in examples:
        cell = calibration.counts.setdefault((example.facts.kind, score_bin(example.facts.flag)), [0, 0])
        cell[0] += int(example.edited)
        cell[1] += 1
    if not examples:
        return calibration
    x = np.stack([_features(e.facts) for e in examples])
    y = np.array([float(e.edited) for e in examples])
    penalty = ridge * np.eye(len(_PRIOR))

    def loss(w: np.ndarray) -> float:
        z = x @ w
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * (w - _PRIOR) @ penalty @ (w - _PRIOR))

    w = _PRIOR.copy()
    current = loss(w)
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        gradient = x.T @ (p - y) + penalty @ (w - _PRIOR)
        hessian = (x * (p * (1 - p))[:, None]).T @ x + penalty
        step = np.linalg.solve(hessian, gradient)
        # a full Newton step overshoots on separable cells (all of a kind rewritten): halve it
        # until the penalised loss goes down, so the fit never diverges
        scale = 1.0
        while scale > 1e-4 and loss(w - scale * step) > current:
            scale /= 2
        if scale <= 1e-4:
            break
        w = w - scale * step
        previous, current = current, loss(w)
        if previous - current < 1e-9:
            break
    calibration.weights = w
    return calibration


def describe(calibration: WorkspaceCalibration, facts: TokenFacts) -> str:
    """The evidence in words: "tokens like this were rewritten 3 times in 4 here"."""
    edited, seen, what = calibration.like(facts)
    if seen == 0:
        return f"this workspace's edits put its chance of a rewrite at {calibration.edit_chance(facts):.0%}"
    times = "once" if edited == 1 else "twice" if edited == 2 else f"{edited} times"
    return f"{what} were rewritten {times} in {seen} here"
