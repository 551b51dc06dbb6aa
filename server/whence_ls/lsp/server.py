"""The whence language server: builds the session and registers every feature.

`initialize` answers at once; the model loads on the worker thread afterwards (work-done
progress plus `whence/status`). Every feature is a small class over the `Session`
(`session.py`); this module only wires them.
"""

from __future__ import annotations

import logging

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol, lsp_method

from whence_ls import __version__
from whence_ls.lsp.features.code_actions import CodeActionsFeature
from whence_ls.lsp.features.code_lens import CodeLensFeature
from whence_ls.lsp.features.commands.completion import CompletionCommands
from whence_ls.lsp.features.commands.explain import ExplainCommands
from whence_ls.lsp.features.commands.index import IndexCommands
from whence_ls.lsp.features.custom import CustomRequestsFeature
from whence_ls.lsp.features.diagnostics import DiagnosticsFeature
from whence_ls.lsp.features.hover import HoverFeature
from whence_ls.lsp.features.inline_completion import InlineCompletionFeature
from whence_ls.lsp.features.lifecycle import LifecycleFeature
from whence_ls.lsp.features.retention_view import RetentionReportFeature
from whence_ls.lsp.session import Session
from whence_ls.lsp.protocol.transport import serve_stdio_loop
from whence_ls.lsp.protocol.wire import DEFAULT_MAX_BODY_BYTES

log = logging.getLogger(__name__)

FEATURES = (LifecycleFeature, InlineCompletionFeature, HoverFeature, DiagnosticsFeature, CodeLensFeature,
            CodeActionsFeature, CompletionCommands, ExplainCommands, IndexCommands, CustomRequestsFeature,
            RetentionReportFeature)


class WhenceProtocol(LanguageServerProtocol):
    """pygls' protocol without its own copy of each open document: the session keeps one
    (`documents.py`, which must see every edit's old range). pygls' copy re-split the whole
    text at every keystroke, and a change it could not apply (a range past the end) raised
    before our handler ran, so our copy missed the edit."""

    def _user(self, method: str, params):
        if (handler := self.fm.features.get(method)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams):
        yield from self._user(types.TEXT_DOCUMENT_DID_OPEN, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams):
        yield from self._user(types.TEXT_DOCUMENT_DID_CHANGE, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams):
        yield from self._user(types.TEXT_DOCUMENT_DID_CLOSE, params)

    def _send_handler_result(self, future, *, msg_id):
        """Params a handler rejects (`params.invalid_params`) are the client's error, answered
        with one log line; pygls logs each with its traceback, as if the server had failed."""
        error = None if future.cancelled() else future.exception()
        if not isinstance(error, JsonRpcInvalidParams):
            return super()._send_handler_result(future, msg_id=msg_id)
        self._request_futures.pop(msg_id, None)
        log.warning("answered %s to request %r: %s", error.code, msg_id, error.message)
        self._send_response(msg_id, error=error.to_response_error())


class WhenceServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("whence-ls", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
                         protocol_cls=WhenceProtocol)
        self.session = Session(self)
        self.features = [feature(self.session) for feature in FEATURES]
        for feature in self.features:
            feature.register(self)
        self.max_body_bytes = DEFAULT_MAX_BODY_BYTES

    def start_io(self, stdin=None, stdout=None) -> None:
        # our own reader and gate in place of pygls' (see transport.py for why)
        serve_stdio_loop(self, self.max_body_bytes, stdin, stdout)


class _HarmlessCancellations(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Cancel notification for unknown message id")


def _stacks_on_signal() -> None:
    """`kill -USR1 <server pid>` writes every thread's stack to stderr (the editor's output panel
    or `serve --log-file`'s neighbour): a server that stops answering shows where it waits, without
    a debugger. A rare hang after a bench's quiet pass was never explained for want of this."""
    import faulthandler
    import signal

    if hasattr(signal, "SIGUSR1"):  # not on Windows
        faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)


def serve_stdio(log_file: str | None = None, verbose: bool = False, max_message_mb: float | None = None) -> None:
    # stdout is the LSP channel: logs go to stderr, or to a file an editor's user can attach
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s whence-ls %(levelname)s %(name)s: %(message)s",
        filename=log_file,
    )
    if verbose:
        for noisy in ("pygls", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    # editors cancel requests that already finished (the cursor moved on): pygls warns about
    # each one, and editors show server stderr as errors; these are harmless
    logging.getLogger("pygls.protocol.json_rpc").addFilter(_HarmlessCancellations())
    _stacks_on_signal()
    server = WhenceServer()
    if max_message_mb is not None:
        server.max_body_bytes = int(max_message_mb * 1024 * 1024)
    server.start_io()
