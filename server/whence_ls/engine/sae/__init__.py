"""Sparse autoencoders on attention-layer outputs: what the model "saw" at a token, as features
with the snippets that excite them (`model.py` the SAE, `train.py` training and measuring,
`features.py` the feature index and a token's features)."""

from __future__ import annotations

from pathlib import Path


def sae_dir(lm) -> Path:
    """Where a model's SAE set lives: models/sae/<model name>/."""
    from whence_ls.engine.attribution.calibration import _safe_name
    from whence_ls.paths import models_dir

    return models_dir() / "sae" / _safe_name(lm.name)


def load_for(lm):
    """(the model's SAE set, its feature index) or (None, None) when none was trained for these
    weights; a set trained for other weights (its fingerprint differs) is not used."""
    from whence_ls.engine.attribution.calibration import fingerprint
    from whence_ls.engine.sae.features import load_feature_index
    from whence_ls.engine.sae.model import load_sae_set

    cached = getattr(lm, "_whence_sae", None)
    if cached is not None:
        return cached
    directory = sae_dir(lm)
    found = (None, None)
    if (directory / "manifest.json").is_file():
        sae_set = load_sae_set(directory)
        if sae_set.fingerprint == fingerprint(lm):
            found = (sae_set, load_feature_index(directory))
    lm._whence_sae = found
    return found
