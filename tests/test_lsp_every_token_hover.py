"""Every token a person can hover has a row, on the real embedded model over stdio: the first
token of an accepted completion (the healed one, whose word began before the cursor) over every
character of that word, and a flagged token of an explained line; the matrix labels a line as it
reads in the editor."""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_lsp

from test_lsp_support import LanguageClient, SERVER, accept_inline, execute, hover, open_doc, request, start_ready

pytestmark = pytest.mark.asyncio(loop_scope="module")

LEDGER = '''import json


def load_entries(path):
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def summarize(entries):
    totals = {}
    for entry in entries:
        account = entry["account"]
        tot'''


@pytest_lsp.fixture(config=SERVER, scope="module")
async def client(lsp_client: LanguageClient, tmp_path_factory):
    await start_ready(lsp_client, tmp_path_factory.mktemp("every-token"), {"device": "cpu", "maxNewTokens": 12})
    yield
    await lsp_client.shutdown_session()


def fresh(client: LanguageClient, name: str, text: str) -> str:
    path = client.root / name
    path.write_text(text)
    uri = path.as_uri()
    open_doc(client, uri, text)
    return uri


async def attributed_hover(client: LanguageClient, uri: str, line: int, character: int, seconds: float = 60.0) -> str:
    """The hover at (line, character) once it shows attribution bars (a person hovers again)."""
    deadline = time.monotonic() + seconds
    shown = ""
    while time.monotonic() < deadline:
        answer = await hover(client, uri, line, character)
        assert answer is not None, f"no hover at {line}:{character}"
        shown = answer.contents.value
        if "█" in shown:
            return shown
    raise AssertionError(f"no attribution at {line}:{character} within {seconds} s: {shown}")


async def test_the_healed_first_token_answers_over_the_whole_word_it_wrote(client: LanguageClient):
    uri = fresh(client, "ledger.py", LEDGER)
    line = LEDGER.count("\n")
    typed = len(LEDGER.split("\n")[-1])  # the cursor, after `tot`
    result, inserted, _ = await accept_inline(client, uri, LEDGER, 1, line, typed)
    assert result["placed"] and inserted.startswith("al"), inserted  # the token is `total`: `tot` was typed
    matrix = await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": result["recordId"]})
    first = matrix["tokens"][0]
    assert first["text"] == "al" and first["range"]["start"] == {"line": line, "character": typed}
    # the word reads `total`; the model wrote all of it as one token, so every character of it
    # (the typed `tot` too) answers with that token and its row
    word_start = typed - len("tot")
    for character in range(word_start, typed + len("al")):
        shown = await attributed_hover(client, uri, line, character)
        assert "**`total`**" in shown.splitlines()[0], shown
    answer = await hover(client, uri, line, word_start)
    assert answer.range.start.character == word_start and answer.range.end.character == typed + len("al")
    # the matrix labels the line as it reads in the editor, not by the completion's text alone
    labels = {entry["line"]: entry["text"] for entry in matrix["lines"]}
    assert labels[line].strip().startswith("total = "), labels
    assert labels[line] == (LEDGER.split("\n")[-1] + inserted).split("\n")[0]
    page = await request(client, "whence/matrixHtml", {"textDocument": {"uri": uri}, "recordId": result["recordId"]})
    assert '<th class="code">total = ' in page["html"]


FULL = LEDGER[: -len("tot")] + '''amount = float(entry["amount"])
        totals[account] = totals.get(account, 0) + amount
    return totals
'''


async def test_a_flagged_token_of_an_explained_line_answers_with_its_row(client: LanguageClient):
    uri = fresh(client, "explained.py", FULL)
    line = 12
    answer = await execute(client, "whence.explainLine", {"uri": uri, "line": line})
    for _ in range(100):
        flagged = [d for d in client.diagnostics.get(uri, []) if d.data["recordId"] == answer["recordId"]]
        if flagged:
            break
        await asyncio.sleep(0.05)
    assert flagged, "the explained line has a flagged token"
    for diagnostic in flagged:
        start, end = diagnostic.range.start.character, diagnostic.range.end.character
        for character in (start, (start + end) // 2, end - 1):
            shown = await attributed_hover(client, uri, line, character)
            assert "explained line" in shown
    column = FULL.split("\n")[line].index("float")
    shown = await attributed_hover(client, uri, line, column)
    assert "**` float`**" in shown
