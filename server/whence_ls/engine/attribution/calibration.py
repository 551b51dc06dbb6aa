"""Per-model calibration of the attention estimator (AT2's idea, "Learning to Attribute with
Attention", MadryLab): one weight per attention head, fitted so that the heads' attention on a
source predicts what random-subset ablation of the sources actually does to the token.

The fit: for calibration targets drawn from the Python standard library, k random masks over the
sources give the token's log-odds under each mask (`ablation.masked_log_odds`). A head's
feature for a mask is the attention it puts on the kept sources; the weights are the ridge
solution that predicts each token's centred, scaled log-odds from those features, pooled over
tokens. Held-out prompts give the fit's score (LDS: Spearman between predicted and actual
outcomes of masks the fit never saw). The same pass finds the copy heads: induction and
duplicate-token heads, scored on repeated random token sequences (TransformerLens's
head-detector patterns).

Weights are stored as JSON next to the models (`models/calibrations/`), with the calibration
set's hash, the held-out score and a fingerprint of the model's weights; the embedded model's
ship with the package (`calibrations/` beside this file), produced by `whence-ls model calibrate`.
"""

from __future__ import annotations

import hashlib
import json
import random
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from whence_ls.engine.attribution.ablation import ablatable_sources, masked_log_odds, random_masks
from whence_ls.engine.attribution.attention_probe import attention_rows, head_count
from whence_ls.engine.attribution.base import TeacherForced
from whence_ls.engine.attribution.units import build_unit_map
from whence_ls.engine.loading import LoadedModel
from whence_ls.errors import WhenceError
from whence_ls.paths import models_dir

SHIPPED_DIR = Path(__file__).with_name("calibrations")
FORMAT = 1
RIDGE_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
# a head is a copy head when at least this share of its attention, on repeated random tokens,
# goes where the pattern says (the token after the earlier occurrence, for induction)
COPY_HEAD_SCORE = 0.3
MAX_ROWS_PER_TARGET = 12
MIN_SPREAD = 0.05  # nats of log-odds


@dataclass
class Calibration:
    model: str
    fingerprint: str
    layers: int
    heads: int
    weights: list[float]  # [layers * heads], layer-major
    induction_heads: list[int] = field(default_factory=list)  # flat head indexes
    duplicate_heads: list[int] = field(default_factory=list)
    info: dict = field(default_factory=dict)  # set hash, sizes, held-out LDS, ridge, seconds

    def to_json(self) -> dict:
        return {"format": FORMAT, "model": self.model, "fingerprint": self.fingerprint, "layers": self.layers,
                "heads": self.heads, "weights": self.weights, "induction_heads": self.induction_heads,
                "duplicate_heads": self.duplicate_heads, "info": self.info}

    @classmethod
    def from_json(cls, data: dict) -> "Calibration":
        if data.get("format") != FORMAT:
            raise WhenceError(f"calibration format {data.get('format')!r} is not {FORMAT}: run `whence-ls model calibrate`")
        weights = [float(w) for w in data["weights"]]
        if len(weights) != int(data["layers"]) * int(data["heads"]):
            raise WhenceError("calibration is corrupt: weights do not match layers x heads")
        return cls(model=data["model"], fingerprint=data["fingerprint"], layers=int(data["layers"]),
                   heads=int(data["heads"]), weights=weights, induction_heads=list(data.get("induction_heads", [])),
                   duplicate_heads=list(data.get("duplicate_heads", [])), info=dict(data.get("info", {})))


def fingerprint(lm: LoadedModel) -> str:
    """A cheap identity of the weights: the config and a slice of the embedding matrix. Weights
    calibrated on one model are never applied to another of the same name. The slice is rounded
    to bf16 first, so the same model loaded in fp32 (a CPU) or bf16 (a large model on a GPU) has
    one fingerprint: `whence-ls bench gpu` found the shipped calibration and features unused on
    cuda when the fp32 values were hashed."""
    return _digest(lm, torch.bfloat16)


