"""Prefix reuse: a completion that reuses an earlier prompt's keys and values gives exactly what
a fresh prefill gives, and typing down a file long enough to need cutting keeps reusing."""

from __future__ import annotations

import inspect
import textwrap
import threading

import pytest

from whence_ls.engine.context import build_context
from whence_ls.engine.generation import complete_at, generate
from whence_ls.engine.prefix_cache import MIN_SHARED_TOKENS, PrefixCache
from whence_ls.engine.stopping import BlockStopper

# real code, long enough that a 256-token budget must cut it
SOURCE = inspect.getsource(textwrap)


@pytest.fixture
def lm(tiny_lm):
    tiny_lm.prefix_cache.clear()
    yield tiny_lm
    tiny_lm.prefix_cache.clear()


def assert_same_generation(reused, fresh) -> None:
    assert [t.token_id for t in reused.tokens] == [t.token_id for t in fresh.tokens]
    assert reused.text == fresh.text and reused.stop_reason == fresh.stop_reason
    for a, b in zip(reused.tokens, fresh.tokens):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert a.entropy == pytest.approx(b.entropy, abs=1e-4)
        assert [x.token_id for x in a.alternatives] == [x.token_id for x in b.alternatives]


def fresh_equivalent(lm, text: str, cursor: int, result, max_new_tokens: int):
    """What `complete_at` would return for `result`'s own context with no cache at all."""
    context = result.context
    context_end = context.doc_start + len(context.text)
    heal = text[context_end : context_end + result.timings["healed_chars"]]
    line_start = text.rfind("\n", 0, cursor) + 1
    line_end = text.find("\n", cursor)
    single_line = bool(text[cursor : len(text) if line_end == -1 else line_end].strip())
    stopper = BlockStopper(text[line_start:cursor], "python", single_line=single_line)
    return generate(lm, context, max_new_tokens=max_new_tokens, stopper=stopper, heal=heal)


def test_generation_from_a_reused_prefix_equals_a_fresh_prefill(lm):
    cache = PrefixCache()
    end = SOURCE.index("class TextWrapper")
    first = build_context(lm.tokenizer, SOURCE, end, 400)
    generate(lm, first, max_new_tokens=8, prefix_cache=cache)
    # the user typed on: the next context extends the first
    later = build_context(lm.tokenizer, SOURCE, end + 40, 400, start_floor=first.doc_start)
    assert later.token_ids[: len(first.token_ids) - 1] == first.token_ids[:-1]
    reused = generate(lm, later, max_new_tokens=16, prefix_cache=cache)
    assert reused.timings["reused_tokens"] >= len(first.token_ids) - 2
    assert_same_generation(reused, generate(lm, later, max_new_tokens=16))
    # and backwards: a shorter context is served by cropping the cache
    earlier = build_context(lm.tokenizer, SOURCE, end - 30, 400, start_floor=first.doc_start)
    cropped = generate(lm, earlier, max_new_tokens=16, prefix_cache=cache)
    assert cropped.timings["reused_tokens"] == len(earlier.token_ids) - 1
    assert_same_generation(cropped, generate(lm, earlier, max_new_tokens=16))


def test_typing_down_a_long_file_reuses_the_window_and_matches_fresh_results(lm):
    start = SOURCE.index("    def _munge_whitespace")
    cursors = [SOURCE.index("\n", start + step) for step in range(0, 900, 90)]
    results = []
    for cursor in cursors:
        result = complete_at(lm, SOURCE, cursor, language="python", max_new_tokens=10, context_tokens=256, reuse_prefix=True)
        assert len(result.context.token_ids) <= 256
        assert result.context.truncated  # the file is far longer than the budget
        assert_same_generation(result, fresh_equivalent(lm, SOURCE, cursor, result, 10))
        results.append(result)
    reused = [r.timings["reused_tokens"] for r in results]
    assert reused[0] == 0
    # most later requests reuse what the one before ran; a few move the window when it is full
    assert sum(1 for n in reused[1:] if n >= MIN_SHARED_TOKENS) >= len(reused[1:]) // 2, reused
    starts = {r.context.doc_start for r in results}
    assert len(starts) < len(results)  # the window start stays put between moves


