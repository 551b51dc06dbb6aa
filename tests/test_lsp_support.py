"""Shared pieces of the LSP end-to-end tests (no tests here): a pytest-lsp client that also
records whence's own notifications and answers workspace/applyEdit like an editor would, and
helpers that drive the real server (`python -m whence_ls serve`) over stdio."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities, make_test_lsp_client

SERVER = ClientServerConfig(server_command=[sys.executable, "-m", "whence_ls", "serve"], client_factory=lambda: whence_client())

PY_SOURCE = '''import os


def read_config(path):
    """Read a config file."""
    with open(path) as handle:
        return handle.read()


def main():
    value = read_config("settings.ini")
    print(value)
'''


def whence_client() -> LanguageClient:
    client = make_test_lsp_client()
    client.statuses = []  # every whence/status notification, in order
    client.applied_edits = []

    @client.feature("whence/status")
    def on_status(ls: LanguageClient, params: Any) -> None:
        ls.statuses.append(plain(params))

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def on_apply_edit(ls: LanguageClient, params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        ls.applied_edits.append(params.edit)
        return types.ApplyWorkspaceEditResult(applied=True)

    @client.feature(types.WORKSPACE_CODE_LENS_REFRESH)
    def on_code_lens_refresh(ls: LanguageClient, params: None) -> None:
        ls.code_lens_refreshes = getattr(ls, "code_lens_refreshes", 0) + 1

    return client


def plain(value: Any) -> Any:
    """pygls hands custom results over as namedtuples; tests compare plain JSON."""
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


async def start(client: LanguageClient, root: Path, options: dict[str, Any], capabilities: str = "visual-studio-code",
                inline_completion: bool = False) -> types.InitializeResult:
    caps = client_capabilities(capabilities)
    if inline_completion:  # an LSP 3.18 client (none of pytest-lsp's recorded ones is)
        caps.text_document.inline_completion = types.InlineCompletionClientCapabilities()
    if caps.text_document and caps.text_document.code_action:
        # resolve commands lazily, as current VS Code does; lsprotocol's client-side parser
        # also mistakes a code action that carries a command for a bare Command
        caps.text_document.code_action.resolve_support = types.ClientCodeActionResolveOptions(properties=["edit", "command"])
    return await client.initialize_session(
        types.InitializeParams(
            capabilities=caps,
            root_uri=root.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name="ws")],
            initialization_options=options,
        )
    )


async def start_ready(client: LanguageClient, root: Path, options: dict[str, Any], **start_options: Any) -> None:
    """`start`, then wait until the model is loaded (the embedded model's sessions)."""
    client.root = root
    await start(client, root, options, **start_options)
    status = await wait_ready(client, timeout=240)
    assert status["state"] == "ready", status


async def request(client: LanguageClient, method: str, params: Any) -> Any:
    return plain(await client.protocol.send_request_async(method, params))


async def wait_ready(client: LanguageClient, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await request(client, "whence/status", {})
        if status["state"] in ("ready", "error"):
            return status
        await asyncio.sleep(0.1)
    raise AssertionError("the model never became ready")


def open_doc(client: LanguageClient, uri: str, text: str, language: str = "python", version: int = 1) -> None:
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(uri=uri, language_id=language, version=version, text=text))
    )


def open_file(client: LanguageClient, name: str, text: str) -> str:
    """Write `name` under the client's root with `text` and open it; its uri."""
    path = client.root / name
    path.write_text(text)
    uri = path.as_uri()
    open_doc(client, uri, text)
    return uri


async def verified_note(client: LanguageClient, record_id: str, seconds: float = 90.0) -> dict:
    """The first `whence/rowsReady` with `verified: true` for `record_id` (a `rows_client`)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for note in client.rows_ready:
            if note["recordId"] == record_id and note.get("verified"):
                return note
        await asyncio.sleep(0.05)
    raise AssertionError(f"no verified rowsReady for {record_id}: {client.rows_ready}")


def rows_client() -> LanguageClient:
    """A whence client that keeps every whence/rowsReady, in order (`client.rows_ready`)."""
    client = whence_client()
    client.rows_ready = []

    @client.feature("whence/rowsReady")
    def on_rows_ready(ls: LanguageClient, params: Any) -> None:
        ls.rows_ready.append(plain(params))

    return client


def change(client: LanguageClient, uri: str, version: int, start: tuple[int, int], end: tuple[int, int], text: str) -> None:
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[
                types.TextDocumentContentChangePartial(
                    range=types.Range(types.Position(*start), types.Position(*end)), text=text
                )
            ],
        )
    )


async def inline(client: LanguageClient, uri: str, line: int, character: int) -> types.InlineCompletionList:
    return await client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line, character),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
        )
    )


async def hover(client: LanguageClient, uri: str, line: int, character: int) -> types.Hover | None:
    return await client.text_document_hover_async(
        types.HoverParams(text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, character))
    )


async def execute(client: LanguageClient, command: str, *arguments: Any) -> Any:
    return plain(await client.workspace_execute_command_async(types.ExecuteCommandParams(command=command, arguments=list(arguments))))


def end_of(text: str) -> tuple[int, int]:
    lines = text.split("\n")
    return len(lines) - 1, len(lines[-1])


async def accept_inline(client: LanguageClient, uri: str, text: str, version: int, line: int, character: int) -> tuple[dict[str, Any], str, int]:
    """Ask for a completion at (line, character), insert it as an editor would, then run the
    item's command. Returns (command result, inserted text, new version)."""
    answer = await inline(client, uri, line, character)
    assert answer.items, "no completion offered"
    item = answer.items[0]
    client.protocol.notify("whence/completionShown", {"completionId": item.command.arguments[0]})
    inserted = item.insert_text if isinstance(item.insert_text, str) else item.insert_text.value
    version += 1
    change(client, uri, version, (line, character), (line, character), inserted)
    result = await execute(client, item.command.command, *item.command.arguments)
    return result, inserted, version


async def execute_settings(client: LanguageClient, values: dict) -> None:
    client.set_configuration({"whence": {**(client.get_configuration(section="whence") or {}), **values}})
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
    await request(client, "whence/status", {})  # a round trip: the server has pulled the settings
