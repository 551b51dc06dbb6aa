"""The whence language server: shared state and the wiring of its features.

`initialize` answers at once; the model loads on the worker thread afterwards (work-done
progress plus `whence/status`). Every feature is a small class that registers its handlers
here and reads the shared documents, records and worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from pathlib import Path
from typing import Any, Callable

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from whence_ls import __version__
from whence_ls.errors import WhenceError
from whence_ls.lsp.attribution_queue import AttributionQueue, attribution_engine
from whence_ls.lsp.documents import Document, DocumentStore
from whence_ls.lsp.params import range_json
from whence_ls.lsp.provenance import ProvenanceLog, log_path
from whence_ls.lsp.records import Record, RecordStore, Unit
from whence_ls.lsp.settings import Settings
from whence_ls.lsp.status import Status
from whence_ls.lsp.trace_search import TraceSearch
from whence_ls.lsp.worker import JobCancelled, ModelNotReady, ModelWorker

log = logging.getLogger(__name__)



class WhenceServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("whence-ls", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.settings = Settings()
        self.documents = DocumentStore()
        self.records = RecordStore()
        self.status = Status(self._notify)
        self.trace = TraceSearch()
        self.worker: ModelWorker | None = None
        self.attribution: AttributionQueue | None = None
        self.provenance: ProvenanceLog | None = None
        self.model_name: str | None = None
        # the engine's default for the loaded model: the calibrated estimator when the model has
        # a calibration, else the best uncalibrated method (set when the model is loaded)
        self.model_default_method: str | None = None
        self.model_calibrated: bool | None = None
        self._loaded_key: tuple | None = None
        self._load_task: asyncio.Task | None = None
        self._logged: set[str] = set()
        self._background: set[asyncio.Task] = set()

        from whence_ls.lsp.code_actions import CodeActionsFeature
        from whence_ls.lsp.code_lens import CodeLensFeature
        from whence_ls.lsp.commands import CommandsFeature
        from whence_ls.lsp.custom import CustomRequestsFeature
        from whence_ls.lsp.diagnostics import DiagnosticsFeature
        from whence_ls.lsp.hover import HoverFeature
        from whence_ls.lsp.inline_completion import InlineCompletionFeature
        from whence_ls.lsp.lifecycle import LifecycleFeature

        self.lifecycle = LifecycleFeature(self)
        self.completions = InlineCompletionFeature(self)
        self.hover = HoverFeature(self)
        self.diagnostics = DiagnosticsFeature(self)
        self.code_lens = CodeLensFeature(self)
        self.code_actions = CodeActionsFeature(self)
        self.commands = CommandsFeature(self)
        self.custom = CustomRequestsFeature(self)
        for feature in (self.lifecycle, self.completions, self.hover, self.diagnostics, self.code_lens,
                        self.code_actions, self.commands, self.custom):
            feature.register()

    # -- start-up --------------------------------------------------------------------------------

    def start_worker(self) -> None:
        """Create the worker and the attribution queue; needs the running event loop."""
        if self.worker is not None:
            return
        loop = asyncio.get_running_loop()
        self.attribution = AttributionQueue(loop, self.attribution_method, self._map_units)
        self.worker = ModelWorker(idle_source=self.attribution.next_work)
        self.attribution.wake_worker = self.worker.wake
        self.attribution.cancel_background = self.worker.background_cancel.set

    def open_provenance(self, root: Path | None) -> None:
        base = root if root is not None else Path.home()
        self.provenance = ProvenanceLog(log_path(base))

    def spawn(self, coroutine) -> asyncio.Task:
        """A background task that is kept alive and whose failure is logged, not lost."""
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)

        def done(t: asyncio.Task) -> None:
            self._background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("background task failed", exc_info=t.exception())

        task.add_done_callback(done)
        return task

    def attribution_method(self) -> str:
        """The configured method, or the engine's default when the setting is null."""
        if self.settings.attribution_method:
            return self.settings.attribution_method
        if self.model_default_method:
            return self.model_default_method
        engine = attribution_engine()
        return getattr(engine, "DEFAULT_METHOD", "gradient_norm") if engine is not None else "gradient_norm"

    # -- model work ------------------------------------------------------------------------------

    async def run_model(self, fn: Callable[[Any, threading.Event], Any], *, completion: bool = False, priority: int = 1) -> Any:
        """Run `fn(lm, cancel)` on the model worker; None (plus a status notification) when no
        model is ready or the job was superseded before it ran."""
        if self.worker is None or not self.status.ready:
            self.status.not_ready()
            return None
        try:
            return await self.worker.run(fn, priority, completion=completion)
        except ModelNotReady:
            self.status.not_ready()
            return None
        except JobCancelled:
            return None

    # -- positions -------------------------------------------------------------------------------

    @property
    def encoding(self) -> str:
        try:
            return str(getattr(self.workspace.position_encoding, "value", self.workspace.position_encoding) or "utf-16")
        except RuntimeError:
            return "utf-16"

    def offset(self, document: Document, position: types.Position) -> int | None:
        """The character offset of `position`, or None when it is outside the document."""
        try:
            return document.offset_at(position.line, position.character, self.encoding)
        except WhenceError:
            return None

    def position(self, document: Document, offset: int) -> types.Position:
        line, character = document.position_at(offset, self.encoding)
        return types.Position(line=line, character=character)

    def range(self, document: Document, start: int, end: int) -> types.Range:
        return types.Range(start=self.position(document, start), end=self.position(document, end))

    def range_json(self, document: Document, start: int, end: int) -> dict[str, Any]:
        return range_json(document.position_at(start, self.encoding), document.position_at(end, self.encoding))

    def _map_units(self, record: Record, units: list[Unit]) -> list[Unit] | None:
        document = self.documents.get(record.uri)
        if document is None:
            return None
        mapped = []
        for unit in units:
            start = document.map_offset(unit.start, record.mark, anchor=False)
            end = document.map_offset(unit.end, record.mark, anchor=True)
            if start is None or end is None:
                return None
            mapped.append(dataclasses.replace(unit, start=start, end=max(start, end)))
        return mapped

    # -- messages --------------------------------------------------------------------------------

    def _notify(self, method: str, params: Any) -> None:
        if self.protocol.writer is not None:
            self.protocol.notify(method, params)

    def log_once(self, message: str) -> None:
        """A window/logMessage for a problem the user should see once, not per keystroke."""
        if message in self._logged:
            return
        self._logged.add(message)
        self.window_log_message(types.LogMessageParams(type=types.MessageType.Warning, message=f"whence: {message}"))


def serve_stdio(log_file: str | None = None, verbose: bool = False) -> None:
    # stdout is the LSP channel: logs go to stderr, or to a file an editor's user can attach
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s whence-ls %(levelname)s %(name)s: %(message)s",
        filename=log_file,
    )
    if verbose:
        for noisy in ("pygls", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    server = WhenceServer()
    server.start_io()