def test_an_edit_inside_the_window_reuses_only_the_text_before_it(lm):
    cursor = SOURCE.index("\n", SOURCE.index("    def _split("))
    first = complete_at(lm, SOURCE, cursor, language="python", max_new_tokens=8, context_tokens=300, reuse_prefix=True)
    # rename a word two lines above the cursor
    edit_at = SOURCE.rfind("\n", 0, SOURCE.rfind("\n", 0, cursor)) + 1
    edited = SOURCE[:edit_at] + "    # edited here\n" + SOURCE[edit_at:]
    moved = cursor + len("    # edited here\n")
    second = complete_at(lm, edited, moved, language="python", max_new_tokens=8, context_tokens=300, reuse_prefix=True)
    assert second.context.doc_start == first.context.doc_start
    assert MIN_SHARED_TOKENS <= second.timings["reused_tokens"] < len(second.context.token_ids) - 3
    assert_same_generation(second, fresh_equivalent(lm, edited, moved, second, 8))


def test_a_cancelled_generation_leaves_a_usable_cache(lm):
    cursor = SOURCE.index("\n", SOURCE.index("    def _wrap_chunks"))
    cancel = threading.Event()
    cancel.set()  # stops after the first token
    stopped = complete_at(lm, SOURCE, cursor, language="python", max_new_tokens=10, context_tokens=256, cancel=cancel, reuse_prefix=True)
    assert stopped.stop_reason == "cancelled"
    again = complete_at(lm, SOURCE, cursor, language="python", max_new_tokens=10, context_tokens=256, reuse_prefix=True)
    assert again.timings["reused_tokens"] == len(again.context.token_ids) - 1
    assert_same_generation(again, fresh_equivalent(lm, SOURCE, cursor, again, 10))


def test_other_documents_do_not_share_and_the_oldest_is_evicted(lm):
    cache = lm.prefix_cache
    documents = [f"# document {n}\n" + SOURCE[n * 700 :] for n in range(cache.capacity + 1)]
    for document in documents:
        result = complete_at(lm, document, 1500, language="python", max_new_tokens=4, context_tokens=200, reuse_prefix=True)
        assert result.timings["reused_tokens"] == 0
    assert len(cache.anchors()) == cache.capacity
    # the most recent documents are still served from the cache, the first one is not
    assert complete_at(lm, documents[-1], 1500, language="python", max_new_tokens=4, context_tokens=200, reuse_prefix=True).timings["reused_tokens"] > 0
    assert complete_at(lm, documents[0], 1500, language="python", max_new_tokens=4, context_tokens=200, reuse_prefix=True).timings["reused_tokens"] == 0


def test_without_reuse_nothing_is_cached(lm):
    complete_at(lm, SOURCE, 2000, language="python", max_new_tokens=4, context_tokens=200)
    assert lm.prefix_cache.anchors() == []


def test_warming_a_file_lets_its_first_completion_run_only_the_tail(lm):
    """A warm-up at didOpen prefills the window; the first completion then reuses all but its
    last tokens and gives exactly what a fresh prefill gives. A cancelled warm-up stops between
    chunks and keeps what it ran."""
    from whence_ls.engine.generation import WARM_CHUNK_TOKENS, warm_prefix

    text = SOURCE[:3000]
    cursor = text.rindex("\n", 0, 2600) + 1
    cancel = threading.Event()
    cancel.set()
    assert warm_prefix(lm, text, len(text), max_new_tokens=8, context_tokens=1024, cancel=cancel) == 0
    cached = warm_prefix(lm, text, len(text), max_new_tokens=8, context_tokens=1024)
    assert cached > WARM_CHUNK_TOKENS  # several chunks ran
    result = complete_at(lm, text, cursor, language="python", max_new_tokens=8, context_tokens=1024, reuse_prefix=True)
    assert result.timings["reused_tokens"] >= len(result.context.token_ids) - 3
    assert_same_generation(result, fresh_equivalent(lm, text, cursor, result, 8))


