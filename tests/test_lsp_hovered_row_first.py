"""The hovered row first, on the real embedded model over stdio: while a person keeps hovering a
token whose row is being computed (and the editor keeps asking for its tint), each ask moves it
to the front without throwing away the forward that is computing it."""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_lsp

from test_lsp_support import LanguageClient, SERVER, execute, hover, open_doc, request, start_ready

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_lsp.fixture(config=SERVER, scope="module")
async def client(lsp_client: LanguageClient, tmp_path_factory):
    await start_ready(lsp_client, tmp_path_factory.mktemp("hovered-row"), {"device": "cpu", "maxNewTokens": 12})
    yield
    await lsp_client.shutdown_session()


def long_source(functions: int = 40) -> str:
    """A file long enough that a row's forward takes far longer than a person's hovers are apart."""
    parts = ["import json\n\n"]
    for k in range(functions):
        parts.append(f"\ndef handler_{k}(entries, limit={k}):\n    kept = [e for e in entries if e['size'] > limit]\n"
                     f"    return {{'name': 'handler_{k}', 'kept': len(kept)}}\n")
    parts.append("\n\ndef summarize(entries):\n    totals = {}\n    for entry in entries:\n        amount = float(entry['amount'])\n")
    return "".join(parts)


async def test_hovering_a_pending_row_again_and_again_does_not_restart_it(client: LanguageClient):
    """The editor asks about the token under the mouse and the cursor over and over (hover,
    tint) while its row computes; each ask must not throw away the forward computing it."""
    text = long_source()
    path = client.root / "long.py"
    path.write_text(text)
    uri = path.as_uri()
    open_doc(client, uri, text)
    line = text.count("\n") - 1
    column = text.split("\n")[line].index("float")
    answer = await execute(client, "whence.explainLine", {"uri": uri, "line": line})
    started = time.monotonic()

    async def tint() -> dict | None:
        return await request(client, "whence/tokenAttribution",
                             {"textDocument": {"uri": uri}, "position": {"line": line, "character": column}})

    # not a timing claim: the forward takes ~5 s on a loaded 2-core machine; asked every 0.1 s
    # it was stopped and started over on every ask, and never finished
    asks: list[asyncio.Task] = []
    found = None
    while time.monotonic() - started < 90 and found is None:
        asks.append(asyncio.ensure_future(hover(client, uri, line, column)))
        asks.append(asyncio.ensure_future(tint()))
        await asyncio.sleep(0.1)
        for task in [t for t in asks if t.done()]:
            value = task.result()
            if isinstance(value, dict) and not value.get("pending"):
                found = value
            elif value is not None and not isinstance(value, dict) and "█" in value.contents.value:
                found = value
    await asyncio.gather(*asks)
    assert found is not None, f"the row never arrived while it was being asked for (record {answer['recordId']})"
