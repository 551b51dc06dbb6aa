"""Attribution engine on the tiny random model: every method against an independent reference
computation (per-token backward, manual occlusion, IG completeness), units and aggregation,
the sink rule, caching, cancellation and bad input."""

from __future__ import annotations

import threading

import pytest
import torch

from whence_ls.engine.attribution import (
    DEFAULT_METHOD,
    FALLBACK_METHOD,
    METHOD_NOTES,
    METHODS,
    AttributionRow,
    attribute_rows,
    attribution_matrix,
    context_units,
    least_confident_order,
    make_method,
)
from whence_ls.engine.attribution.base import TeacherForced
from whence_ls.engine.attribution.units import build_unit_map, split_sources
from whence_ls.engine.explain import explain_line
from whence_ls.engine.records import ContextWindow
from whence_ls.errors import WhenceError

SOURCE = '''import os


def read_config(path, default=None):
    """Read a key=value file; missing file gives `default`."""
    if not os.path.exists(path):
        return default
    values = {}
    with open(path) as handle:
        for line in handle:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def write_config(path, values):
    with open(path, "w") as handle:
        for key in sorted(values):
            handle.write(f"{key}={values[key]}\\n")
'''


@pytest.fixture(scope="module")
def record(tiny_lm):
    # a teacher-forced line: fixed tokens whatever the random model would have generated
    line = SOURCE[: SOURCE.index("            handle.write")].count("\n")
    result = explain_line(tiny_lm, SOURCE, line, "python")
    assert len(result.tokens) >= 8
    return result


def _fresh(record):
    """The same record with no rows yet (rows are stored on the record)."""
    import copy

    clone = copy.copy(record)
    clone.attribution = {}
    clone.id = record.id + "-fresh" + str(id(clone))
    return clone


def test_sources_are_lines_that_partition_the_context(tiny_lm, record):
    units = context_units(tiny_lm, record, "python")
    context = record.context
    spans = build_unit_map(context, "python").units
    # the owned spans partition the context; the shown text is the line's code, trimmed
    assert spans[0].span_start == context.doc_start and spans[-1].span_end == context.doc_start + len(context.text)
    assert all(a.span_end == b.span_start for a, b in zip(spans, spans[1:]))
    for unit in units:
        assert SOURCE[unit.start : unit.end] == unit.text and unit.text == unit.text.strip() and unit.text
    texts = [u.text for u in units]
    assert "def read_config(path, default=None):" in texts and "values = {}" in texts
    assert not any(t in ("(", ")", ":", "=") for t in texts)  # punctuation never stands alone
    names = {i.text for u in units for i in u.identifiers}
    assert {"read_config", "path", "default", "values", "handle"} <= names
    assert not names & {"def", "if", "not", "return", "with", "for", "in", "None"}  # keywords are no sub-sources


def test_a_statement_over_several_lines_is_one_source():
    text = "total = compute(\n    first,\n    second,\n)\nresult = total  # (\n"
    spans = split_sources(text, "python")
    assert [text[s:e] for s, e, _ in spans] == ["total = compute(\n    first,\n    second,\n)\n", "result = total  # (\n"]
    assert [[text[a:b] for a, b in ids] for _, _, ids in spans] == [["total", "compute", "first", "second"], ["result", "total"]]
    # a bracket inside a string or a comment opens nothing; without a grammar every line stands alone
    assert len(split_sources('x = "("\ny = 1\n', "python")) == 2
    assert len(split_sources(text, None)) == 5


def test_aggregation_preserves_sums_and_drops_only_the_sink(tiny_lm, record):
    units = build_unit_map(record.context, "python")
    generator = torch.Generator().manual_seed(1)
    scores = torch.randn(len(record.context.token_ids), generator=generator, dtype=torch.float64)
    aggregated = units.aggregate(scores)
    assert aggregated.shape == (len(units.units),)
    assert float(aggregated.sum()) == pytest.approx(float(scores[units.sink_positions :].sum()), abs=1e-9)
    assert units.sink_positions == 1  # this tokenizer adds no BOS: the first token is the sink
    # identifiers get the share of their visible characters: never more than the whole
    identifier_mass = units.identifier_weights.sum(-1)
    assert float(identifier_mass.max()) <= 1.0 + 1e-9 and float(identifier_mass.sum()) > 0