def test_a_copy_of_a_cached_prefix_leaves_the_entry_and_outlives_what_the_next_completion_writes(lm):
    first = complete_at(lm, SOURCE, 2000, language="python", max_new_tokens=4, context_tokens=200, reuse_prefix=True)
    ids = list(first.context.token_ids)
    copied = lm.prefix_cache.copy_of_prefix(ids, len(ids) - 10)
    assert copied is not None and copied[0][0].shape[2] == len(ids) - 10
    snapshot = [k.clone() for k, _ in copied]
    # another prefix of the same ids: not held, so nothing comes back
    assert lm.prefix_cache.copy_of_prefix([ids[0] + 1] + ids[1:], len(ids) - 10) is None
    assert lm.prefix_cache.copy_of_prefix(ids + [0] * 500, len(ids) + 500) is None
    # an edit inside the window: the next completion takes the entry and writes over most of it
    edited = SOURCE[:1700] + "# edited\n" + SOURCE[1700:]
    complete_at(lm, edited, 2009, language="python", max_new_tokens=4, context_tokens=200, reuse_prefix=True)
    assert all((k == s).all() for (k, _), s in zip(copied, snapshot))


def test_a_jump_back_up_the_file_keeps_the_window_below_for_the_jump_back_down(lm):
    """Going back up shares only the start of the cached prompt: the entry stays whole and the
    earlier completion gets a copy, so returning to the first place runs only its last tokens.
    Both answers are exactly what a fresh prefill gives."""
    text = SOURCE[:3000]
    far = text.rindex("\n", 0, 2800) + 1
    near = text.rindex("\n", 0, 1200) + 1
    first = complete_at(lm, text, far, language="python", max_new_tokens=6, context_tokens=1024, reuse_prefix=True)
    assert first.context.doc_start == 0  # one window holds both places
    up = complete_at(lm, text, near, language="python", max_new_tokens=6, context_tokens=1024, reuse_prefix=True)
    assert up.timings["reused_tokens"] >= len(up.context.token_ids) - 3
    assert_same_generation(up, fresh_equivalent(lm, text, near, up, 6))
    down = complete_at(lm, text, far, language="python", max_new_tokens=6, context_tokens=1024, reuse_prefix=True)
    assert down.timings["reused_tokens"] >= len(down.context.token_ids) - 3
    assert_same_generation(down, fresh_equivalent(lm, text, far, down, 6))
    assert_same_generation(down, first)


def test_a_kept_entry_is_not_written_over_by_the_completion_that_got_its_copy(lm):
    text = SOURCE[:3000]
    far = text.rindex("\n", 0, 2800) + 1
    complete_at(lm, text, far, language="python", max_new_tokens=4, context_tokens=1024, reuse_prefix=True)
    entry = lm.prefix_cache._entries[-1]
    held = entry.cache.get_seq_length()
    keys = entry.cache.layers[0].keys.clone()
    complete_at(lm, text, text.rindex("\n", 0, 900) + 1, language="python", max_new_tokens=4, context_tokens=1024,
                reuse_prefix=True)
    assert entry in lm.prefix_cache._entries and entry.cache.get_seq_length() == held
    assert (entry.cache.layers[0].keys == keys).all()


def test_a_jump_back_with_transformers_cache_keeps_the_entry_too(tiny_model_dir):
    """The model's own forward (a family the fast decoder does not run) keeps a DynamicCache:
    the kept entry is copied the same way."""
    from whence_ls.engine.loading import load_model

    own = load_model(str(tiny_model_dir), "cpu", decoder="transformers")
    text = SOURCE[:3000]
    far = text.rindex("\n", 0, 2800) + 1
    first = complete_at(own, text, far, language="python", max_new_tokens=4, context_tokens=1024, reuse_prefix=True)
    complete_at(own, text, text.rindex("\n", 0, 1200) + 1, language="python", max_new_tokens=4, context_tokens=1024,
                reuse_prefix=True)
    down = complete_at(own, text, far, language="python", max_new_tokens=4, context_tokens=1024, reuse_prefix=True)
    assert down.timings["reused_tokens"] >= len(down.context.token_ids) - 3
    assert_same_generation(down, first)
