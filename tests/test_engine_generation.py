"""Scored generation on the tiny model: the recorded numbers are the model's own."""

from __future__ import annotations

import threading

import pytest
import torch

from whence_ls.engine.context import build_context
from whence_ls.engine.generation import complete_at, generate
from whence_ls.engine.healing import heal_context
from whence_ls.errors import WhenceError

SOURCE = '''import os


def list_python_files(root):
    """Return the paths of all .py files under root."""
    result = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
'''


def _teacher_forced(lm, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([ids])).logits[0].float()
    return torch.log_softmax(logits, dim=-1)


def assert_matches_teacher_forcing(lm, context, tokens) -> None:
    """Each generated token's logprob is the one a single forward over the whole sequence gives."""
    logp = _teacher_forced(lm, context.token_ids + [t.token_id for t in tokens])
    n = len(context.token_ids)
    for i, token in enumerate(tokens):
        assert token.logprob == pytest.approx(float(logp[n + i - 1][token.token_id]), abs=1e-4)


def test_logprobs_entropy_and_alternatives_match_a_teacher_forced_forward(tiny_lm):
    context = build_context(tiny_lm.tokenizer, SOURCE, len(SOURCE), 256)
    result = generate(tiny_lm, context, max_new_tokens=24)
    assert result.timings["generated_tokens"] == 24 or result.stop_reason == "eos"
    assert result.tokens, "the tiny model generated nothing"
    ids = context.token_ids + [t.token_id for t in result.tokens]
    logp = _teacher_forced(tiny_lm, ids)
    n = len(context.token_ids)
    for i, token in enumerate(result.tokens):
        row = logp[n + i - 1]
        assert token.logprob == pytest.approx(float(row[token.token_id]), abs=1e-4)
        entropy = float(-(row.exp() * row).sum())
        assert token.entropy == pytest.approx(entropy, abs=1e-4)
        top = torch.topk(row, 5)
        assert [a.token_id for a in token.alternatives] == top.indices.tolist()
        assert [a.logprob for a in token.alternatives] == pytest.approx(top.values.tolist(), abs=1e-4)
        # greedy: the choice is the most likely token
        assert token.token_id == token.alternatives[0].token_id


def test_token_texts_concatenate_to_the_completion_with_contiguous_spans(tiny_lm):
    result = complete_at(tiny_lm, SOURCE, len(SOURCE), language="python", max_new_tokens=24)
    assert "".join(t.text for t in result.tokens) == result.text
    position = 0
    for token in result.tokens:
        assert token.start == position and token.end == position + len(token.text)
        position = token.end


def test_healed_completion_still_matches_teacher_forcing(tiny_lm):
    # the cursor sits after indentation: the last context token is backed off and re-produced
    text = SOURCE + "            "
    context, heal = heal_context(build_context(tiny_lm.tokenizer, text, len(text), 256))
    assert heal and text.endswith(heal)
    result = generate(tiny_lm, context, max_new_tokens=12, heal=heal)
    full = tiny_lm.tokenizer.decode(
        [t.token_id for t in result.tokens], clean_up_tokenization_spaces=False
    )
    assert full.startswith(heal)
    assert result.doc_start == len(text)
    assert_matches_teacher_forcing(tiny_lm, context, result.tokens)


def test_cancel_flag_stops_within_one_token(tiny_lm):
    cancel = threading.Event()
    cancel.set()
    context = build_context(tiny_lm.tokenizer, SOURCE, len(SOURCE), 256)
    result = generate(tiny_lm, context, max_new_tokens=50, cancel=cancel)
    assert result.stop_reason == "cancelled"
    assert result.timings["generated_tokens"] == 1


LONG_SOURCE = SOURCE + "".join(f"            total_{i} = len(name) + {i}\n" for i in range(120))


def test_a_long_prefill_in_chunks_matches_a_teacher_forced_forward(tiny_lm):
    from whence_ls.engine.generation import PREFILL_CHUNK_TOKENS

    context = build_context(tiny_lm.tokenizer, LONG_SOURCE, len(LONG_SOURCE), 1500)
    assert len(context.token_ids) > 2 * PREFILL_CHUNK_TOKENS  # three forwards before the first token
    result = generate(tiny_lm, context, max_new_tokens=12)
    ids = context.token_ids + [t.token_id for t in result.tokens]
    logp = _teacher_forced(tiny_lm, ids)
    n = len(context.token_ids)
    for i, token in enumerate(result.tokens):
        assert token.token_id == int(torch.argmax(logp[n + i - 1]))  # the same greedy tokens
        assert token.logprob == pytest.approx(float(logp[n + i - 1][token.token_id]), abs=1e-4)


