"""A completion whose model job raises (not a WhenceError: a device error or a bug) is answered,
empty, with the error logged once for the user, and the server keeps completing. Before, the
request was never answered: `bench gpu` found it when every completion failed on cuda."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import pytest_lsp
from pytest_lsp import ClientServerConfig

from faulty_server import FAULT_MARKER
from test_lsp_support import PY_SOURCE, LanguageClient, inline, open_doc, start, wait_ready, whence_client

pytestmark = pytest.mark.asyncio(loop_scope="module")

FAULTY = ClientServerConfig(server_command=[sys.executable, str(Path(__file__).with_name("faulty_server.py"))],
                            client_factory=lambda: whence_client())


@pytest_lsp.fixture(config=FAULTY, scope="module")
async def client(lsp_client: LanguageClient, tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    lsp_client.root = root
    await start(lsp_client, root, {"model": str(tiny_model_dir), "device": "cpu", "maxNewTokens": 6}, inline_completion=True)
    assert (await wait_ready(lsp_client))["state"] == "ready"
    yield
    await lsp_client.shutdown_session()


async def test_a_failing_completion_is_answered_and_the_server_goes_on(client: LanguageClient):
    root = client.root
    faulty = (root / "faulty.py").as_uri()
    open_doc(client, faulty, FAULT_MARKER + "\n" + PY_SOURCE)
    answer = await asyncio.wait_for(inline(client, faulty, 11, 39), timeout=60)  # before the fix: no answer
    assert answer.items == ()
    for _ in range(50):
        if any("completion failed" in m.message for m in client.log_messages):
            break
        await asyncio.sleep(0.1)
    assert any("completion failed: RuntimeError: injected fault" in m.message for m in client.log_messages)
    healthy = (root / "healthy.py").as_uri()
    open_doc(client, healthy, PY_SOURCE)
    assert (await asyncio.wait_for(inline(client, healthy, 10, 39), timeout=60)).items
