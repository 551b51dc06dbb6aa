"""A completion cut at its time budget, and its rest offered from what the model generated.

On the embedded model (a random tiny model rarely writes a newline): the part shown at the
deadline is whole lines of whole tokens, and the rest is an exact record of its own, its
context being what the model saw when it chose those tokens.
"""

from __future__ import annotations

import time

import pytest
import torch

from whence_ls.engine.continuation import rest_of
from whence_ls.engine.generation import complete_at

SOURCE = '''import json


def load_ledger(path):
    """Read a ledger file and return the total of each account."""
    with open(path) as handle:
        entries = json.load(handle)
    totals = {}
    for entry in entries:
        '''


def _teacher_forced_logprobs(lm, scored) -> list[float]:
    ids = list(scored.context.token_ids) + [t.token_id for t in scored.tokens]
    with torch.inference_mode():
        logp = torch.log_softmax(lm.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    n = len(scored.context.token_ids)
    return [float(logp[n + i - 1, t.token_id]) for i, t in enumerate(scored.tokens)]


@pytest.fixture(scope="module")
def cut_completion(embedded_lm):
    parts = []
    final = complete_at(embedded_lm, SOURCE, len(SOURCE), language="python", max_new_tokens=48,
                        deadline=time.perf_counter(), on_partial=parts.append)
    return final, parts


def test_past_the_deadline_every_line_end_gives_whole_lines_of_whole_tokens(cut_completion):
    final, parts = cut_completion
    assert "\n" in final.text, "the bench source must give a multi-line completion"
    assert parts, "a deadline already passed must show the first line at once"
    previous = ""
    for part in parts:
        assert part.stop_reason == "deadline"
        assert final.text.startswith(part.text) and len(part.text) > len(previous)
        assert final.text[len(part.text)] == "\n"  # cut right before a line begins
        assert not part.text[-1].isspace()
        assert "".join(t.text for t in part.tokens) == part.text
        # whole tokens: the part's tokens are the final's first ones, text and score alike
        for mine, theirs in zip(part.tokens, final.tokens):
            assert (mine.token_id, mine.text, mine.logprob) == (theirs.token_id, theirs.text, theirs.logprob)
        previous = part.text


def test_the_rest_after_the_shown_part_is_an_exact_record(embedded_lm, cut_completion):
    final, parts = cut_completion
    heal = SOURCE[len(SOURCE) - int(final.timings["healed_chars"]):]
    shown = parts[0]
    rest = rest_of(final, len(shown.text), heal)
    assert rest is not None and shown.text + rest.text == final.text
    assert rest.doc_start == final.doc_start + len(shown.text)
    assert "".join(t.text for t in rest.tokens) == rest.text
    # the context is the document as it now reads: the source plus the shown part
    assert rest.context.text.endswith(heal + shown.text)
    assert SOURCE + shown.text == SOURCE[: rest.context.doc_start] + rest.context.text + SOURCE[len(SOURCE):]
    # and every score is the model's own for that context
    forced = _teacher_forced_logprobs(embedded_lm, rest)
    assert max(abs(a - t.logprob) for a, t in zip(forced, rest.tokens)) < 1e-3
    # the shown tokens' places cover the healed text and the shown part, in order, once
    spans = rest.context.token_offsets[-len(shown.tokens):]
    assert spans[0][0] == len(SOURCE) - len(heal) and spans[-1][1] == len(SOURCE) + len(shown.text)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    for token, (start, end) in zip(shown.tokens, spans):
        assert (SOURCE + shown.text)[start:end].endswith(token.text)


def test_typing_into_a_token_keeps_that_token_as_the_first_of_the_rest(embedded_lm, cut_completion):
    final, _ = cut_completion
    heal = SOURCE[len(SOURCE) - int(final.timings["healed_chars"]):]
    inside = next(t for t in final.tokens[1:] if len(t.text) >= 3)
    typed = inside.start + 1
    rest = rest_of(final, typed, heal)
    assert rest.tokens[0].token_id == inside.token_id and rest.tokens[0].text == inside.text[1:]
    assert rest.timings["healed_chars"] == 1
    forced = _teacher_forced_logprobs(embedded_lm, rest)
    assert max(abs(a - t.logprob) for a, t in zip(forced, rest.tokens)) < 1e-3


def test_nothing_left_and_bad_offsets(cut_completion):
    final, _ = cut_completion
    assert rest_of(final, len(final.text)) is None
    assert rest_of(final, 0) is final
    with pytest.raises(ValueError):
        rest_of(final, len(final.text) + 1)


def test_no_deadline_or_a_single_line_completion_shows_nothing_early(embedded_lm):
    parts = []
    complete_at(embedded_lm, SOURCE, len(SOURCE), language="python", max_new_tokens=16, on_partial=parts.append)
    assert parts == []
    text = "def add(a, b):\n    return a + b)\n"
    cursor = text.index("a + b") + 4  # inside the line: the rest of the line ends the completion
    complete_at(embedded_lm, text, cursor, language="python", max_new_tokens=16, deadline=0.0, on_partial=parts.append)
    assert parts == []


def test_rows_read_while_generating_equal_the_rows_of_a_forward_afterwards(embedded_lm):
    """The calibrated estimator's rows, read from the decoding forwards (drafts included), are
    the ones a teacher-forced forward gives afterwards; so are the rest's after a cut."""
    import copy

    from whence_ls.engine.attribution.api import attribute_rows

    source = SOURCE + "totals[entry['account']] = totals.get(entry['account'], 0) + entry['amount']\n    return totals\n\n\ndef total_of(entries, account):\n    for entry in entries:\n        "
    parts = []
    final = complete_at(embedded_lm, source, len(source), language="python", max_new_tokens=40, live_rows=True,
                        deadline=time.perf_counter(), on_partial=parts.append)
    assert final.timings["accepted_draft_tokens"] > 0, "the case must exercise drafts"
    assert sorted(final.live_rows) == list(range(len(final.tokens)))
    heal = source[len(source) - int(final.timings["healed_chars"]):]
    records = [final, parts[0], rest_of(final, len(parts[0].text), heal)]
    for record in records:
        assert sorted(record.live_rows) == list(range(len(record.tokens)))
        everything = list(range(len(record.tokens)))
        live = attribute_rows(embedded_lm, record, everything, "calibrated_attention", language="python")
        forced = copy.deepcopy(record)
        forced.attribution, forced.live_rows = {}, {}
        after = attribute_rows(embedded_lm, forced, everything, "calibrated_attention", language="python")
        for index in everything:
            assert live[index].scores == pytest.approx(after[index].scores, abs=1e-4)
            assert live[index].extra.get("copied_from_position") == after[index].extra.get("copied_from_position")
            assert live[index].extra.get("logit_lens") == after[index].extra.get("logit_lens")
