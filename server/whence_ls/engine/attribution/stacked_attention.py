"""A stacked one-pass estimator (issue 21): a small linear model, per (generated token, source),
over what one forward gives (the calibrated estimator's score, attention, value-weighted
attention and the heads' direct logit, each summed over a third of the layers; their ranks) and
what the text gives (the token's identifier occurring earlier on the line, identifiers shared
with the token's line, the source's place and size). Its weights are fitted as AT2 fits its head
weights, on the Pearson correlation between predicted and actual outcomes of random-subset
ablations, on the model's own completions of standard-library code (`whence-ls bench
attribution-learned`), and ship beside the calibration (`calibrations/<model>.stacked.json`).

One forward (`head_features`) gives every row of a completion, or none when generation kept the
sums the features read (`live_stacked.py`); the model over them is a dot product.
"""

from __future__ import annotations

import json
import re

import numpy as np
import torch

from whence_ls.engine.attribution.ablation import ablatable_sources
from whence_ls.engine.attribution.base import ALL_ROWS, RawRow, TeacherForced
from whence_ls.engine.attribution import calibration as calibration_files
from whence_ls.engine.attribution.calibration import _safe_name, fingerprints, load_calibration
from whence_ls.engine.attribution.units import COMMON_WORDS
from whence_ls.engine.taps import Preempted
from whence_ls.errors import WhenceError

FORMAT = 1
HEAD_PARTS = ("attention", "value", "logit")
THIRDS = tuple(f"{part}_{third}" for part in HEAD_PARTS for third in ("early", "middle", "late"))
# finer: each part summed over a sixth, or a tenth, of the layers ("value_6_0" .. "value_6_5")
GROUPS = {n: tuple(f"{part}_{n}_{g}" for part in HEAD_PARTS for g in range(n)) for n in (6, 10)}


# -- features --------------------------------------------------------------------------------------


def word_at(text: str, start: int, end: int) -> str:
    """The identifier that the span [start, end) of `text` begins (or lies in); '' for none."""
    left = start
    while left < end and not (text[left].isalnum() or text[left] == "_"):
        left += 1
    if left >= end:
        return ""
    right = left
    while left > 0 and (text[left - 1].isalnum() or text[left - 1] == "_"):
        left -= 1
    while right < len(text) and (text[right].isalnum() or text[right] == "_"):
        right += 1
    return text[left:right]


def lexical_features(record, units, sources: list[int], indices: list[int]) -> dict[str, np.ndarray]:
    """[rows, sources] each: the latest source holding an earlier occurrence of the identifier the
    token is part of (`copy_latest`), any such source (`copy_any`), identifiers the source shares
    with the token's line and the context line it continues (`overlap`), context tokens the source
    owns, its lines."""
    rows, count = len(indices), len(sources)
    copy_latest, copy_any, overlap = np.zeros((rows, count)), np.zeros((rows, count)), np.zeros((rows, count))
    names = [{i.text for i in units.units[s].identifiers} for s in sources]
    context_tail = record.context.text[record.context.text.rfind("\n") + 1 :]
    for r, index in enumerate(indices):
        token = record.tokens[index]
        word = word_at(record.text, token.start, token.end)
        if len(word) >= 2 and word not in COMMON_WORDS and not word.isdigit():
            holding = [c for c in range(count) if word in names[c]]
            copy_any[r, holding] = 1.0
            if holding:
                copy_latest[r, max(holding)] = 1.0
        start = record.text.rfind("\n", 0, token.start) + 1
        end = record.text.find("\n", token.end)
        line = (context_tail if start == 0 else "") + record.text[start : len(record.text) if end == -1 else end]
        words = {w for w in re.findall(r"[^\W\d]\w*", line) if w not in COMMON_WORDS}
        overlap[r] = [len(words & names[c]) for c in range(count)]
    tokens = units.weights[:, sources].double().sum(0).numpy()
    lines = np.array([units.units[s].lines for s in sources], dtype=float)
    return {"copy_latest": copy_latest, "copy_any": copy_any, "overlap": overlap,
            "tokens": np.tile(tokens, (rows, 1)), "lines": np.tile(lines, (rows, 1))}


def _normalised(matrix: np.ndarray) -> np.ndarray:
    total = np.abs(matrix).sum(axis=1, keepdims=True)
    return np.divide(matrix, total, out=np.zeros_like(matrix), where=total > 0)


