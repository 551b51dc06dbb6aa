"""Start-up over stdio: `initialize` answers before the model is loaded, requests during the
load get empty answers plus a `whence/status` notification, workspace/configuration overrides
initializationOptions, a model that cannot load leaves a server that still answers, and a
settings change loads the model it names."""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_lsp
from lsprotocol import types

from test_lsp_support import PY_SOURCE, SERVER, LanguageClient, hover, inline, open_doc, request, start, wait_ready

pytestmark = pytest.mark.asyncio(loop_scope="function")


@pytest_lsp.fixture(config=SERVER)
async def client(lsp_client: LanguageClient, tmp_path):
    lsp_client.root = tmp_path
    yield
    await lsp_client.shutdown_session()


async def test_requests_during_load_get_empty_answers_and_a_status(client: LanguageClient, tiny_model_dir):
    started = time.monotonic()
    result = await start(client, client.root, {"model": str(tiny_model_dir), "device": "cpu"}, inline_completion=True)
    initialize_s = time.monotonic() - started
    # a client with inline completion gets no completion items too (it would ask twice)
    assert result.capabilities.inline_completion_provider and result.capabilities.completion_provider is None
    uri = (client.root / "load.py").as_uri()
    open_doc(client, uri, PY_SOURCE)
    answer = await inline(client, uri, 10, 39)
    status = await request(client, "whence/status", {})
    assert status["state"] == "loading", "the model finished loading before the test could ask"
    assert answer.items == ()
    assert await hover(client, uri, 10, 5) is None
    assert client.statuses and client.statuses[-1]["state"] == "loading"
    # the model load (torch import, weights, vocabulary table) takes seconds; initialize did not wait
    ready = await wait_ready(client)
    assert ready["state"] == "ready" and time.monotonic() - started > initialize_s
    assert (await inline(client, uri, 10, 39)).items


async def test_bad_model_then_configuration_fixes_it(client: LanguageClient, tiny_model_dir):
    # workspace/configuration wins over initializationOptions, bad values are reported and skipped
    client.set_configuration({"whence": {"maxNewTokens": 3, "diagnosticsShare": "lots"}})
    await start(client, client.root, {"model": str(client.root / "missing-model"), "maxNewTokens": 20})
    status = await wait_ready(client)
    assert status["state"] == "error" and "model not found" in status["message"]
    assert any("diagnosticsShare" in m.message for m in client.messages)
    assert any("cannot load the model" in m.message for m in client.messages)

    uri = (client.root / "broken.py").as_uri()
    open_doc(client, uri, PY_SOURCE)
    seen = len(client.statuses)
    assert (await inline(client, uri, 10, 39)).items == ()
    assert await hover(client, uri, 10, 5) is None
    await request(client, "whence/status", {})
    assert len(client.statuses) > seen and client.statuses[-1]["state"] == "error"

    # the user fixes the setting: the server loads that model, answering empty meanwhile
    client.set_configuration({"whence": {"maxNewTokens": 3, "model": str(tiny_model_dir), "device": "cpu"}})
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
    for _ in range(100):
        if client.statuses[-1]["state"] == "loading":
            break
        await asyncio.sleep(0.02)
    assert (await wait_ready(client))["state"] == "ready"
    answer = await inline(client, uri, 10, 39)
    assert answer.items
    item = answer.items[0]
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(types.Position(10, 39), types.Position(10, 39)), text=item.insert_text)],
    ))
    accepted = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=item.command.command, arguments=list(item.command.arguments)))
    matrix = await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": accepted["recordId"]})
    assert 1 <= len(matrix["tokens"]) <= 3  # maxNewTokens from workspace/configuration

    # a crash right after acceptance loses nothing: the row was committed before the answer
    import json
    import subprocess
    import sys

    client._server.kill()
    await client._server.wait()
    client.capabilities = None  # nothing left to shut down politely
    exported = subprocess.run(
        [sys.executable, "-m", "whence_ls", "provenance", "export", "--workspace", str(client.root)],
        capture_output=True, text=True, check=True,
    )
    rows = json.loads(exported.stdout)["accepted"]
    assert [row["id"] for row in rows] == [accepted["recordId"]]
    assert rows[0]["text"] == item.insert_text
