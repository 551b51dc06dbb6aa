"""The bound on cold prefill over stdio (a tiny model, so the bound is set to 1 ms to make every
cold window too long): the first completion in a long file reads a shorter window and its hover
says so; the server then warms the full window, and the next completion there reads it."""

from __future__ import annotations

import asyncio
import inspect
import textwrap

import pytest
import pytest_lsp

from test_lsp_support import PY_SOURCE, SERVER, LanguageClient, change, execute, hover, inline, open_doc, request, start_ready

pytestmark = pytest.mark.asyncio(loop_scope="module")

# longer than the window (no warm-up when it opens), and ending in code the tiny model completes
_PREFIX = inspect.getsource(textwrap)[:12000]
SOURCE = _PREFIX[: _PREFIX.rindex("\n") + 1] + "\n\n" + PY_SOURCE
_LINES = SOURCE.split("\n")


def _end_of_line(code: str) -> tuple[int, int]:
    line = _LINES.index(code)
    return line, len(code)


@pytest_lsp.fixture(config=SERVER, scope="module")
async def client(lsp_client: LanguageClient, tiny_model_dir, tmp_path_factory):
    await start_ready(lsp_client, tmp_path_factory.mktemp("cold"),
                      {"model": str(tiny_model_dir), "device": "cpu", "maxNewTokens": 6, "coldPrefillMs": 1,
                       "latencyBudgetMs": 0})
    yield
    await lsp_client.shutdown_session()


def _text(item) -> str:
    return item.insert_text if isinstance(item.insert_text, str) else item.insert_text.value


async def _idle(client, seconds: float = 60.0) -> None:
    for _ in range(int(seconds * 10)):
        status = await request(client, "whence/status", {})
        stats = status.get("stats", {})
        # a warm-up waits for a pause after the last edit (`session.WARM_UP_PAUSE_S`): not idle yet
        if not status.get("activity") and not stats.get("attributionPending") and not stats.get("warmUpsPending"):
            return
        await asyncio.sleep(0.1)


async def _accept_and_hover(client, uri: str, version: int, line: int, column: int) -> tuple[str, str]:
    """Ask at (line, column), accept the first item, and return its text and the hover on its
    first token once the row is in."""
    items = (await inline(client, uri, line, column)).items
    assert items and _text(items[0]), "no completion"
    text = _text(items[0])
    change(client, uri, version, (line, column), (line, column), text)
    assert (await execute(client, items[0].command.command, *items[0].command.arguments))["placed"]
    said = ""
    for _ in range(200):
        answer = await hover(client, uri, line, column)
        said = answer.contents.value if answer is not None else ""
        if said and "computing" not in said:
            break
        await asyncio.sleep(0.1)
    return text, said


async def test_a_cold_completion_reads_a_short_window_says_so_and_the_next_reads_the_full_one(client: LanguageClient):
    path = client.root / "long.py"
    path.write_text(SOURCE)
    uri = path.as_uri()
    open_doc(client, uri, SOURCE)
    line, column = _end_of_line('    value = read_config("settings.ini")')
    text, said = await _accept_and_hover(client, uri, 2, line, column)
    assert "computing" not in said and "shorter context" in said and "coldPrefillMs" in said

    # undo the accept and let the server warm the full window; a completion just below then
    # reads it (only the line between is new to the cache)
    change(client, uri, 3, (line, column), (line + text.count("\n"), len(text.rsplit("\n", 1)[-1]) + (column if "\n" not in text else 0)), "")
    await _idle(client)
    _, said = await _accept_and_hover(client, uri, 4, *_end_of_line("    print(value)"))
    assert said and "computing" not in said and "shorter context" not in said