def fingerprints(lm: LoadedModel) -> set[str]:
    """Every fingerprint a file made for these weights may carry: the current one, and the one
    files made before it was rounded (of the exact values, so it matches fp32 loads only)."""
    return {fingerprint(lm), _digest(lm, torch.float32)}


def _digest(lm: LoadedModel, dtype: torch.dtype) -> str:
    config = lm.model.config
    # the shape of the network and a slice of its weights; never paths or library versions,
    # which differ between two installs of the same model
    shape = {key: getattr(config, key, None) for key in
             ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")}
    digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode())
    embedding = lm.model.get_input_embeddings().weight
    digest.update(embedding.detach().flatten()[:4096].to(dtype).float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.strip("/"))[-80:] or "model"


def user_path(lm: LoadedModel) -> Path:
    return models_dir() / "calibrations" / f"{_safe_name(lm.name)}.json"


def load_calibration(lm: LoadedModel) -> Calibration | None:
    """The model's calibration (the user's own first, then the one shipped), or None. A file
    whose fingerprint does not match this model's weights is ignored."""
    cached = getattr(lm, "_whence_calibration", None)
    if cached is not None:
        return cached or None
    found = None
    wanted = fingerprints(lm)
    for path in (user_path(lm), SHIPPED_DIR / f"{_safe_name(lm.name)}.json"):
        if not path.is_file():
            continue
        try:
            calibration = Calibration.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError, WhenceError):
            continue  # a corrupt file falls back to the next, or to no calibration
        if calibration.fingerprint in wanted:
            found = calibration
            break
    lm._whence_calibration = found or False  # type: ignore[attr-defined]
    return found


def save_calibration(lm: LoadedModel, calibration: Calibration, path: Path | None = None) -> Path:
    target = path or user_path(lm)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(calibration.to_json(), indent=1) + "\n", encoding="utf-8")
    tmp.replace(target)
    lm._whence_calibration = calibration  # type: ignore[attr-defined]
    return target


# -- calibration set -------------------------------------------------------------------------


def stdlib_targets(count: int, seed: int = 0) -> list[dict]:
    """`count` (text, line) targets from the standard library of this interpreter: a line past
    the 20th with a few tokens on it, in files picked in a fixed order. Test modules are left out."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        (p for p in root.rglob("*.py") if "test" not in p.relative_to(root).parts[0] and p.relative_to(root).parts[0] != "encodings" and "site-packages" not in p.parts),
        key=lambda p: hashlib.sha1(f"{seed}:{p.relative_to(root)}".encode()).hexdigest(),
    )
    chooser = random.Random(seed)
    targets = []
    for path in files:
        if len(targets) >= count:
            break
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        lines = text.splitlines()
        candidates = [k for k in range(20, len(lines)) if len(lines[k].strip()) >= 12 and not lines[k].strip().startswith("#")]
        if not candidates:
            continue
        line = chooser.choice(candidates)
        targets.append({"source": str(path.relative_to(root)), "text": text, "line": line})
    return targets


def calibration_set_hash(targets: list[dict]) -> str:
    digest = hashlib.sha256()
    for target in targets:
        digest.update(f"{target['source']}:{target['line']}\n".encode())
    return digest.hexdigest()[:16]


# -- measurements one target gives -----------------------------------------------------------


@dataclass
class TargetMeasure:
    masks: np.ndarray  # [k, S] kept sources
    outcomes: np.ndarray  # [k, rows] log-odds
    features: np.ndarray  # [rows, S, layers * heads] attention mass per source


def measure_target(lm: LoadedModel, record, language: str | None, masks: int, seed: int) -> TargetMeasure | None:
    units = build_unit_map(record.context, language)
    sources = ablatable_sources(units)
    if len(sources) < 4:
        return None
    job = TeacherForced.of(lm, record)
    indices = list(range(min(len(record.tokens), MAX_ROWS_PER_TARGET)))
    drawn = random_masks(masks, len(sources), seed)
    outcomes = masked_log_odds(job, indices, units, sources, drawn)
    return TargetMeasure(masks=drawn, outcomes=outcomes, features=source_features(job, indices, units, sources))


def source_features(job: TeacherForced, indices: list[int], units, sources: list[int]) -> np.ndarray:
    rows = attention_rows(job, indices)
    context = job.context_len
    weights = units.weights[:, sources].float()  # [context, S]
    per_source = torch.einsum("nhp,ps->nsh", rows.weights[:, :, :context], weights)
    return per_source.double().numpy()


# -- the fit -----------------------------------------------------------------------------------


def _row_system(measure: TargetMeasure) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per row: (centred features [k, H], centred and scaled outcomes [k])."""
    systems = []
    for row in range(measure.outcomes.shape[1]):
        outcome = measure.outcomes[:, row]
        spread = outcome.std()
        if spread < 1e-9:
            continue  # no mask moved this token: nothing to learn from it
        features = measure.masks.astype(np.float64) @ measure.features[row]  # [k, H]
        # scaled towards a correlation objective (AT2's), but a token that barely moved keeps
        # its small weight instead of having its noise blown up
        systems.append((features - features.mean(0), (outcome - outcome.mean()) / max(spread, MIN_SPREAD)))
    return systems