def test_a_cancel_during_the_prefill_frees_the_model_within_one_chunk(tiny_lm):
    """The cancel is set inside the first prefill forward (a hook, as a newer request would
    set it): no further forward runs, and the chunk that ran is kept for the next request."""
    from whence_ls.engine.generation import PREFILL_CHUNK_TOKENS
    from whence_ls.engine.prefix_cache import PrefixCache

    context = build_context(tiny_lm.tokenizer, LONG_SOURCE, len(LONG_SOURCE), 1500)
    cancel = threading.Event()
    forwards = []

    def count(_module, args, kwargs):
        forwards.append((kwargs["input"] if "input" in kwargs else args[0]).shape[-1])
        cancel.set()

    # every forward, the fast decoder's or transformers', starts by embedding what it is fed
    handle = tiny_lm.model.get_input_embeddings().register_forward_pre_hook(count, with_kwargs=True)
    cache = PrefixCache()
    try:
        result = generate(tiny_lm, context, max_new_tokens=50, cancel=cancel, prefix_cache=cache)
    finally:
        handle.remove()
    assert result.stop_reason == "cancelled" and result.tokens == []
    assert forwards == [PREFILL_CHUNK_TOKENS]
    _, reused = cache.take(context.token_ids)
    assert reused == PREFILL_CHUNK_TOKENS


def test_prompt_lookup_drafts_change_nothing_but_the_number_of_forwards(tiny_lm):
    """Drafted decoding gives plain greedy decoding's tokens and scores, and on text that
    repeats itself (a random tiny model loops, like real ones on repetitive code) it needs
    fewer forwards than tokens."""
    source = SOURCE + "".join(f"            paths.append(os.path.join(dirpath, name))\n" for _ in range(6))
    context = build_context(tiny_lm.tokenizer, source, len(source), 512)
    plain = generate(tiny_lm, context, max_new_tokens=40, draft_tokens=0)
    drafted = generate(tiny_lm, context, max_new_tokens=40, draft_tokens=4)
    assert [t.token_id for t in drafted.tokens] == [t.token_id for t in plain.tokens]
    for a, b in zip(drafted.tokens, plain.tokens):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4) and a.entropy == pytest.approx(b.entropy, abs=1e-4)
        assert [x.token_id for x in a.alternatives] == [x.token_id for x in b.alternatives]
    assert plain.timings["forwards"] == len(plain.tokens) + (plain.stop_reason in ("eos", "special_token"))
    assert drafted.timings["accepted_draft_tokens"] > 0
    assert drafted.timings["forwards"] < plain.timings["forwards"]
    # and both are what a teacher-forced forward over the whole sequence says
    assert_matches_teacher_forcing(tiny_lm, context, drafted.tokens)


def test_drafts_stop_where_plain_decoding_stops(tiny_lm):
    """A block end and the token cap inside an accepted draft run end the output at the same
    token as without drafts, and the prefix cache holds exactly the output's tokens."""
    from whence_ls.engine.prefix_cache import PrefixCache
    from whence_ls.engine.stopping import BlockStopper

    source = SOURCE + "".join(f"            paths.append(os.path.join(dirpath, name))\n" for _ in range(6))
    context = build_context(tiny_lm.tokenizer, source, len(source), 512)
    for cap in (1, 2, 3, 7, 13):
        runs = []
        for draft in (0, 4):
            cache = PrefixCache()
            result = generate(tiny_lm, context, max_new_tokens=cap, draft_tokens=draft, prefix_cache=cache,
                              stopper=BlockStopper(context.text.split("\n")[-1], "python"))
            entry = cache._entries[-1]
            assert entry.cache.get_seq_length() == len(entry.ids)  # cache and its ids agree
            runs.append(([t.token_id for t in result.tokens], result.stop_reason, entry.ids))
        assert runs[0] == runs[1], cap


