"""A request typed past a completion that is still generating waits for it only while the text
decoded so far matches what was typed (`Kept.progress`): once it went another way the request
goes on at once (a keystroke used to wait for the whole job, ~1.4 s with a core busy, and then
got nothing), and the document no longer holds the completion (its job is cancelled)."""

from __future__ import annotations

import asyncio
import threading

from whence_ls.lsp.state.kept_completions import Kept


def _kept() -> Kept:
    kept = Kept("file:///a.py", before="total = ", after="\n")
    kept.cancel = threading.Event()  # the job, running
    return kept


async def test_typed_text_matches_the_progress_or_not():
    kept = _kept()
    doc = "total = {}\n"
    assert kept.typed(doc.format("su"), len("total = su")) == "su"  # nothing decoded yet: may match
    kept.progress_to("sum(")
    assert kept.typed(doc.format("su"), len("total = su")) == "su"
    assert kept.typed(doc.format("sum(x"), len("total = sum(x")) == "sum(x"  # past the progress, consistent
    assert kept.typed(doc.format("sx"), len("total = sx")) is None  # went another way
    assert kept.still_holds(doc.format("su"))
    assert not kept.still_holds(doc.format("max"))
    kept.progress_to("su")  # progress only grows
    assert kept.progress == "sum("


async def test_a_waiting_request_goes_on_as_soon_as_the_progress_goes_another_way():
    kept = _kept()
    kept.progress_to("sum(")
    # already another way: no wait at all
    assert await asyncio.wait_for(kept.rest("max"), 0.5) is None
    # consistent so far: it waits for the job ...
    waiting = asyncio.ensure_future(kept.rest("sum(val"))
    await asyncio.sleep(0.05)
    kept.progress_to("sum(va")
    await asyncio.sleep(0.05)
    assert not waiting.done()
    # ... until the decoded text parts from the typed one, long before the job ends
    kept.progress_to("sum(var")
    assert await asyncio.wait_for(waiting, 0.5) is None
    assert not kept.done  # the job itself goes on until the next request supersedes it


async def test_the_document_parting_from_the_progress_drops_the_kept_completion_and_cancels_its_job():
    from whence_ls.lsp.state.kept_completions import KeptCompletions

    kept_completions = KeptCompletions()
    kept = kept_completions.add(_kept())
    job = kept.cancel
    kept.progress_to("sum(")
    kept_completions.document_changed(kept.uri, "total = su\n")
    assert not kept.done and not job.is_set()
    kept_completions.document_changed(kept.uri, "total = sx\n")
    assert kept.done and job.is_set()
    assert kept_completions.find(kept.uri, "total = sx\n", len("total = sx")) is None


def test_generation_reports_its_text_token_by_token(tiny_lm):
    """`on_text` gets the visible text after each token that adds to it: growing, each a prefix
    of the next, and the completion a prefix of the last."""
    from whence_ls.engine.context import build_context
    from whence_ls.engine.generation import generate

    source = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    "
    seen: list[str] = []
    result = generate(tiny_lm, build_context(tiny_lm.tokenizer, source, len(source), 200), max_new_tokens=16, on_text=seen.append)
    assert seen and all(len(b) > len(a) and b.startswith(a) for a, b in zip(seen, seen[1:]))
    assert seen[-1].startswith(result.text)
    assert len(seen) >= len([t for t in result.tokens if t.text])  # every visible token reported