def fit_weights(train: list[TargetMeasure], ridge: float) -> np.ndarray:
    systems = [s for m in train for s in _row_system(m)]
    if not systems:
        raise WhenceError("calibration found no token whose probability the ablations moved")
    size = systems[0][0].shape[1]
    gram = np.zeros((size, size))
    moment = np.zeros(size)
    for features, outcome in systems:
        gram += features.T @ features
        moment += features.T @ outcome
    scale = np.trace(gram) / size or 1.0
    return np.linalg.solve(gram + ridge * scale * np.eye(size), moment)


def linear_datamodeling_score(predicted: np.ndarray, actual: np.ndarray) -> float | None:
    """Spearman correlation between predicted and actual outcomes over masks (ContextCite's LDS)."""
    from scipy.stats import spearmanr

    if np.ptp(actual) < 1e-9 or np.ptp(predicted) < 1e-12:
        return None
    value = spearmanr(predicted, actual).statistic
    return None if not np.isfinite(value) else float(value)


def estimator_lds(measures: list[TargetMeasure], weights: np.ndarray) -> float | None:
    scores = []
    for measure in measures:
        for row in range(measure.outcomes.shape[1]):
            source_scores = measure.features[row] @ weights  # [S]
            predicted = measure.masks.astype(np.float64) @ source_scores
            value = linear_datamodeling_score(predicted, measure.outcomes[:, row])
            if value is not None:
                scores.append(value)
    return float(np.mean(scores)) if scores else None


# -- copy heads --------------------------------------------------------------------------------


