"""The time budget over stdio on the real embedded model: ghost text cut at a line end, the rest
offered from the kept completion when the user accepts or types through (no model work), and a
tail dropped when the document changes otherwise or closes."""

from __future__ import annotations

import asyncio

import pytest
import pytest_lsp
from lsprotocol import types

from test_continuation import SOURCE as BUDGET_SOURCE
from test_lsp_support import SERVER, LanguageClient, change, end_of, execute, hover, inline, open_doc, request, start_ready

pytestmark = pytest.mark.asyncio(loop_scope="module")

SOURCE = BUDGET_SOURCE  # the completion the engine test cuts, now through the server


@pytest_lsp.fixture(config=SERVER, scope="module")
async def client(lsp_client: LanguageClient, tmp_path_factory):
    # a budget of 1 ms: every completion is cut at its first line end, whatever the machine; the
    # stacked estimator, whose rows are read while generating (the default's first half): the
    # rows of a cut completion's parts are what this checks
    await start_ready(lsp_client, tmp_path_factory.mktemp("budget"), {"device": "cpu", "maxNewTokens": 40, "latencyBudgetMs": 1,
                                                                      "attributionMethod": "stacked_attention"},
                      inline_completion=True)
    yield
    await lsp_client.shutdown_session()


def _text(item) -> str:
    return item.insert_text if isinstance(item.insert_text, str) else item.insert_text.value


def _after(text: str, inserted: str) -> tuple[int, int]:
    return end_of(text + inserted)


async def _stat(client, name: str) -> int:
    return (await request(client, "whence/status", {})).get("stats", {}).get(name, 0)


async def _idle(client, seconds: float = 60.0) -> None:
    for _ in range(int(seconds * 10)):
        if "generating…" not in ((await request(client, "whence/status", {})).get("activity") or ""):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the model is still generating")


async def _open(client, name: str) -> str:
    path = client.root / name
    path.write_text(SOURCE)
    uri = path.as_uri()
    open_doc(client, uri, SOURCE)
    return uri


async def test_accepting_the_shown_lines_offers_the_rest_without_model_work(client: LanguageClient):
    uri = await _open(client, "accept.py")
    line, column = end_of(SOURCE)
    first = (await inline(client, uri, line, column)).items[0]
    shown = _text(first)
    assert shown.strip() and "\n" not in shown  # the budget ran out: the first line only
    # accept it as an editor does: the edit, then the item's command
    jobs = await _stat(client, "completionJobs")
    change(client, uri, 2, (line, column), (line, column), shown)
    placed = await execute(client, first.command.command, *first.command.arguments)
    assert placed["placed"]
    after = _after(SOURCE, shown)
    second = (await inline(client, uri, *after)).items[0]
    rest = _text(second)
    assert rest.startswith("\n") and rest.strip()
    # no model work for the rest: neither the request nor the speculative one after the accept
    assert await _stat(client, "completionJobs") == jobs and await _stat(client, "restsFromKept") >= 1
    # the whole completion, once its tail is done, is the shown part plus the rest (another
    # document with the same text is answered from the finished completion)
    await _idle(client)
    other = await _open(client, "same.py")
    whole = _text((await inline(client, other, line, column)).items[0])
    assert whole.startswith(shown + rest) or (shown + rest).startswith(whole)
    # the shown part's rows were read while it was generated: made without a model forward
    assert await _stat(client, "rowsFromGeneration") >= 1
    # the rest accepted is a record of its own, whose context holds the shown line
    change(client, uri, 3, after, after, rest)
    placed = await execute(client, second.command.command, *second.command.arguments)
    assert placed["placed"]
    matrix = await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": placed["recordId"]})
    assert matrix["tokens"][0]["range"]["start"] == {"line": after[0], "character": after[1]}
    token = next(t for t in matrix["tokens"] if t["text"].strip())
    where = token["range"]["start"]
    for _ in range(100):
        shown_hover = (await hover(client, uri, where["line"], where["character"])).contents.value
        if "█" in shown_hover or "copied from" in shown_hover:
            break
        await asyncio.sleep(0.1)
    assert "█" in shown_hover or "copied from" in shown_hover, shown_hover


async def test_typing_what_the_ghost_text_shows_is_answered_from_the_kept_completion(client: LanguageClient):
    uri = await _open(client, "typed.py")
    line, column = end_of(SOURCE)
    shown = _text((await inline(client, uri, line, column)).items[0])
    assert len(shown) >= 3
    served, jobs = await _stat(client, "restsFromKept"), await _stat(client, "completionJobs")
    change(client, uri, 2, (line, column), (line, column), shown[0])
    change(client, uri, 3, (line, column + 1), (line, column + 1), shown[1])
    answer = _text((await inline(client, uri, line, column + 2)).items[0])
    assert answer.startswith(shown[2:])
    assert await _stat(client, "restsFromKept") == served + 1 and await _stat(client, "completionJobs") == jobs


async def test_a_tail_is_dropped_when_the_document_changes_otherwise_or_closes(client: LanguageClient):
    await _idle(client)
    uri = await _open(client, "changed.py")
    line, column = end_of(SOURCE)
    shown = _text((await inline(client, uri, line, column)).items[0])
    # an edit that is not the ghost text: the tail is stale and stops
    change(client, uri, 2, (0, 0), (0, 0), "# note\n")
    await _idle(client, 5.0)
    served, jobs = await _stat(client, "restsFromKept"), await _stat(client, "completionJobs")
    change(client, uri, 3, (line + 1, column), (line + 1, column), shown)
    await inline(client, uri, *_after("# note\n" + SOURCE, shown))
    # nothing kept to continue: the model is asked again
    assert await _stat(client, "restsFromKept") == served and await _stat(client, "completionJobs") == jobs + 1
    # closing during a tail stops it too
    uri = await _open(client, "closed.py")
    await _idle(client)
    text = SOURCE + "\n"  # a new place: a new completion with a tail
    change(client, uri, 2, end_of(SOURCE), end_of(SOURCE), "\n")
    await inline(client, uri, *end_of(text))
    client.text_document_did_close(types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri)))
    await _idle(client, 5.0)