def test_context_is_cut_to_the_budget_at_a_line_start_with_true_offsets(tiny_lm):
    text = "".join(f"value_{i} = compute({i}, 'x' * {i})\n" for i in range(400))
    context = build_context(tiny_lm.tokenizer, text, len(text), 100)
    assert context.truncated
    assert len(context.token_ids) <= 100
    assert context.doc_start > 0 and text[context.doc_start - 1] == "\n"
    assert context.text == text[context.doc_start :]
    pieces = [text[s:e] for s, e in context.token_offsets]
    assert "".join(pieces) == context.text
    assert tiny_lm.tokenizer.decode(context.token_ids) == context.text


def test_positions_outside_the_document_are_clear_errors(tiny_lm):
    with pytest.raises(WhenceError, match="outside the document"):
        complete_at(tiny_lm, "x = 1\n", 99)
    with pytest.raises(WhenceError, match="empty"):
        generate(tiny_lm, build_context(tiny_lm.tokenizer, "", 0, 10))


def test_generation_is_deterministic(tiny_lm):
    first = complete_at(tiny_lm, SOURCE, len(SOURCE), max_new_tokens=16)
    second = complete_at(tiny_lm, SOURCE, len(SOURCE), max_new_tokens=16)
    assert [t.token_id for t in first.tokens] == [t.token_id for t in second.tokens]


def test_special_tokens_never_reach_a_completion(tiny_lm):
    """Markup tokens (<|endoftext|>, <file_sep>, <|im_start|>...) are never chosen to heal a
    cursor, and generation stops at one instead of writing its text into the code."""
    from whence_ls.engine.healing import healing_mask

    special = tiny_lm.special_token_ids()
    assert {0, 1, 2, 5} <= special  # endoftext, im_start, im_end, file_sep in this vocabulary
    for pending in ("<", "<|", "<file", " "):
        mask = healing_mask(tiny_lm, pending)
        assert all(mask[i] == float("-inf") for i in special), pending
        assert (mask == 0).any(), pending  # ordinary tokens remain
    text = "names = ['a', 'b']\n# see <|endoftext"
    result = complete_at(tiny_lm, text, len(text), language="python", max_new_tokens=24)
    assert "<|" not in result.text and "|>" not in result.text
    assert all(t.token_id not in special for t in result.tokens)


def test_a_column_inside_a_surrogate_pair_means_the_start_of_the_character():
    from whence_ls.lsp.text.documents import Document

    document = Document("file:///x.py", "s = '\U0001F600'\nt = 1\n", 1, "python")
    emoji = document.text.index("\U0001F600")
    assert document.offset_at(0, emoji, "utf-16") == emoji
    assert document.offset_at(0, emoji + 1, "utf-16") == emoji  # between the two halves
    assert document.offset_at(0, emoji + 2, "utf-16") == emoji + 1  # after the pair


def test_healing_keeps_the_users_indentation_and_finished_names(tiny_lm):
    from whence_ls.engine.healing import healing_closure, healing_mask

    assert healing_closure("def f():\n", "        ") == "space"
    assert healing_closure("elem = items[0]\nx = ", "elem") == "word"  # a name the file uses: finished
    assert healing_closure("import os\nos.", "pa") is None  # half a name: may still grow
    texts = tiny_lm.token_texts()
    index = {t: i for i, t in enumerate(texts)}
    # indentation: the exact indent, or the indent plus code, never more whitespace
    mask = healing_mask(tiny_lm, "\n    ", "space")
    deeper = [t for t in texts if t.startswith("\n    ") and len(t) > 5 and t[5].isspace()]
    assert deeper and all(mask[index[t]] == float("-inf") for t in deeper)
    assert mask[index["\n    "]] == 0.0
    # a finished name: the name itself or the name plus punctuation, never a longer name
    mask = healing_mask(tiny_lm, "elem", "word")
    longer = [t for t in ("elements", "element", "elems") if t in index]
    assert longer and all(mask[index[t]] == float("-inf") for t in longer)
    assert mask[index["elem"]] == 0.0
    assert healing_mask(tiny_lm, "elem", None)[index[longer[0]]] == 0.0  # unknown names still heal
