"""Warm-ups (lsp/runtime/warmups.py, moved out of the session in issue 23): the model worker's
first idle work prefills the window of a document's next completion, at the end of a file just
opened when the file fits the window, or where the user edits; a newer request for a document
replaces its older one, and the newest goes first."""

from __future__ import annotations

from whence_ls.lsp.runtime.settings import Settings
from whence_ls.lsp.runtime.warmups import WARM_CHARS_PER_TOKEN, WarmUps
from whence_ls.lsp.text.documents import DocumentStore


def _warmups(settings: Settings) -> tuple[WarmUps, DocumentStore, list[str]]:
    documents = DocumentStore()
    asked: list[str] = []  # the documents whose prompt the warm-ups built, in order

    def prompt_for(document):
        asked.append(document.uri)
        return settings.prompt_options(), []

    warmups = WarmUps(documents, lambda: settings, prompt_for)
    return warmups, documents, asked


def test_the_newest_request_goes_first_and_replaces_an_older_one_for_its_document():
    settings = Settings()
    warmups, documents, asked = _warmups(settings)
    woken = []
    warmups.wake_worker = lambda: woken.append(True)
    for name in ("a", "b"):
        documents.open(f"file:///{name}.py", "import os\n\nx = 1\n", 1, "python")
    warmups.request("file:///a.py")
    warmups.request("file:///b.py")
    warmups.request("file:///a.py", 3)  # an edit in a.py: its warm-up moves to the front
    assert len(woken) == 3
    assert callable(warmups.next_work()) and asked == ["file:///a.py"]
    assert callable(warmups.next_work()) and asked == ["file:///a.py", "file:///b.py"]
    assert warmups.next_work() is None  # a.py's first request was replaced, not kept


def test_a_file_too_long_for_the_window_is_warmed_only_where_it_is_edited():
    settings = Settings()
    warmups, documents, asked = _warmups(settings)
    long_text = "x = 1\n" * (WARM_CHARS_PER_TOKEN * settings.context_tokens // 6 + 10)
    documents.open("file:///long.py", long_text, 1, "python")
    documents.open("file:///blank.py", "\n\n", 1, "python")
    warmups.request("file:///long.py")  # at open: its window depends on a cursor not known yet
    warmups.request("file:///blank.py")  # nothing to warm
    warmups.request("file:///closed.py")  # not open
    assert warmups.next_work() is None and asked == []
    warmups.request("file:///long.py", 120)
    assert callable(warmups.next_work()) and asked == ["file:///long.py"]


def test_a_cursor_move_reported_by_the_lightbulb_request_warms_the_window_there():
    """VS Code asks for code actions (the lightbulb) on every cursor move, with an empty range
    and triggerKind Automatic: that is the server's only word of where the cursor went, and a
    jump there is most likely followed by a completion there. An explicit request (the user
    opened the menu) or a selection does not move the warm-up."""
    from types import SimpleNamespace

    from lsprotocol import types

    from whence_ls.lsp.features.code_actions import CodeActionsFeature
    from whence_ls.lsp.state.records import RecordStore
    from whence_ls.lsp.text import positions

    settings = Settings()
    warmups, documents, _ = _warmups(settings)
    requested: list[tuple[str, int | None]] = []
    warmups.request = lambda uri, cursor=None: requested.append((uri, cursor))
    uri = "file:///a.py"
    documents.open(uri, "import os\n\n\ndef f(x):\n    return x\n", 1, "python")
    session = SimpleNamespace(documents=documents, warmups=warmups, records=RecordStore(),
                              client=SimpleNamespace(client_capabilities=types.ClientCapabilities()),
                              offset=lambda document, position: positions.offset_of(document, position, "utf-16"))
    feature = CodeActionsFeature(session)

    def ask(start, end, trigger):
        feature.code_actions(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), range=types.Range(start, end),
            context=types.CodeActionContext(diagnostics=[], trigger_kind=trigger)))

    ask(types.Position(4, 4), types.Position(4, 4), types.CodeActionTriggerKind.Automatic)
    assert requested == [(uri, len("import os\n\n\ndef f(x):\n    "))]
    ask(types.Position(3, 0), types.Position(4, 4), types.CodeActionTriggerKind.Automatic)  # a selection
    ask(types.Position(3, 0), types.Position(3, 0), types.CodeActionTriggerKind.Invoked)  # the menu, asked for
    assert len(requested) == 1