def test_whitespace_only_tokens_still_land_in_a_source():
    context_text = "x = 1\n\n\n    y"
    offsets = [(0, 1), (1, 3), (3, 5), (5, 8), (8, 12), (12, 14)]
    window = ContextWindow(text=context_text, doc_start=100, token_ids=list(range(6)),
                           token_offsets=[(100 + s, 100 + e) for s, e in offsets], truncated=False)
    units = build_unit_map(window, "python")
    assert [u.text for u in units.units] == ["x = 1", "y"]
    weights = units.weights
    assert torch.allclose(weights[1:].sum(-1), torch.ones(5, dtype=torch.float64))
    # the blank lines belong to the line before them; " y" to y's line
    assert weights[3, 0] == 1.0 and weights[5, 1] == 1.0


def _reference_position_scores(lm, record, index, objective="logprob"):
    """One full forward and backward per token, no graph reuse, no batching."""
    job = TeacherForced.of(lm, record)
    end = job.target_position(index) + 1
    embeds = lm.model.get_input_embeddings()(job.ids[:end]).detach().requires_grad_(True)
    with torch.enable_grad():
        logits = lm.model(inputs_embeds=embeds.unsqueeze(0), logits_to_keep=1).logits[0, -1].float()
        target = job.target_id(index)
        if objective == "logprob":
            value = torch.log_softmax(logits, -1)[target]
        else:
            runner = record.tokens[index].runner_up().token_id
            value = logits[target] - logits[runner]
        (grad,) = torch.autograd.grad(value, embeds)
    return (grad * embeds.detach()).sum(-1)


