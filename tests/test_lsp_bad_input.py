"""Bad input over stdio: unknown URIs, positions out of range, binary, huge (10 MB) and
grammar-less documents, a client that cancels everything and one that never sends didOpen.
Each gets a well-formed answer (empty, or a clear error) and the server keeps serving."""

from __future__ import annotations

import asyncio

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcRequestCancelled

from test_lsp_support import (
    PY_SOURCE, SERVER, LanguageClient, execute, execute_settings, hover, inline, open_doc, request, start, wait_ready,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_lsp.fixture(config=SERVER, scope="module")
async def client(lsp_client: LanguageClient, tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-input")
    lsp_client.root = root
    await start(lsp_client, root, {"model": str(tiny_model_dir), "device": "cpu", "maxNewTokens": 6})
    assert (await wait_ready(lsp_client))["state"] == "ready"
    yield
    await lsp_client.shutdown_session()


async def still_serving(client: LanguageClient) -> None:
    uri = (client.root / "healthy.py").as_uri()
    open_doc(client, uri, PY_SOURCE)
    assert (await request(client, "whence/status", {}))["state"] == "ready"
    assert (await inline(client, uri, 10, 39)).items


def doc_id(uri: str) -> types.TextDocumentIdentifier:
    return types.TextDocumentIdentifier(uri=uri)


async def every_request(client: LanguageClient, uri: str, line: int, character: int) -> dict:
    position = types.Position(line, character)
    return {
        "inline": await inline(client, uri, line, character),
        "completion": await client.text_document_completion_async(types.CompletionParams(text_document=doc_id(uri), position=position)),
        "hover": await hover(client, uri, line, character),
        "lens": await client.text_document_code_lens_async(types.CodeLensParams(text_document=doc_id(uri))),
        "actions": await client.text_document_code_action_async(types.CodeActionParams(
            text_document=doc_id(uri), range=types.Range(position, position), context=types.CodeActionContext(diagnostics=[]))),
        "matrix": await request(client, "whence/attributionMatrix", {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}}),
        "tint": await request(client, "whence/tokenAttribution", {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}}),
    }


def assert_empty(answers: dict) -> None:
    assert answers["inline"].items == ()
    assert answers["completion"].items == ()
    assert answers["hover"] is None
    assert not answers["lens"]
    assert answers["matrix"] is None and answers["tint"] is None


async def test_unknown_uri(client: LanguageClient):
    answers = await every_request(client, "file:///nowhere/at/all.py", 3, 4)
    assert_empty(answers)
    assert not answers["actions"]
    answers = await every_request(client, "untitled:Untitled-9", 0, 0)
    assert_empty(answers)
    await still_serving(client)


async def test_positions_out_of_range(client: LanguageClient):
    uri = (client.root / "range.py").as_uri()
    open_doc(client, uri, PY_SOURCE)
    assert_empty(await every_request(client, uri, 999, 0))
    # a column past the end of a line means the line's end (LSP): a completion there is fine
    answer = await inline(client, uri, 10, 500)
    assert answer.items and answer.items[0].range.start == types.Position(10, 500)
    with pytest.raises(JsonRpcException, match="outside the document"):
        await execute(client, "whence.explainLine", {"uri": uri, "line": 999})
    with pytest.raises(JsonRpcException, match="unknown or expired completion"):
        await execute(client, "whence.acceptCompletion", "no-such-id")
    await still_serving(client)


async def test_binary_and_grammarless_documents(client: LanguageClient):
    binary = (client.root / "blob.bin").as_uri()
    open_doc(client, binary, "\x00\x01\x02ELF\x00" * 100, language="plaintext")
    answers = await every_request(client, binary, 0, 10)
    assert_empty(answers)
    assert not answers["actions"]
    assert any("binary" in m.message for m in client.log_messages)

    # a language without a grammar: completion still works (no block-end detection)
    cobol = (client.root / "prog.cob").as_uri()
    text = "IDENTIFICATION DIVISION.\nPROGRAM-ID. HELLO.\nPROCEDURE DIVISION.\n    DISPLAY 'HELLO'.\n"
    open_doc(client, cobol, text, language="cobol")
    answer = await inline(client, cobol, 3, 20)
    assert answer.items and answer.items[0].insert_text.strip()
    await still_serving(client)