def _row_rank(matrix: np.ndarray) -> np.ndarray:
    """1 for each row's strongest source, 1/2 for the next, ..."""
    order = np.argsort(-matrix, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(matrix.shape[1])[None, :].repeat(matrix.shape[0], 0), axis=1)
    return 1.0 / (1.0 + ranks)


def scalar_features(found: dict, calibration_weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every feature the stacked model can read, [rows, sources] each, from the head features
    (`attention`, `value`, `logit`: [rows, sources, layers * heads]) and `lexical_features`."""
    return features_from_sums({**found, **head_sums(found, calibration_weights)})


def head_sums(found: dict, calibration_weights: np.ndarray) -> dict[str, np.ndarray]:
    """What the features read of the heads, [rows, sources] each, before any normalising: the
    calibrated sum and each part summed over groups of layers (`live_stacked.py` gives the same
    sums from generation's own forwards)."""
    sums = {"calibrated": found["attention"].astype(np.float64) @ calibration_weights}
    for part in HEAD_PARTS:
        heads = found[part].astype(np.float64)
        # heads are layer-major: thirds of the heads are thirds of the layers
        for name, chunk in zip(("early", "middle", "late"), np.array_split(np.arange(heads.shape[-1]), 3)):
            sums[f"{part}_{name}"] = heads[..., chunk].sum(-1)
        for n in GROUPS:
            for g, chunk in enumerate(np.array_split(np.arange(heads.shape[-1]), n)):
                sums[f"{part}_{n}_{g}"] = heads[..., chunk].sum(-1)
    return sums


def features_from_sums(found: dict) -> dict[str, np.ndarray]:
    """The features from `head_sums` (finer groups only where present) and `lexical_features`."""
    rows, count = found["copy_latest"].shape
    column = np.arange(count)[None, :].repeat(rows, 0).astype(float)
    calibrated = _normalised(found["calibrated"])
    # a part's total is its thirds' sum (the thirds partition the heads)
    totals = {part: sum(found[f"{part}_{name}"] for name in ("early", "middle", "late")) for part in HEAD_PARTS}
    value_total, logit_total = _normalised(totals["value"]), _normalised(totals["logit"])
    groups = {name: _normalised(found[name]) for name in THIRDS + tuple(n for names in GROUPS.values() for n in names)
              if name in found}
    return {
        **groups, "logit_total": logit_total, "logit_rank": _row_rank(logit_total),
        "attention_total": _normalised(totals["attention"]),
        "copy_latest": found["copy_latest"], "copy_any": found["copy_any"], "overlap": np.log1p(found["overlap"]),
        "recency": column / max(1, count - 1), "is_last": (column == count - 1).astype(float),
        "distance": 1.0 / (count - column), "tokens": np.log1p(found["tokens"]), "lines": found["lines"],
        "calibrated": calibrated, "calibrated_rank": _row_rank(calibrated),
        "value_total": value_total, "value_rank": _row_rank(value_total),
    }


# -- the fitted model ------------------------------------------------------------------------------


class StackedScorer:
    """score = sum_f weight_f x feature_f over the named features, then the copy prior added to
    the normalised row."""

    def __init__(self, data: dict):
        if data.get("format") != FORMAT:
            raise WhenceError(f"stacked scorer format {data.get('format')!r} is not {FORMAT}")
        self.model = data.get("model", "")
        self.fingerprint = data.get("fingerprint", "")
        self.features = list(data["features"])
        self.weights = np.asarray(data["weights"], dtype=np.float64)
        self.prior = float(data.get("prior", 0.0))
        self.info = dict(data.get("info", {}))
        if self.weights.shape != (len(self.features),):
            raise WhenceError("stacked scorer is corrupt: weights do not match features")

    def scores(self, scalars: dict[str, np.ndarray]) -> np.ndarray:
        stacked = np.stack([scalars[name] for name in self.features], axis=-1)  # [rows, sources, F]
        return _normalised(stacked @ self.weights) + self.prior * scalars["copy_latest"]

    def to_json(self) -> dict:
        return {"format": FORMAT, "model": self.model, "fingerprint": self.fingerprint, "features": self.features,
                "weights": self.weights.tolist(), "prior": self.prior, "info": self.info}


def scorer_path(name: str):
    return calibration_files.SHIPPED_DIR / f"{_safe_name(name)}.stacked.json"


def load_scorer(lm) -> StackedScorer | None:
    """The model's stacked scorer, shipped beside its calibration, when its fingerprint matches."""
    cached = getattr(lm, "_whence_stacked", None)
    if cached is not None:
        return cached or None
    found = None
    path = scorer_path(lm.name)
    if path.is_file():
        try:
            scorer = StackedScorer(json.loads(path.read_text(encoding="utf-8")))
            found = scorer if scorer.fingerprint in fingerprints(lm) else None
        except (OSError, ValueError, KeyError, TypeError, WhenceError):
            found = None
    lm._whence_stacked = found or False  # type: ignore[attr-defined]
    return found


# -- the method ----------------------------------------------------------------------------------


class StackedAttention:
    name = "stacked_attention"
    rank_by_abs = False
    rows_per_batch = ALL_ROWS  # one forward serves every row

    def __init__(self, logit_lens: bool = True) -> None:
        self.logit_lens = logit_lens

    def compute(self, job: TeacherForced, indices: list[int], unit_map) -> dict[int, RawRow]:
        from whence_ls.engine.attribution.calibrated_attention import logit_lens
        from whence_ls.engine.attribution.head_features import head_features
        from whence_ls.engine.attribution.live_rows import serves

        calibration, scorer = load_calibration(job.lm), load_scorer(job.lm)
        if calibration is None or scorer is None:
            raise WhenceError(f"model {job.lm.name} has no stacked attribution scorer: use calibrated_attention")
        if serves(self.name, job.record.live_rows, indices):
            return self._from_live(job, indices, unit_map, scorer)  # read while generating: no forward
        sources = ablatable_sources(unit_map)
        try:
            with torch.inference_mode():
                # the same forward gives the calibrated estimator's two findings: the copy heads'
                # "copied from" and the logit lens
                found = head_features(job, indices, unit_map, sources, copy_heads=calibration.induction_heads,
                                      hidden_states=self.logit_lens)
        except Preempted:
            return {}  # no rows: the caller requeues them
        if found.attention.shape[-1] != len(calibration.weights):
            raise WhenceError("the calibration does not match this model's heads: run `whence-ls model calibrate`")
        parts = {p: getattr(found, p).numpy() for p in HEAD_PARTS}
        sums = head_sums(parts, np.asarray(calibration.weights, dtype=np.float64))
        lens = logit_lens(job, indices, found.hidden) if found.hidden is not None else {}
        copies = [found.copy_attention[k] if found.copy_attention is not None else None for k in range(len(indices))]
        return self._rows(job, indices, unit_map, sources, scorer, sums, copies, lens)

    def _from_live(self, job: TeacherForced, indices: list[int], unit_map, scorer) -> dict[int, RawRow]:
        """Rows from the sums generation kept per position (`live_stacked.py`), mapped to sources."""
        from whence_ls.engine.attribution.calibrated_attention import lens_rows

        from whence_ls.engine.attribution.live_rows import resolve

        live = [resolve(job.record.live_rows[index]) for index in indices]
        sources = ablatable_sources(unit_map)
        context = job.context_len
        to_sources = unit_map.weights[:context, sources].double()  # [C, S]
        sums = {"calibrated": torch.stack([row.scores[:context].double() for row in live]) @ to_sources}
        for g, label in enumerate(live[0].head_labels):
            sums[label] = torch.stack([row.head_sums[g, :context].double() for row in live]) @ to_sources
        tops = [row.lens_top for row in live]
        lens = lens_rows(job, indices, torch.stack(tops)) if self.logit_lens and all(t is not None for t in tops) else {}
        return self._rows(job, indices, unit_map, sources, scorer, {k: v.numpy() for k, v in sums.items()},
                          [row.copy_attention for row in live], lens)

    def _rows(self, job: TeacherForced, indices: list[int], unit_map, sources: list[int], scorer, sums: dict,
              copies: list, lens: dict) -> dict[int, RawRow]:
        from whence_ls.engine.attribution.calibrated_attention import copy_and_lens_extra

        scalars = features_from_sums({**sums, **lexical_features(job.record, unit_map, sources, indices)})
        matrix = scorer.scores(scalars)  # [rows, sources]
        result = {}
        for k, index in enumerate(indices):
            unit_scores = torch.zeros(len(unit_map.units), dtype=torch.float64)
            unit_scores[torch.tensor(sources)] = torch.from_numpy(matrix[k])
            extra = copy_and_lens_extra(job, index, copies[k], unit_map, lens)
            latest = np.flatnonzero(scalars["copy_latest"][k])
            if latest.size:
                extra["latest_occurrence_unit"] = int(sources[int(latest[-1])])
            result[index] = RawRow(unit_scores=unit_scores, extra=extra)
        return result
