"""A completion whose window the cache does not hold is cut to what the measured prefill rate
allows (issue 20's bound on a busy machine); once the full window is warmed, the next completion
reads it whole, and every answer is exactly what a fresh prefill of its own window gives."""

from __future__ import annotations

import inspect
import textwrap

import pytest

from whence_ls.engine.generation import complete_at, warm_prefix
from whence_ls.engine.windows import COLD_FLOOR_TOKENS
from whence_ls.engine.prefill_rate import MIN_TOKENS, PrefillRate

from test_prefix_cache import assert_same_generation, fresh_equivalent

SOURCE = inspect.getsource(textwrap)


class SlowMachine(PrefillRate):
    """A rate that stays where the test puts it (the tiny model prefills far faster than a real
    one on a busy machine, and every prefill would move a measured rate)."""

    def __init__(self, seconds_per_token: float) -> None:
        super().__init__()
        self.seconds_per_token = seconds_per_token

    def observe(self, tokens: int, seconds: float) -> None:
        pass


@pytest.fixture
def slow_lm(tiny_lm):
    measured = tiny_lm.prefill_rate
    tiny_lm.prefix_cache.clear()
    tiny_lm.prefill_rate = SlowMachine(0.01)  # 10 ms a token: 0.6 s holds 60, below the floor
    yield tiny_lm
    tiny_lm.prefill_rate = measured
    tiny_lm.prefix_cache.clear()


def prefix_tokens(result) -> int:
    segment = result.context.prefix_segment()
    return segment.end_token - segment.first_token


def test_the_rate_follows_the_newest_prefills():
    rate = PrefillRate()
    assert rate.tokens_within(1.0) is None  # nothing measured: no bound
    rate.observe(MIN_TOKENS - 1, 10.0)  # too short to say anything
    assert rate.tokens_within(1.0) is None
    rate.observe(1000, 1.0)
    assert rate.tokens_within(0.5) == 500
    rate.observe(500, 1.0)  # the machine got busy: halfway to the new rate at once
    assert rate.tokens_within(1.0) == int(1.0 / 0.0015)


def test_a_cold_jump_reads_a_short_window_and_the_warmed_full_window_serves_the_next(slow_lm):
    lm = slow_lm
    cursor = SOURCE.index("\n", 9000) + 1
    full = complete_at(lm, SOURCE, cursor, language="python", max_new_tokens=6, context_tokens=1024)
    assert prefix_tokens(full) > 600  # the window a completion reads without the bound

    short = complete_at(lm, SOURCE, cursor, language="python", max_new_tokens=6, context_tokens=1024,
                        reuse_prefix=True, cold_prefill_s=0.6)
    assert short.context.shortened and short.context.truncated
    assert COLD_FLOOR_TOKENS - 40 <= prefix_tokens(short) <= COLD_FLOOR_TOKENS  # the cut falls at a line start
    assert short.context.doc_start > full.context.doc_start
    assert_same_generation(short, fresh_equivalent(lm, SOURCE, cursor, short, 6))

    # typing on before the warm-up ran: the short cut is kept, so the prefix is reused
    typed = SOURCE[:cursor] + "    " + SOURCE[cursor:]
    again = complete_at(lm, typed, cursor + 4, language="python", max_new_tokens=6, context_tokens=1024,
                        reuse_prefix=True, cold_prefill_s=0.6)
    assert again.context.shortened and again.context.doc_start == short.context.doc_start
    assert again.timings["reused_tokens"] >= len(short.context.token_ids) - 3

    # the server warms the full window in the background; the next completion reads it whole
    warm_prefix(lm, typed, cursor + 4, max_new_tokens=6, context_tokens=1024)
    warmed = complete_at(lm, typed, cursor + 4, language="python", max_new_tokens=6, context_tokens=1024,
                         reuse_prefix=True, cold_prefill_s=0.6)
    assert not warmed.context.shortened and prefix_tokens(warmed) > 600
    assert warmed.timings["reused_tokens"] >= len(warmed.context.token_ids) - 3
    assert_same_generation(warmed, fresh_equivalent(lm, typed, cursor + 4, warmed, 6))