async def test_huge_document(client: LanguageClient):
    uri = (client.root / "huge.py").as_uri()
    body = "def f_{0}(x):\n    return x + {0}\n\n"
    text = "".join(body.format(i) for i in range(340_000))[: 10 * 1024 * 1024]
    text = text[: text.rfind("\n") + 1] + "def last(value):\n    return value"
    assert len(text) > 10_000_000
    open_doc(client, uri, text)
    lines = text.count("\n")
    answer = await inline(client, uri, lines, len("    return value"))
    assert isinstance(answer, types.InlineCompletionList)  # well-formed, whatever the model says
    assert await hover(client, uri, lines, 3) is None
    # an edit near the end and another request: the server keeps the big document in step
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(types.Position(lines, 0), types.Position(lines, 0)), text="# tail\n")],
    ))
    again = await inline(client, uri, lines + 1, len("    return value"))
    assert isinstance(again, types.InlineCompletionList)
    client.text_document_did_close(types.DidCloseTextDocumentParams(text_document=doc_id(uri)))
    await still_serving(client)


async def test_client_that_cancels_everything(client: LanguageClient):
    uri = (client.root / "cancel.py").as_uri()
    open_doc(client, uri, PY_SOURCE)
    protocol = client.protocol
    outcomes = []
    # the longest generation the settings allow, cancelled as soon as it is sent: with 6 tokens a
    # fast machine answered every request before its cancellation arrived (CI, stop 7)
    await execute_settings(client, {"maxNewTokens": 1024})
    try:
        for n, (line, character) in enumerate([(10, 39), (6, 28), (5, 30), (3, 22)]):
            msg_id = f"cancel-me-{n}"
            future = asyncio.ensure_future(protocol.send_request_async(
                types.TEXT_DOCUMENT_INLINE_COMPLETION,
                types.InlineCompletionParams(text_document=doc_id(uri), position=types.Position(line, character),
                                             context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)),
                msg_id=msg_id,
            ))
            await asyncio.sleep(0)  # the request is written before its cancellation
            protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
            try:
                outcomes.append(await future)
            except JsonRpcRequestCancelled:
                outcomes.append("cancelled")
    finally:
        await execute_settings(client, {"maxNewTokens": 6})
    # every request got an answer: the cancellation error, or a well-formed (possibly empty) list
    assert all(o == "cancelled" or isinstance(o, types.InlineCompletionList) for o in outcomes)
    assert "cancelled" in outcomes
    await still_serving(client)


async def test_client_that_never_sends_did_open(client: LanguageClient):
    path = client.root / "on_disk.py"
    path.write_text(PY_SOURCE)
    uri = path.as_uri()
    # read from disk: completions work without didOpen; nothing else has records to show
    answer = await inline(client, uri, 10, 39)
    assert answer.items and answer.items[0].insert_text
    assert await hover(client, uri, 10, 5) is None
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=doc_id(uri), range=types.Range(types.Position(10, 0), types.Position(10, 0)),
        context=types.CodeActionContext(diagnostics=[])))
    assert [a.title for a in actions] == ["whence: Explain this line"]
    # a didChange for a document that was never opened is ignored, not a crash
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri="file:///never/opened.py", version=3),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text="x = 1\n")],
    ))
    await still_serving(client)


async def test_files_outside_the_workspace_are_never_read(client: LanguageClient, tmp_path_factory):
    """A file the client never opened is read from disk only inside the workspace folders: not
    another directory, not through a symlink out of the workspace, not through `..`."""
    outside = tmp_path_factory.mktemp("outside")
    secret = outside / "secret.py"
    secret.write_text("TOKEN = 'hunter2-do-not-reveal'\n" + PY_SOURCE)
    link = client.root / "looks_inside.py"
    link.symlink_to(secret)
    dotted = client.root.as_uri() + "/../" + outside.name + "/secret.py"
    for uri in (secret.as_uri(), link.as_uri(), dotted):
        assert not (await inline(client, uri, 10, 39)).items
        with pytest.raises(JsonRpcException, match="unknown document"):
            await execute(client, "whence.explainLine", {"uri": uri, "line": 1})
    await still_serving(client)
