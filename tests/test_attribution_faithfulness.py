"""The faithfulness metrics the benchmark reports (removal probe, rankable units, tau), the
benchmark's prompt selection, and one copy case on the real embedded model."""

from __future__ import annotations

import pytest
import torch

from whence_ls.engine.attribution import DEFAULT_METHOD, attribute_rows, context_units, default_method
from whence_ls.engine.attribution.base import TeacherForced
from whence_ls.bench.faithfulness import (
    FRACTIONS,
    LOCAL_TOKENS,
    RemovalProbe,
    kendall_tau,
    rankable_units,
    recency_ranking,
)
from whence_ls.engine.attribution.units import unit_map
from whence_ls.engine.explain import explain_line

SOURCE = """def scale(points, factor):
    result = []
    for x, y in points:
        result.append((x * factor, y * factor))
    return result
"""


@pytest.fixture(scope="module")
def record(tiny_lm):
    return explain_line(tiny_lm, SOURCE, 4, "python")


def test_rankable_units_leave_out_sink_and_local_tokens(tiny_lm, record):
    units = unit_map(record, "python")
    context_len = len(record.context.token_ids)
    everything = rankable_units(units, context_len, non_local=False)
    far = rankable_units(units, context_len, non_local=True)
    assert set(far) < set(everything)
    # a source whose only token is the sink cannot be ranked; the others keep their real tokens
    assert all(max(units.unit_positions[u]) >= units.sink_positions for u in everything)
    assert all(max(units.unit_positions[u]) < context_len - LOCAL_TOKENS for u in far)
    assert recency_ranking(units, everything)[0] == max(everything, key=lambda u: max(units.unit_positions[u]))


def test_removal_probe_matches_direct_forwards_and_caches(tiny_lm, record):
    units = unit_map(record, "python")
    job = TeacherForced.of(tiny_lm, record)
    index = 1
    probe = RemovalProbe(job, index, units)
    rankable = rankable_units(units, job.context_len, non_local=False)
    ranking = recency_ranking(units, rankable)
    result = probe.evaluate(ranking, rankable)
    assert set(result.per_fraction) == set(FRACTIONS)
    # k = 1% removes exactly the top unit: recompute p(target) without it by hand
    ids = job.ids[: job.target_position(index) + 1].clone()
    ids[units.unit_positions[ranking[0]]] = job.filler_id()
    with torch.no_grad():
        p = torch.softmax(tiny_lm.model(input_ids=ids.unsqueeze(0)).logits[0, -1].float(), -1)[job.target_id(index)]
    assert result.per_fraction[0.01][0] == pytest.approx(probe.full - float(p), abs=1e-5)
    forwards = probe.forwards
    again = probe.evaluate(ranking, rankable)
    assert probe.forwards == forwards and again.comprehensiveness == result.comprehensiveness


def test_kendall_tau_of_a_ranking_with_itself_is_one():
    scores = [0.5, -0.1, 0.3, 0.05]
    assert kendall_tau(scores, scores, [0, 1, 2, 3], by_abs=False) == pytest.approx(1.0)
    assert kendall_tau(scores, [-s for s in scores], [0, 1, 2, 3], by_abs=False) == pytest.approx(-1.0)
    assert kendall_tau(scores, scores, [0, 1], by_abs=False) is None


def test_benchmark_prompts_are_stdlib_code_in_a_fixed_order():
    from whence_ls.bench.attribution_units import select_prompts

    first = select_prompts(3)
    assert [p["source"] for p in select_prompts(3)] == [p["source"] for p in first]
    for prompt in first:
        assert prompt["source"].endswith(".py") and "test" not in prompt["source"].split("/")[0]
        assert prompt["text"].endswith(" ") and prompt["line"] > 20


def test_copy_case_on_the_embedded_model(embedded_lm):
    """A rare identifier defined above and used on the explained line: the pieces of it after the
    first are copies. With the model's default method the strongest source is the line that
    defines it, and the copy heads say where it was copied from."""
    source = (
        "def frobnicate_widget_total(values):\n"
        "    return sum(values) * 3\n"
        "\n"
        "\n"
        "numbers = [1, 2, 3]\n"
        "result = frobnicate_widget_total(numbers)\n"
    )
    record = explain_line(embedded_lm, source, 5, "python")
    units = context_units(embedded_lm, record, "python")
    start = record.text.index("frobnicate")
    pieces = [i for i, t in enumerate(record.tokens) if start < t.start < start + len("frobnicate_widget_total")]
    assert pieces, [t.text for t in record.tokens]
    method = default_method(embedded_lm)
    assert method == DEFAULT_METHOD == "stacked_leave_one_out", "the embedded model ships its calibration and stacked scorer"
    # the default, the stacked estimator that is its first half, and the calibrated one under that
    for method in (DEFAULT_METHOD, "stacked_attention", "calibrated_attention"):
        rows = attribute_rows(embedded_lm, record, pieces, method, language="python")
        tops = [units[rows[i].top(1)[0][0]].text for i in pieces]
        assert all(text.startswith("def frobnicate_widget_total") for text in tops), (method, tops)
        copied = [rows[i].extra.get("copied_from_unit") for i in pieces]
        assert sum(c == 0 for c in copied) >= len(pieces) // 2, (method, copied)