def test_without_a_measured_rate_or_a_bound_the_window_is_whole(tiny_lm):
    tiny_lm.prefix_cache.clear()
    measured = tiny_lm.prefill_rate
    tiny_lm.prefill_rate = PrefillRate()  # nothing measured yet
    try:
        cursor = SOURCE.index("\n", 9000) + 1
        unmeasured = complete_at(tiny_lm, SOURCE, cursor, language="python", max_new_tokens=4, context_tokens=1024,
                                 reuse_prefix=True, cold_prefill_s=0.6)
        assert not unmeasured.context.shortened and prefix_tokens(unmeasured) > 600
        tiny_lm.prefix_cache.clear()
        tiny_lm.prefill_rate = SlowMachine(0.01)
        unbounded = complete_at(tiny_lm, SOURCE, cursor, language="python", max_new_tokens=4, context_tokens=1024,
                                reuse_prefix=True)
        assert not unbounded.context.shortened and prefix_tokens(unbounded) > 600
    finally:
        tiny_lm.prefill_rate = measured
        tiny_lm.prefix_cache.clear()


def test_the_rate_is_measured_before_the_first_completion(tiny_model_dir):
    from whence_ls.engine.generation import measure_prefill_rate
    from whence_ls.engine.loading import load_model

    lm = load_model(str(tiny_model_dir), "cpu")
    assert lm.prefill_rate.tokens_within(1.0) is None
    measure_prefill_rate(lm)
    assert lm.prefill_rate.seconds_per_token > 0 and lm.prefill_rate.tokens_within(1.0) > 0


@pytest.mark.parametrize("which", ["tiny_lm", "tiny_fim_lm"])
def test_a_window_that_starts_at_the_top_of_the_file_is_cut_too(which, request):
    """Near the top of a file the whole window is the file's start (no budget cut); a cold one
    is cut all the same, with the code after the cursor kept for a fill-in-the-middle model."""
    lm = request.getfixturevalue(which)
    measured = lm.prefill_rate
    lm.prefix_cache.clear()
    lm.prefill_rate = SlowMachine(0.01)
    try:
        cursor = SOURCE.index("\n", 1400) + 1
        full = complete_at(lm, SOURCE, cursor, language="python", max_new_tokens=4, context_tokens=1024)
        assert full.context.doc_start == 0 and prefix_tokens(full) > COLD_FLOOR_TOKENS + 60
        short = complete_at(lm, SOURCE, cursor, language="python", max_new_tokens=4, context_tokens=1024,
                            reuse_prefix=True, cold_prefill_s=0.6)
        assert short.context.shortened and short.context.doc_start > 0
        assert COLD_FLOOR_TOKENS - 40 <= prefix_tokens(short) <= COLD_FLOOR_TOKENS
        roles = [s.role for s in short.context.all_segments()]
        assert roles.count("suffix") == (1 if which == "tiny_fim_lm" else 0)
        assert_same_generation(short, fresh_equivalent(lm, SOURCE, cursor, short, 4))
    finally:
        lm.prefill_rate = measured
        lm.prefix_cache.clear()


def _repository_tokens(result) -> int:
    return sum(s.end_token - s.first_token for s in result.context.all_segments() if s.role == "repository")


