"""One end-to-end session over stdio on the real embedded model (SmolLM2-135M-Instruct): a
completion that makes sense, accepted, with hover attribution pointing at real context."""

from __future__ import annotations

import re

import pytest
import pytest_lsp

from test_lsp_support import LanguageClient, SERVER, accept_inline, execute, hover, open_doc, request, start_ready

pytestmark = pytest.mark.asyncio(loop_scope="module")

SOURCE = '''import os


def read_file(path):
    with open(path) as handle:
        return handle.read()


def list_python_files(directory):
    return '''


@pytest_lsp.fixture(config=SERVER, scope="module")
async def client(lsp_client: LanguageClient, tmp_path_factory):
    await start_ready(lsp_client, tmp_path_factory.mktemp("embedded"), {"device": "cpu", "maxNewTokens": 12})
    yield
    await lsp_client.shutdown_session()


async def test_embedded_model_session(client: LanguageClient):
    status = await request(client, "whence/status", {})
    assert status["model"] == "smollm2-135m-instruct" and status["device"] == "cpu"
    path = client.root / "files.py"
    path.write_text(SOURCE)
    uri = path.as_uri()
    open_doc(client, uri, SOURCE)
    line = SOURCE.count("\n")
    result, inserted, _ = await accept_inline(client, uri, SOURCE, 1, line, len("    return "))
    assert result["placed"] and inserted.strip()
    # a real model uses what it was given: the parameter or the imported module, as names (a
    # substring test would take `close` or `pos` for `os`)
    assert {"directory", "os"} & set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", inserted)), inserted

    matrix = await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": result["recordId"]})
    token = min(matrix["tokens"], key=lambda t: t["prob"] if t["text"].strip() else 2.0)
    start = token["range"]["start"]
    # the hover answers at once with the confidence part; the row follows (hover again, as a user would)
    for _ in range(120):
        shown = (await hover(client, uri, start["line"], start["character"])).contents.value
        assert f"p = **{token['prob']:.2f}**" in shown
        if "█" in shown and "row is being made" not in shown:
            break
        # before the default's row: nothing yet, or its stacked half read while decoding, without
        # the "saw:" features (asked only once the own row is shown: they would hold it back)
        assert "attribution computing" in shown or ("█" in shown and "stacked attention:" in shown), shown
        assert "saw: " not in shown, shown
    assert "█" in shown, shown
    # with the own row shown, the features are asked for, and a later hover shows them
    for _ in range(40):
        if "saw: " in (await hover(client, uri, start["line"], start["character"])).contents.value:
            break
    else:
        raise AssertionError("no `saw:` features after the token's own row")
    # the embedded model ships its calibration and stacked scorer: the default is the stacked
    # estimator (read while the completion decodes) mixed with leave-one-out of its top lines
    assert matrix["method"] == "stacked_leave_one_out" and "stacked leave one out:" in shown, shown
    # the strongest units are links into this file, each to the line whose code it shows (a
    # check that the number is only some line above would pass with every link off by one)
    links = re.findall(r"\[line (\d+)\]\(" + re.escape(uri) + r"#L(\d+)\) `([^`]*)`", shown)
    assert links, shown
    lines = SOURCE.split("\n")
    for label, target, code in links:
        assert label == target and 1 <= int(target) <= line + 1, links
        assert lines[int(target) - 1].strip().startswith(code.rstrip("…").strip()), (links, lines[int(target) - 1])
    assert any(code.strip() for _, _, code in links), links

    explained = await execute(client, "whence.explainLine", {"uri": uri, "line": 5})
    assert explained["range"]["start"]["line"] == 5