def copy_head_scores(lm: LoadedModel, length: int = 40, batch: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per head, (induction score, duplicate-token score) on [random tokens] * 2: the mean
    attention from the second copy's position i to the first copy's i + 1 (induction: "what
    followed me last time") and to i itself (duplicate token)."""
    generator = torch.Generator().manual_seed(seed)
    vocab = lm.model.get_input_embeddings().weight.shape[0]
    low = min(1000, vocab // 4)
    induction, duplicate = [], []
    for _ in range(batch):
        tokens = torch.randint(low, vocab, (length,), generator=generator)
        ids = torch.cat([tokens, tokens]).to(lm.device)
        queries = list(range(length + 1, 2 * length))
        rows = attention_rows(TeacherForced.over_positions(lm, ids), queries).weights  # [n, H, end]
        q = torch.tensor(queries)
        induction.append(rows[torch.arange(len(q)), :, q - length + 1].mean(0))
        duplicate.append(rows[torch.arange(len(q)), :, q - length].mean(0))
    return torch.stack(induction).mean(0).numpy(), torch.stack(duplicate).mean(0).numpy()


# -- the whole command ---------------------------------------------------------------------------


def calibrate(
    lm: LoadedModel,
    *,
    targets: int = 24,
    heldout: int = 8,
    masks: int = 32,
    heldout_masks: int = 16,
    context_tokens: int = 320,
    seed: int = 0,
    progress: Callable[[str], None] = lambda _m: None,
) -> Calibration:
    """Fit the estimator's head weights on standard-library targets; the last `heldout` of them
    only score the fit. Returns the calibration (not yet saved)."""
    from whence_ls.engine.explain import explain_line

    started = time.perf_counter()
    layers, heads = head_count(lm)
    chosen = stdlib_targets(targets + heldout, seed)
    train: list[TargetMeasure] = []
    test: list[TargetMeasure] = []
    for number, target in enumerate(chosen):
        try:
            record = explain_line(lm, target["text"], target["line"], "python", context_tokens=context_tokens)
        except WhenceError:
            continue
        is_test = number >= len(chosen) - heldout
        measure = measure_target(lm, record, "python", heldout_masks if is_test else masks, seed + number)
        if measure is not None:
            (test if is_test else train).append(measure)
        progress(f"calibration target {number + 1}/{len(chosen)} ({target['source']}:{target['line'] + 1})")
    if not train:
        raise WhenceError("calibration found no usable target")
    best = None
    for ridge in RIDGE_GRID:
        weights = fit_weights(train, ridge)
        score = estimator_lds(test, weights) if test else None
        if best is None or (score is not None and (best[1] is None or score > best[1])):
            best = (weights, score, ridge)
    weights, score, ridge = best
    induction, duplicate = copy_head_scores(lm)
    info = {
        "calibration_set": "python stdlib",
        "calibration_set_hash": calibration_set_hash(chosen),
        "train_targets": len(train),
        "heldout_targets": len(test),
        "masks": masks,
        "heldout_masks": heldout_masks,
        "context_tokens": context_tokens,
        "ridge": ridge,
        "heldout_lds": None if score is None else round(score, 4),
        "seconds": round(time.perf_counter() - started, 1),
        "command": f"whence-ls model calibrate --targets {targets} --heldout {heldout} --masks {masks}",
    }
    return Calibration(
        model=lm.name,
        fingerprint=fingerprint(lm),
        layers=layers,
        heads=heads,
        weights=[float(w) for w in weights],
        induction_heads=[int(h) for h in np.flatnonzero(induction >= COPY_HEAD_SCORE)],
        duplicate_heads=[int(h) for h in np.flatnonzero(duplicate >= COPY_HEAD_SCORE)],
        info=info,
    )


# -- the registry record -------------------------------------------------------------------------


def record_calibration(name: str, path: Path, calibration: Calibration, *, shipped: bool = False) -> None:
    """Note the calibration in models/registry.json (catalog models only: other models have no
    registry entry, and their calibration file is found by name and fingerprint)."""
    from whence_ls.engine import registry

    data = registry.read_registry()
    entry = data["models"].get(name)
    if entry is None:
        return
    entry["calibration"] = {
        "file": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "fingerprint": calibration.fingerprint,
        "heldout_lds": calibration.info.get("heldout_lds"),
        "calibration_set_hash": calibration.info.get("calibration_set_hash"),
        "source": "shipped with whence-ls (reproduce: " + calibration.info.get("command", "whence-ls model calibrate") + ")"
        if shipped else "whence-ls model calibrate on this machine",
    }
    registry.write_registry(data)


def record_shipped_calibration(name: str) -> None:
    """After `model install`: record the calibration that ships with the package, when there is
    one and no calibration of this machine's is recorded."""
    from whence_ls.engine import registry

    path = SHIPPED_DIR / f"{_safe_name(name)}.json"
    entry = registry.read_registry()["models"].get(name)
    if entry is None or not path.is_file() or entry.get("calibration", {}).get("source", "").startswith("whence-ls model"):
        return
    try:
        calibration = Calibration.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, WhenceError):
        return
    record_calibration(name, path, calibration, shipped=True)
