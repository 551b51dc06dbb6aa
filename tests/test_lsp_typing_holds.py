"""Typing holds the model's background work back (`session.TYPING_HOLD_S`,
`session.WARM_UP_PAUSE_S`), on the real server (tiny model, over stdio): verification waits
until the typing stops, and the next completion's warm-up waits for a pause instead of running at
every key."""

from __future__ import annotations

import asyncio
import sys

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig

from test_lsp_support import (PY_SOURCE, LanguageClient, execute, open_file, request, rows_client, start, verified_note,
                              wait_ready)

pytestmark = pytest.mark.asyncio(loop_scope="module")

SERVER = ClientServerConfig(server_command=[sys.executable, "-m", "whence_ls", "serve"], client_factory=rows_client)


@pytest_lsp.fixture(config=SERVER, scope="module")
async def client(lsp_client: LanguageClient, tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("typing-holds")
    lsp_client.root = root
    await start(lsp_client, root, {"model": str(tiny_model_dir), "device": "cpu", "maxNewTokens": 8})
    assert (await wait_ready(lsp_client))["state"] == "ready"
    yield
    await lsp_client.shutdown_session()


def fresh(client: LanguageClient, name: str) -> str:
    return open_file(client, name, PY_SOURCE)


def type_a_key(client: LanguageClient, uri: str, version: int, line: int = 0) -> None:
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=line, character=0), end=types.Position(line=line, character=0)),
            text="x")]))


async def warm_ups(client: LanguageClient) -> tuple[int, int]:
    """(warm-ups run so far, warm-ups waiting or running) from `whence/status`."""
    stats = (await request(client, "whence/status", {})).get("stats", {})
    return stats.get("warmUps", 0), stats.get("warmUpsPending", 0)


async def test_warm_ups_wait_for_a_pause_in_typing(client: LanguageClient):
    """Twenty keys 60 ms apart ask for a warm-up at each edit; it runs once they pause."""
    from whence_ls.lsp.session import WARM_UP_PAUSE_S

    uri = fresh(client, "warmed.py")
    await asyncio.sleep(2.0)  # the warm-up of the file just opened
    before, _ = await warm_ups(client)
    for version in range(2, 22):
        type_a_key(client, uri, version, line=12)
        await asyncio.sleep(0.06)
    during, waiting = await warm_ups(client)
    await asyncio.sleep(WARM_UP_PAUSE_S + 1.5)
    after, waiting_after = await warm_ups(client)
    assert during - before <= 1, (before, during)  # at most one begun before the first key
    assert waiting == 1  # the newest edit's, held: the server says it is not idle yet
    assert after > during and waiting_after == 0, (during, after, waiting_after)  # done once the typing paused


async def test_verification_waits_while_the_user_types(client: LanguageClient):
    """Edits of an open document hold verification back (`session.TYPING_HOLD_S`): a line
    explained while typing goes on gets its estimate but no verified rows until the typing stops,
    and then it does."""
    from whence_ls.lsp.session import TYPING_HOLD_S

    uri = fresh(client, "typed-into.py")
    other = fresh(client, "typing-here.py")
    typing = True
    version = 1

    async def type_along() -> None:
        nonlocal version
        while typing:
            version += 1
            type_a_key(client, other, version)
            await asyncio.sleep(0.1)

    typist = asyncio.ensure_future(type_along())
    try:
        await asyncio.sleep(0.3)  # typing is under way before the line is explained
        answer = await execute(client, "whence.explainLine", {"uri": uri, "line": 6})
        record_id = answer["recordId"]
        await asyncio.sleep(3 * TYPING_HOLD_S + 1)  # the tiny model verifies a line in well under a second
        assert not [n for n in client.rows_ready if n["recordId"] == record_id and n.get("verified")]
        matrix = await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": record_id})
        assert matrix["verifying"] is True and all(row is not None for row in matrix["scores"])
    finally:
        typing = False
        await typist
    await verified_note(client, record_id)
