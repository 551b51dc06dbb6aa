"""Training targets for learned attribution estimators (issue 21): the suite's recipe (a cursor
at the third body statement of a function past line 20, the model's own greedy completion) on
the standard library of this interpreter, the calibration's code, never on the held-out
packages of `bench/attribution.py`. `whence-ls bench attribution --target-set training --dump
DIR` measures their truth exactly as the suite measures the held-out targets'.
"""

from __future__ import annotations

import hashlib
import sys
import sysconfig
from pathlib import Path

TRAINING_SEED = 21


def training_targets(count: int, seed: int = TRAINING_SEED) -> list:
    """Up to `count` cursors in standard-library modules (test packages, encodings and vendored
    site-packages left out), one per file, files in a fixed hash order."""
    from whence_ls.bench.attribution import Target
    from whence_ls.bench.attribution_units import _first_function_cut
    from whence_ls.grammars import get_parser

    parser = get_parser("python")
    root = Path(sysconfig.get_paths()["stdlib"])
    version = ".".join(str(part) for part in sys.version_info[:3])
    files = sorted(
        (p for p in root.rglob("*.py")
         if not {"test", "tests", "idle_test", "encodings", "site-packages", "__pycache__"} & set(p.relative_to(root).parts)),
        key=lambda p: hashlib.sha1(f"{seed}:{p.relative_to(root)}".encode()).hexdigest(),
    )
    targets = []
    for path in files:
        if len(targets) >= count:
            break
        try:
            data = path.read_bytes()
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if len(data) != len(text):
            continue  # non-ASCII: byte offsets would not be character offsets
        cut = _first_function_cut(parser.parse(data).root_node)
        if cut is None:
            continue
        cursor = cut[0]
        targets.append(Target("stdlib", version, str(path.relative_to(root)), text.count("\n", 0, cursor), text, cursor))
    return targets


def targets_of(target_set: str, count: int) -> list:
    from whence_ls.bench.attribution import heldout_targets

    return training_targets(count) if target_set == "training" else heldout_targets(count)


def features_for_dump(lm, dump_dir: str, out_dir: str, *, target_set: str, count: int, log,
                      context_tokens: int = 256, max_new_tokens: int = 16, rows_per_target: int = 8) -> None:
    """Per dumped target: the head features of one forward and the lexical features, saved to
    OUT/targetNNN.npz with the CPU seconds of the features and of one plain forward."""
    import time

    import numpy as np
    import torch

    from whence_ls.engine.attribution.ablation import ablatable_sources
    from whence_ls.engine.attribution.base import TeacherForced
    from whence_ls.engine.attribution.head_features import head_features
    from whence_ls.engine.attribution.stacked_attention import lexical_features
    from whence_ls.engine.attribution.units import build_unit_map
    from whence_ls.engine.generation import complete_at

    targets = targets_of(target_set, count)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(dump_dir).glob("target*.npz")):
        if (Path(out_dir) / path.name).exists():
            continue
        number = int(path.stem[len("target"):])
        saved = np.load(path)
        target = targets[number]
        record = complete_at(lm, target.text, target.cursor, language="python", max_new_tokens=max_new_tokens,
                             context_tokens=context_tokens)
        indices = [i for i, t in enumerate(record.tokens) if t.text.strip()][:rows_per_target]
        units = build_unit_map(record.context, "python")
        sources = ablatable_sources(units)
        if (len(indices), len(sources)) != saved["truth_outcomes"].shape[1:] + saved["truth_masks"].shape[1:]:
            log(f"target {number}: shape differs from the dump: skipped")
            continue
        job = TeacherForced.of(lm, record)
        forwards = []
        for _ in range(2):
            began = time.process_time()
            with torch.inference_mode():
                lm.model(input_ids=job.ids.unsqueeze(0), use_cache=False, logits_to_keep=1)
            forwards.append(time.process_time() - began)
        began = time.process_time()
        with torch.inference_mode():
            found = head_features(job, indices, units, sources)
        seconds = time.process_time() - began
        lexical = lexical_features(record, units, sources, indices)  # what the served estimator reads
        np.savez_compressed(Path(out_dir) / path.name, attention=found.attention.numpy().astype(np.float32),
                            value=found.value.numpy().astype(np.float32), logit=found.logit.numpy().astype(np.float32),
                            forward_s=min(forwards), features_s=seconds, **lexical)
        log(f"target {number}: {len(indices)} rows, {len(sources)} sources; features {seconds / min(forwards):.2f} FE")
