"""Sparse autoencoders on attention-layer outputs: what the model "saw" at a token, as features
with the snippets that excite them (`model.py` the SAE, `train.py` training and measuring,
`features.py` the feature index and a token's features)."""

from __future__ import annotations

from pathlib import Path


# the embedded model's set ships with the package (trained by `model train-sae --ship`), so a
# fresh clone shows features without a training run; a set the user trains takes precedence
SHIPPED_DIR = Path(__file__).with_name("shipped")


def sae_dir(lm) -> Path:
    """Where a model's own SAE set is written: models/sae/<model name>/."""
    from whence_ls.engine.attribution.calibration import _safe_name
    from whence_ls.paths import models_dir

    return models_dir() / "sae" / _safe_name(lm.name)


def shipped_dir(lm) -> Path:
    from whence_ls.engine.attribution.calibration import _safe_name

    return SHIPPED_DIR / _safe_name(lm.name)


def load_for(lm):
    """(the model's SAE set, its feature index) or (None, None) when none was trained for these
    weights; a set trained for other weights (its fingerprint differs) is not used."""
    from whence_ls.engine.attribution.calibration import fingerprints
    from whence_ls.engine.sae.features import load_feature_index
    from whence_ls.engine.sae.model import load_sae_set

    cached = getattr(lm, "_whence_sae", None)
    if cached is not None:
        return cached
    found = (None, None)
    wanted = fingerprints(lm)
    for directory in (sae_dir(lm), shipped_dir(lm)):
        if (directory / "manifest.json").is_file():
            sae_set = load_sae_set(directory)
            if sae_set.fingerprint in wanted:
                found = (sae_set, load_feature_index(directory))
                break
    lm._whence_sae = found
    return found
