"""Rows are pushed, not polled: the real server (tiny model, over stdio) sends `whence/rowsReady`
as the rows of an accepted completion or an explained line arrive, and its "explaining n/N"
status moves with them."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
import pytest_lsp
from pytest_lsp import ClientServerConfig

from test_lsp_support import PY_SOURCE, open_file, rows_client, LanguageClient, accept_inline, execute, request, start, wait_ready

pytestmark = pytest.mark.asyncio(loop_scope="module")



SERVER = ClientServerConfig(server_command=[sys.executable, "-m", "whence_ls", "serve"], client_factory=rows_client)


@pytest_lsp.fixture(config=SERVER, scope="module")
async def client(lsp_client: LanguageClient, tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("rows-ready")
    lsp_client.root = root
    # the tiny model has no calibration: its default (gradient norm) computes one row at a time,
    # so the rows of a completion arrive one by one
    await start(lsp_client, root, {"model": str(tiny_model_dir), "device": "cpu", "maxNewTokens": 8})
    assert (await wait_ready(lsp_client))["state"] == "ready"
    yield
    await lsp_client.shutdown_session()


def fresh(client: LanguageClient, name: str) -> str:
    return open_file(client, name, PY_SOURCE)


async def all_rows(client: LanguageClient, record_id: str, seconds: float = 60.0) -> list[dict]:
    """The record's rowsReady notifications, once one says every row is there."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        mine = [n for n in client.rows_ready if n["recordId"] == record_id]
        if mine and mine[-1]["done"] == mine[-1]["total"]:
            return mine
        await asyncio.sleep(0.05)
    raise AssertionError(f"no rowsReady with every row of {record_id}: {client.rows_ready}")


async def test_accepted_rows_are_pushed_as_they_arrive_and_the_status_moves(client: LanguageClient):
    uri = fresh(client, "pushed.py")
    result, inserted, _ = await accept_inline(client, uri, PY_SOURCE, 1, 10, 20)
    record_id = result["recordId"]
    notes = await all_rows(client, record_id)
    matrix = await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": record_id})
    visible = [i for i, t in enumerate(matrix["tokens"]) if t["text"]]
    assert len(visible) >= 2, f"the test needs a completion of two tokens at least: {inserted!r}"
    # every token a person can see had its row announced, each once, with its document
    announced = [i for n in notes for i in n["tokenIndexes"]]
    assert sorted(announced) == visible
    assert all(n["uri"] == uri and n["total"] == len(visible) for n in notes)
    # no panel watches this record: the notifications stay small, no matrix is built for them
    assert not any("matrix" in n for n in notes)
    # one row at a time: the count moves, and every announced row is in the matrix already
    assert [n["done"] for n in notes] == sorted(n["done"] for n in notes) and len(notes) >= 2
    assert all(matrix["scores"][i] is not None for i in visible)
    # the status said how far it was, and is quiet once done (a completion generating meanwhile,
    # the speculative next one, shows beside it: "generating… · explaining 1/2"). How many steps
    # it showed is timing: the second of two rows may land before the status is read again (CI
    # saw only "explaining 0/2"); the notes above show the count moving
    steps = [part for s in client.statuses for part in (s.get("activity") or "").split(" · ") if part.startswith("explaining ")]
    assert steps and all(step.endswith(f"/{len(visible)}") for step in steps), steps
    # quiet of rows once done (the speculative next completion may still be "generating…")
    activity = (await request(client, "whence/status", {})).get("activity") or ""
    assert "explaining" not in activity, activity


async def test_an_explained_line_announces_its_rows(client: LanguageClient):
    uri = fresh(client, "explained.py")
    answer = await execute(client, "whence.explainLine", {"uri": uri, "line": 6})
    notes = await all_rows(client, answer["recordId"])
    matrix = await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": answer["recordId"]})
    assert sorted(i for n in notes for i in n["tokenIndexes"]) == list(range(len(matrix["tokens"])))
    # the matrix labels the line as it reads in the editor
    assert matrix["lines"] == [{"line": 6, "text": PY_SOURCE.split("\n")[6]}]