@pytest.mark.parametrize("method,objective", [("input_x_gradient", "logprob"), ("contrastive", "margin")])
def test_gradient_rows_match_a_per_token_reference(tiny_lm, record, method, objective):
    fresh = _fresh(record)
    indices = list(range(len(fresh.tokens)))
    rows = attribute_rows(tiny_lm, fresh, indices, method, language="python")
    units = build_unit_map(fresh.context, "python")
    context_len = len(fresh.context.token_ids)
    # the batched rows are all computed; a spread of them is checked against the slow reference
    for index in sorted({0, 1, len(indices) // 2, len(indices) - 1}):
        reference = _reference_position_scores(tiny_lm, fresh, index, objective)
        expected = units.aggregate(reference[:context_len].double())
        expected = expected / expected.abs().sum()
        assert torch.allclose(torch.tensor(rows[index].scores, dtype=torch.float64), expected, atol=1e-4), index
        assert sum(abs(s) for s in rows[index].scores) == pytest.approx(1.0)
        assert 0.0 <= rows[index].generated_share <= 1.0
        assert rows[index].generated_share == 0.0 if index == 0 else True


def test_gradient_norm_rows_are_magnitudes(tiny_lm, record):
    rows = attribute_rows(tiny_lm, _fresh(record), [0, 2], "gradient_norm", language="python")
    for row in rows.values():
        assert min(row.scores) >= 0.0 and sum(row.scores) == pytest.approx(1.0)


def test_integrated_gradients_is_complete(tiny_lm, record):
    fresh = _fresh(record)
    index = 2
    method = make_method("integrated_gradients", steps=64)
    row = attribute_rows(tiny_lm, fresh, [index], method, language="python")[index]
    # completeness: the attributions add up to log p(x) - log p(baseline), the baseline being
    # every non-sink context token replaced by the space token (computed here from token ids)
    job = TeacherForced.of(tiny_lm, fresh)
    end = job.target_position(index) + 1
    ids = job.ids[:end].clone()
    baseline_ids = ids.clone()
    baseline_ids[1 : job.context_len] = job.filler_id()
    with torch.no_grad():
        logp = [torch.log_softmax(tiny_lm.model(input_ids=x.unsqueeze(0)).logits[0, -1].float(), -1)[job.target_id(index)]
                for x in (ids, baseline_ids)]
    difference = float(logp[0] - logp[1])
    assert row.raw_sum == pytest.approx(difference, abs=0.02 + 0.02 * abs(difference))
    assert row.extra["completeness_delta"] < 0.02 + 0.02 * abs(difference)


def test_occlusion_rows_are_log_probability_drops(tiny_lm, record):
    fresh = _fresh(record)
    index = 1
    row = attribute_rows(tiny_lm, fresh, [index], "occlusion", language="python")[index]
    units = build_unit_map(fresh.context, "python")
    job = TeacherForced.of(tiny_lm, fresh)
    end = job.target_position(index) + 1
    target_unit = next(u for u, unit in enumerate(units.units) if unit.text == "values = {}")
    ids = job.ids[:end].clone()
    occluded = ids.clone()
    occluded[units.unit_positions[target_unit]] = job.filler_id()
    with torch.no_grad():
        logp = [torch.log_softmax(tiny_lm.model(input_ids=x.unsqueeze(0)).logits[0, -1].float(), -1)[job.target_id(index)]
                for x in (ids, occluded)]
    assert row.scores[target_unit] * row.total_abs == pytest.approx(float(logp[0] - logp[1]), abs=1e-4)
    assert not row.rank_by_abs


def test_rollout_switches_sdpa_to_eager_and_back(tiny_lm, record):
    assert tiny_lm.model.config._attn_implementation == "sdpa"
    rows = attribute_rows(tiny_lm, _fresh(record), [0, 1], "attention_rollout", language="python")
    assert tiny_lm.model.config._attn_implementation == "sdpa"
    for row in rows.values():
        assert min(row.scores) >= 0.0 and sum(row.scores) == pytest.approx(1.0)
        assert "eager" in row.extra["attention"]


def _value_norm_reference(lm, ids: torch.Tensor, target: int) -> torch.Tensor:
    """Kobayashi et al.'s ||alpha * W_O^h v_j|| summed over heads and layers, computed head by
    head and position by position from the layers' own inputs and weights (no hooks)."""
    model = lm.model
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(input_ids=ids.unsqueeze(0), output_attentions=True, output_hidden_states=True)
    finally:
        model.set_attn_implementation("sdpa")
    config = model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = config.hidden_size // heads
    scores = torch.zeros(target + 1, dtype=torch.float64)
    for number, layer in enumerate(model.model.layers):
        attention = layer.self_attn
        value = attention.v_proj(layer.input_layernorm(out.hidden_states[number][0])).detach()  # [L, kv_heads*head_dim]
        for h in range(heads):
            kv = h // (heads // kv_heads)
            w_o = attention.o_proj.weight.detach()[:, h * head_dim : (h + 1) * head_dim]
            for j in range(target + 1):
                written = w_o @ value[j, kv * head_dim : (kv + 1) * head_dim]
                scores[j] += float(out.attentions[number][0, h, target, j]) * float(written.norm())
    return scores


def test_value_norm_matches_a_head_by_head_reference_and_restores_sdpa(tiny_lm, record):
    job = TeacherForced.of(tiny_lm, record)
    method = make_method("value_norm")
    raw = method.compute(job, [1, 4], None)
    assert tiny_lm.model.config._attn_implementation == "sdpa"
    for index in (1, 4):
        target = job.target_position(index)
        reference = _value_norm_reference(tiny_lm, job.ids[: target + 1], target)
        assert torch.allclose(raw[index].position_scores, reference, rtol=1e-4, atol=1e-6)
    rows = attribute_rows(tiny_lm, _fresh(record), [0, 1, 2], "value_norm", language="python")
    for row in rows.values():
        assert min(row.scores) >= 0.0 and sum(row.scores) == pytest.approx(1.0)


def test_rows_are_cached_on_the_record_and_reused(tiny_lm, record):
    fresh = _fresh(record)
    first = attribute_rows(tiny_lm, fresh, [1], language="python")[1]
    # the tiny model has no calibration: its default is the best uncalibrated method
    assert fresh.attribution[1] is first and fresh.attribution_method == FALLBACK_METHOD
    assert attribute_rows(tiny_lm, fresh, [1, 1], language="python")[1] is first
    top = first.top(3)
    assert len(top) == 3 and abs(top[0][1]) >= abs(top[1][1]) >= abs(top[2][1])


def test_cancel_between_batches_returns_the_rows_done(tiny_lm, record):
    fresh = _fresh(record)
    cancel = threading.Event()
    base = make_method("input_x_gradient")

    class StopAfterFirstBatch:
        name, rank_by_abs, rows_per_batch = base.name, True, 2

        def compute(self, job, indices, unit_map):
            cancel.set()
            return base.compute(job, indices, unit_map)

    order = least_confident_order(fresh)
    rows = attribute_rows(tiny_lm, fresh, order, StopAfterFirstBatch(), cancel, language="python")
    assert list(rows) == order[:2]
    assert attribute_rows(tiny_lm, _fresh(record), [0], FALLBACK_METHOD, cancel) == {}


def test_matrix_covers_every_token(tiny_lm, record):
    fresh = _fresh(record)
    matrix = attribution_matrix(tiny_lm, fresh, language="python")
    assert matrix.complete and set(matrix.rows) == set(range(len(fresh.tokens)))
    tensor = matrix.as_tensor(len(fresh.tokens))
    assert torch.allclose(tensor.abs().sum(-1), torch.ones(len(fresh.tokens), dtype=torch.float64))


def test_bad_input_gives_clear_errors(tiny_lm, record):
    with pytest.raises(WhenceError, match="unknown attribution method"):
        attribute_rows(tiny_lm, _fresh(record), [0], "saliency_magic")
    with pytest.raises(WhenceError, match="outside the record"):
        attribute_rows(tiny_lm, _fresh(record), [len(record.tokens)])
    empty = _fresh(record)
    empty.context = ContextWindow(text="", doc_start=0, token_ids=[], token_offsets=[], truncated=False)
    with pytest.raises(WhenceError, match="context is empty"):
        attribute_rows(tiny_lm, empty, [0])
    with pytest.raises(WhenceError, match="at least one step"):
        make_method("integrated_gradients", steps=0)


def test_every_method_has_a_note():
    assert set(METHOD_NOTES) == set(METHODS) and DEFAULT_METHOD in METHODS
    assert all(METHOD_NOTES[m].strip() for m in METHODS)



def test_a_rows_top_sources_are_the_strongest_by_size_or_sign():
    # (this replaces an `isinstance(row.top(1), list)` that could not fail, issue 23)
    scores = [0.1, -0.5, 0.0, 0.3, -0.1]
    by_size = AttributionRow(0, "x", scores, -0.2, 1.0)
    assert by_size.top(3) == [(1, -0.5), (3, 0.3), (0, 0.1)]  # |score|, ties in document order
    by_sign = AttributionRow(0, "x", scores, -0.2, 1.0, rank_by_abs=False)
    assert by_sign.top(3) == [(3, 0.3), (0, 0.1), (4, -0.1)]
    assert by_size.top(10) == [(1, -0.5), (3, 0.3), (0, 0.1), (4, -0.1)]  # a zero is never a source
    assert by_sign.ranking() == [3, 0, 2, 4, 1] and by_size.ranking() == [1, 3, 0, 4, 2]


def test_the_server_setting_offers_exactly_the_engine_methods():
    from whence_ls.lsp.runtime.settings import ATTRIBUTION_CHOICES

    assert sorted(ATTRIBUTION_CHOICES) == sorted((*METHODS, "none"))
