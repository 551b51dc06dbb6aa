"""Verified rows, end to end: the real server (tiny model, over stdio) runs random-subset
ablation after the estimate of an accepted completion or an explained line, announces it
(`whence/rowsReady` with `verified: true`), and the hover, the matrix and the tint say which one
a person is reading: "verified by N ablations" (with how far the estimate was) or "estimated"."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
import pytest_lsp
from pytest_lsp import ClientServerConfig

from whence_ls.engine.attribution.verification import VERIFY_MASKS

from test_lsp_support import (PY_SOURCE, open_file, rows_client, LanguageClient, accept_inline, execute, execute_settings, hover,
                              request, start, verified_note, wait_ready)

pytestmark = pytest.mark.asyncio(loop_scope="module")



SERVER = ClientServerConfig(server_command=[sys.executable, "-m", "whence_ls", "serve"], client_factory=rows_client)


@pytest_lsp.fixture(config=SERVER, scope="module")
async def client(lsp_client: LanguageClient, tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("verified-rows")
    lsp_client.root = root
    await start(lsp_client, root, {"model": str(tiny_model_dir), "device": "cpu", "maxNewTokens": 8})
    assert (await wait_ready(lsp_client))["state"] == "ready"
    yield
    await lsp_client.shutdown_session()


def fresh(client: LanguageClient, name: str) -> str:
    return open_file(client, name, PY_SOURCE)


def hover_text(answer) -> str:
    assert answer is not None
    return answer.contents.value


async def test_an_explained_line_is_verified_and_the_hover_and_matrix_say_so(client: LanguageClient):
    uri = fresh(client, "explained.py")
    line = 6
    answer = await execute(client, "whence.explainLine", {"uri": uri, "line": line})
    record_id = answer["recordId"]
    note = await verified_note(client, record_id)
    matrix = await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": record_id})
    # every token's row was verified at once (the masks' forwards serve every row)
    assert sorted(note["tokenIndexes"]) == list(range(len(matrix["tokens"])))
    assert matrix["verifying"] is False
    checks = matrix["verified"]
    assert len(checks) == len(matrix["tokens"]) and all(c is not None for c in checks)
    assert all(c["masks"] == VERIFY_MASKS and c["mode"] and isinstance(c["sameTop"], bool) for c in checks)
    assert all(row is not None for row in matrix["scores"])
    assert all(abs(sum(abs(s) for s in row) - 1) < 1e-5 or not any(row) for row in matrix["scores"])
    # the hover on a token of the line reads the verified row and says how far the estimate was
    text = PY_SOURCE.split("\n")[line]
    column = len(text) - len(text.lstrip()) + 1
    shown = hover_text(await hover(client, uri, line, column))
    assert f"verified by {VERIFY_MASKS} ablations" in shown and "estimated" not in shown
    assert "the estimate had the same top line" in shown or "the estimate ranked this top line" in shown or \
        "no line of the context stood out" in shown
    tint = await request(client, "whence/tokenAttribution", {"textDocument": {"uri": uri}, "position": {"line": line, "character": column}})
    assert tint["verified"]["masks"] == VERIFY_MASKS


async def test_a_watched_records_notifications_carry_its_matrix_so_a_panel_updates_without_asking(client: LanguageClient):
    """A panel asks with `watch: true`; the record's later rowsReady (here the verified rows)
    carry the whole answer, view included, equal to what a fresh request returns."""
    uri = fresh(client, "watched.py")
    answer = await execute(client, "whence.explainLine", {"uri": uri, "line": 6})
    record_id = answer["recordId"]
    watched = await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": record_id, "watch": True})
    assert watched["view"]["lines"] and watched["view"]["columns"] is not None
    note = await verified_note(client, record_id)
    # the verified rows carry the matrix, or say it follows (a push less than 250 ms before)
    assert "matrix" in note or note.get("matrixFollows"), "the verified rows of the watched record came without its matrix"
    deadline = time.monotonic() + 10
    while True:
        mine = [n for n in client.rows_ready if n["recordId"] == record_id]
        later = mine[mine.index(note):]
        pushed = next((n["matrix"] for n in later if "matrix" in n), None)
        if pushed is not None or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert pushed is not None, f"matrixFollows, but no matrix followed: {later}"
    assert pushed["recordId"] == record_id and all(c is not None for c in pushed["verified"])
    fetched = await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": record_id})
    assert pushed == fetched
    assert pushed["view"]["summary"] == f"every row verified by {VERIFY_MASKS} ablations"


async def test_a_closed_panel_unwatches_its_record_so_its_notifications_carry_no_matrix(client: LanguageClient):
    """The client sends `whence/unwatchMatrix` when the panel closes: the record's later
    rowsReady (its verified rows) name the rows and carry no matrix, and the server goes on."""
    uri = fresh(client, "unwatched.py")
    answer = await execute(client, "whence.explainLine", {"uri": uri, "line": 6})
    record_id = answer["recordId"]
    await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": record_id, "watch": True})
    client.protocol.notify("whence/unwatchMatrix", {"recordId": record_id})
    client.protocol.notify("whence/unwatchMatrix", {"recordId": 7})  # bad params: ignored
    # the server handles messages in order: once this answers, the unwatch is done (notes sent
    # before it, the estimate's rows arriving while the panel was open, may carry the matrix)
    assert (await request(client, "whence/status", {}))["state"] == "ready"
    barrier = len(client.rows_ready)
    note = await verified_note(client, record_id)
    await asyncio.sleep(0.4)  # past the push interval: no trailing matrix either
    later = [n for n in client.rows_ready[barrier:] if n["recordId"] == record_id]
    assert not any("matrix" in n or n.get("matrixFollows") for n in later), later
    if note in later:  # the usual order: verification takes longer than the round trip
        assert "matrix" not in note and not note.get("matrixFollows")


async def test_with_verification_off_the_hover_says_estimated(client: LanguageClient):
    await execute_settings(client, {"verifyRows": False})
    try:
        uri = fresh(client, "estimated.py")
        result, inserted, _ = await accept_inline(client, uri, PY_SOURCE, 1, 10, 20)
        record_id = result["recordId"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the estimate's rows, every one
            mine = [n for n in client.rows_ready if n["recordId"] == record_id and not n.get("verified")]
            if mine and mine[-1]["done"] == mine[-1]["total"]:
                break
            await asyncio.sleep(0.05)
        shown = hover_text(await hover(client, uri, 10, 20))
        assert any(line.startswith("_estimated, ") for line in shown.split("\n")), shown
        assert "verified by" not in shown and "verifying" not in shown
        assert "not calibrated" in shown  # the tiny model's estimate says how little it is worth, once
        matrix = await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": record_id})
        assert matrix["verifying"] is False and all(c is None for c in matrix["verified"])
        await asyncio.sleep(1.0)
        assert not any(n.get("verified") for n in client.rows_ready if n["recordId"] == record_id), inserted
    finally:
        await execute_settings(client, {"verifyRows": True})

