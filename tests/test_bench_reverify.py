"""`whence-ls bench attribution --reverify`: a dumped target is rebuilt, verified again with other
settings and scored against its saved truth; a dump its record no longer matches is skipped."""

from __future__ import annotations

import numpy as np


def test_reverify_scores_a_dumped_target_and_skips_one_that_no_longer_matches(tiny_lm, tmp_path):
    from whence_ls.bench.attribution import heldout_targets
    from whence_ls.bench.attribution_reverify import reverify
    from whence_ls.engine.attribution.ablation import ablatable_sources, masked_log_odds, random_masks
    from whence_ls.engine.attribution.base import TeacherForced
    from whence_ls.engine.attribution.units import build_unit_map
    from whence_ls.engine.generation import complete_at

    settings = {"context_tokens": 96, "max_new_tokens": 6, "rows_per_target": 3}
    for number, target in enumerate(heldout_targets(8)):  # the first target the random model writes visible text at
        record = complete_at(tiny_lm, target.text, target.cursor, language="python", max_new_tokens=6, context_tokens=96)
        indices = [i for i, t in enumerate(record.tokens) if t.text.strip()][:3]
        if indices:
            break
    assert indices, "the tiny model wrote only whitespace at 8 targets"
    dumped = tmp_path / f"target{number:03d}.npz"
    units = build_unit_map(record.context, "python")
    sources = ablatable_sources(units)
    truth = random_masks(32, len(sources), 1234)
    outcomes = masked_log_odds(TeacherForced.of(tiny_lm, record), indices, units, sources, truth)
    estimate = np.random.default_rng(0).random((len(indices), len(sources)))
    saved = {"truth_masks": truth, "truth_outcomes": outcomes, "copy_columns": np.zeros((len(indices), len(sources)), dtype=bool),
             "scores_calibrated_attention": estimate}
    np.savez(dumped, **saved)
    result = reverify(tiny_lm, str(tmp_path), tails=(None, 4), mask_counts=(8, 32), log=lambda _m: None, prior_from="dump", **settings)
    summary = result["summary"]
    assert result["skipped"] == []
    for name in ("verified, exact, 32 masks", "verified, tail 4, 8 masks", "calibrated_attention"):
        assert summary[name]["rows"] == len(indices) and np.isfinite(summary[name]["lds"]), (name, summary[name])
    # 32 exact masks predict held-out exact ablations of the same record better than a random estimate does
    assert summary["verified, exact, 32 masks"]["lds"] > summary["calibrated_attention"]["lds"]
    # a dump made with other settings (here: one source more) is not scored against this record
    wider = dict(saved, truth_masks=np.ones((32, len(sources) + 1), dtype=bool))
    np.savez(dumped, **wider)
    assert reverify(tiny_lm, str(tmp_path), tails=(4,), mask_counts=(8,), log=lambda _m: None, prior_from="dump", **settings)["skipped"] == [number]