def test_other_files_snippets_give_way_before_the_document_in_a_cold_window(slow_lm):
    """A newly opened file's first completion: the cache holds neither the snippets of other
    files nor the document. The snippets (up to 384 tokens on top of the document) are left out
    before the document is cut below the floor, the keystroke after reuses that window, and the
    warmed full window brings them back; a window whose snippets the cache holds keeps them."""
    from whence_ls.engine.prompt import Snippet

    lm = slow_lm
    other = inspect.getsource(inspect)[:6000]
    snippets = [Snippet("pkg/inspect_part.py", other, uri="file:///w/pkg/inspect_part.py")]
    cursor = SOURCE.index("\n", 9000) + 1
    kwargs = dict(language="python", max_new_tokens=6, context_tokens=1024, snippets=snippets)
    full = complete_at(lm, SOURCE, cursor, **kwargs)
    assert _repository_tokens(full) > 200  # the window a completion reads without the bound

    short = complete_at(lm, SOURCE, cursor, reuse_prefix=True, cold_prefill_s=0.6, **kwargs)
    assert short.context.shortened and short.context.repository_room == 0
    assert _repository_tokens(short) == 0 and "repository" not in short.context.prompt_format
    assert len(short.context.token_ids) <= COLD_FLOOR_TOKENS + 2  # the document's floor, and BOS
    assert_same_generation(short, fresh_equivalent(lm, SOURCE, cursor, short, 6))

    # the next keystroke keeps that cut (snippets out, same start), so it reads the cached prefix
    typed = SOURCE[:cursor] + "d" + SOURCE[cursor:]
    again = complete_at(lm, typed, cursor + 1, reuse_prefix=True, cold_prefill_s=0.6, **kwargs)
    assert again.context.shortened and again.context.repository_room == 0 and _repository_tokens(again) == 0
    assert again.context.doc_start == short.context.doc_start
    assert again.timings["reused_tokens"] >= len(short.context.token_ids) - 3

    # warmed in the background, the full window (snippets and all) serves the next completion
    warm_prefix(lm, typed, cursor + 1, max_new_tokens=6, context_tokens=1024, language="python", snippets=snippets)
    warmed = complete_at(lm, typed, cursor + 1, reuse_prefix=True, cold_prefill_s=0.6, **kwargs)
    assert not warmed.context.shortened and _repository_tokens(warmed) == _repository_tokens(full)
    assert warmed.timings["reused_tokens"] >= len(warmed.context.token_ids) - 3

    # a jump up the same file: the cache holds the snippets, so they stay and the document is cut
    jump = SOURCE.index("\n", 4000) + 1
    there = complete_at(lm, typed, jump, reuse_prefix=True, cold_prefill_s=0.6, **kwargs)
    assert there.context.shortened and there.context.repository_room is None
    assert _repository_tokens(there) == _repository_tokens(full)
    assert there.timings["reused_tokens"] >= there.context.prefix_segment().first_token - 3
    assert_same_generation(there, fresh_equivalent(lm, typed, jump, there, 6))


def test_snippets_get_what_a_short_document_leaves_of_the_bound(slow_lm):
    """Near the top of a file the document is shorter than the bound: the snippets get the rest."""
    from whence_ls.engine.prompt import Snippet

    lm = slow_lm
    lm.prefill_rate = SlowMachine(0.001)  # 0.6 s holds 600 tokens: the document and some snippets
    other = inspect.getsource(inspect)[:6000]
    snippets = [Snippet("pkg/inspect_part.py", other)]
    cursor = SOURCE.index("\n", 1000) + 1
    kwargs = dict(language="python", max_new_tokens=4, context_tokens=1024, snippets=snippets)
    full = complete_at(lm, SOURCE, cursor, **kwargs)
    assert full.context.doc_start == 0 and len(full.context.token_ids) > 600
    short = complete_at(lm, SOURCE, cursor, reuse_prefix=True, cold_prefill_s=0.6, **kwargs)
    assert short.context.shortened and short.context.doc_start == 0  # the whole document
    assert prefix_tokens(short) == prefix_tokens(full)
    assert 0 < _repository_tokens(short) < _repository_tokens(full)
    assert len(short.context.token_ids) <= 600
    assert_same_generation(short, fresh_equivalent(lm, SOURCE, cursor, short, 4))
