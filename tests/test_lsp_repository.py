"""Repository context over the real server: a completion's prompt carries snippets of the other
open file and of the file the document imports; their lines are attribution sources shown with
their path and line; the setting turns it off; the choice stays put while the user types, so
the prefix cache keeps serving."""

from __future__ import annotations

import asyncio

import pytest
import pytest_lsp

from test_lsp_support import SERVER, LanguageClient, accept_inline, execute_settings, open_doc, request, start, wait_ready

pytestmark = pytest.mark.asyncio(loop_scope="module")

HELPERS = '''def human_bytes(n):
    """Format a byte count."""
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def never_mentioned():
    return 42
'''
OPENED = '''def total_size(paths):
    return sum(len(p) for p in paths)
'''
MAIN = '''import os

from pkg.helpers import human_bytes


def report(paths):
    size = total_size(paths)
    print("total:", human_bytes(size))
    for path in paths:
        print(path, human_bytes(os.path.getsize(path)))
    return size
'''


@pytest_lsp.fixture(config=SERVER, scope="module")
async def client(lsp_client: LanguageClient, tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("repository")
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "helpers.py").write_text(HELPERS)  # imported, never opened
    (root / "pkg" / "sizes.py").write_text(OPENED)
    lsp_client.root = root
    lsp_client.initialize_result = await start(
        lsp_client, root, {"model": str(tiny_model_dir), "device": "cpu", "maxNewTokens": 6, "traceIndex": str(root / "none")})
    assert (await wait_ready(lsp_client))["state"] == "ready"
    open_doc(lsp_client, (root / "pkg" / "sizes.py").as_uri(), OPENED)
    yield
    await lsp_client.shutdown_session()


async def _accepted_matrix(client: LanguageClient, name: str):
    path = client.root / "pkg" / name
    path.write_text(MAIN)
    uri = path.as_uri()
    open_doc(client, uri, MAIN)
    line = MAIN.split("\n").index("    return size")
    result, _, _ = await accept_inline(client, uri, MAIN, 2, line, len("    return size"))
    record_id = result["recordId"]
    position = {"line": line, "character": len("    return size")}
    params = {"textDocument": {"uri": uri}, "recordId": record_id, "position": position}
    matrix = await request(client, "whence/attributionMatrix", params)
    for _ in range(120):  # rows are computed in the background after the acceptance
        if any(row is not None for row in matrix["scores"]):
            break
        await asyncio.sleep(0.5)
        matrix = await request(client, "whence/attributionMatrix", params)
    return uri, matrix


async def test_snippets_of_open_and_imported_files_are_sources_with_their_place(client: LanguageClient):
    uri, matrix = await _accepted_matrix(client, "main.py")
    foreign = [u for u in matrix["units"] if "path" in u]
    paths = {u["path"] for u in foreign}
    assert paths == {"pkg/helpers.py", "pkg/sizes.py"}, paths
    helper = next(u for u in foreign if u["text"] == "def human_bytes(n):")
    assert helper["label"] == "pkg/helpers.py:1" and helper["line"] == 0
    assert helper["uri"] == (client.root / "pkg" / "helpers.py").as_uri() and "range" not in helper
    # the block that defines nothing the file uses is not shown to the model
    assert not any("never_mentioned" in u["text"] for u in foreign)
    # the document's own lines keep their ranges; a row's mass reaches the other files' lines
    own = [u for u in matrix["units"] if "path" not in u]
    assert own and all("range" in u for u in own)
    row = next(r for r in matrix["scores"] if r is not None)
    assert abs(sum(abs(x) for x in row) - 1) < 1e-3
    assert sum(abs(row[i]) for i, u in enumerate(matrix["units"]) if "path" in u) > 0


async def test_setting_off_leaves_the_file_alone(client: LanguageClient):
    await execute_settings(client, {"repositoryContext": False})
    try:
        _, matrix = await _accepted_matrix(client, "alone.py")
        assert matrix["units"] and not any("path" in u for u in matrix["units"])
    finally:
        await execute_settings(client, {"repositoryContext": True})
