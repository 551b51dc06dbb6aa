"""The session: the state and services a feature may use (documents, records, worker, settings,
status, provenance, trace search, positions, warm-ups, SAE features) and the few hooks through
which features reach each other. The services live in their rooms (`runtime/warmups.py`,
`runtime/sae_lookup.py`, ...); the session only builds and wires them. Features take a Session; `server.py` builds one and registers the features, and no
feature imports the server or another feature's module.

`client` is the language server as the features see it (`Client`): the pygls calls they make
towards the editor, and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Protocol

from lsprotocol import types

from whence_ls.engine.attribution.catalogue import DEFAULT_METHOD
from whence_ls.lsp.runtime.attribution_queue import AttributionQueue
from whence_ls.lsp.runtime.verification_queue import VerificationQueue
from whence_ls.lsp.text.documents import Document, DocumentStore
from whence_ls.lsp.state.repository_context import RepositoryContext, repository_name
from whence_ls.lsp.state.offers import CompletionCache, OfferBook
from whence_ls.lsp.text import positions
from whence_ls.lsp.state.placement import Placement
from whence_ls.provenance import ProvenanceLog, log_path
from whence_ls.lsp.state.records import Record, RecordStore
from whence_ls.lsp.state.retention import Retention
from whence_ls.lsp.runtime.settings import Settings
from whence_ls.lsp.runtime.status import Status
from whence_ls.lsp.state.trace_search import TraceSearch
from whence_ls.lsp.runtime.sae_lookup import SaeLookup
from whence_ls.lsp.runtime.warmups import WarmUps
from whence_ls.lsp.runtime.worker import INTERACTIVE, JobCancelled, ModelNotReady, ModelWorker
from whence_ls.lsp.state.workspace_flags import WorkspaceFlags

log = logging.getLogger(__name__)

class Client(Protocol):
    """What features call on the pygls server: messages and requests towards the editor."""

    client_capabilities: types.ClientCapabilities
    protocol: Any
    workspace: Any
    work_done_progress: Any

    def window_show_message(self, params: types.ShowMessageParams) -> None: ...
    def window_log_message(self, params: types.LogMessageParams) -> None: ...
    def text_document_publish_diagnostics(self, params: types.PublishDiagnosticsParams) -> None: ...
    def workspace_code_lens_refresh(self, params: None = None) -> Any: ...
    async def workspace_configuration_async(self, params: types.ConfigurationParams) -> Any: ...
    async def workspace_apply_edit_async(self, params: types.ApplyWorkspaceEditParams) -> Any: ...
    def feature(self, name: str, options: Any = None) -> Callable: ...


# verification (the background's heaviest and least urgent work) waits until the user has not
# typed for this long: run on a core the editor shares, its mask batches made keystrokes that
# need no model work (a kept completion's rest) take 20-50 ms instead of 3-10 (docs/benchmarks.md)
TYPING_HOLD_S = 1.0
# warm-ups (a prefill at the cursor) wait for a pause this long: one at every key, 100-200 ms
# apart, is work thrown away at the next key, on the core the editor needs for that key
WARM_UP_PAUSE_S = 0.25


class Session:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.settings = Settings()
        # set while the settings are being pulled from the client (workspace/configuration):
        # a request that arrives meanwhile waits for them, as it came after the change
        self.settings_pull: "asyncio.Future | None" = None
        self.client_renders_status = False  # initializationOptions.clientRendersStatus
        self.documents = DocumentStore()
        self.records = RecordStore()
        self.status = Status(self._notify)
        self.trace = TraceSearch()
        self.offers = OfferBook()  # completions offered and not yet accepted
        self.completion_cache = CompletionCache()
        self.repository = RepositoryContext(self.documents)
        self.worker: ModelWorker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the event loop, once the worker starts
        self.attribution: AttributionQueue | None = None
        self.verification: VerificationQueue | None = None
        self.provenance: ProvenanceLog | None = None
        self.model_name: str | None = None
        # the engine's default for the loaded model: the calibrated estimator when the model has
        # a calibration, else the best uncalibrated method (set when the model is loaded)
        self.model_default_method: str | None = None
        self.model_calibrated: bool | None = None
        # a token's SAE features (hover, whence/feature); `sae.available` is set when a model loads
        self.sae = SaeLookup(self.run_model, self.spawn)
        self._logged: set[str] = set()
        # the next completion's window, prefilled when the model is idle (open, edits)
        self.warmups = WarmUps(self.documents, lambda: self.settings, self.prompt_for)
        self._background: set[asyncio.Task] = set()
        # hooks the features that own them install when they register
        self.initialize_hooks: list[Callable[[types.InitializeParams], None]] = []
        # (uri, document offset where the accepted text ends), after an acceptance is recorded
        self.accept_hooks: list[Callable[[str, int], None]] = []
        # (uri, its new text, or None when closed), after every change of an open document
        self.document_hooks: list[Callable[[str, str | None], None]] = []
        self.publish_diagnostics: Callable[[str], None] = lambda uri: None
        self.clear_diagnostics: Callable[[str], None] = lambda uri: None
        self.placement = Placement(self)  # accepted text -> records, their provenance and trace
        self.retention = Retention(self)  # what of each acceptance is still as written
        self.workspace_flags = WorkspaceFlags()  # the flag learned from this workspace's edits
        self._typed_at = float("-inf")  # time.monotonic() of the last edit of an open document
        self._wakes: list[asyncio.TimerHandle] = []  # the worker's wake-ups when the holds end
        self.retention.on_checkpoint.append(self.workspace_flags.observed)

    # -- start-up --------------------------------------------------------------------------------

    def start_worker(self) -> None:
        """Create the worker and the attribution queue; needs the running event loop."""
        if self.worker is not None:
            return
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.attribution = AttributionQueue(loop, self.attribution_method, self._map_units)
        self.attribution.on_activity = self._attribution_activity
        self.worker = ModelWorker(idle_source=self._idle_work, pinned_threads=lambda: self.settings.threads,
                                  on_threads=lambda choice: loop.call_soon_threadsafe(self.status.set_threads, choice.to_json()))
        self.attribution.wake_worker = self.worker.wake
        self.warmups.wake_worker = self.worker.wake
        self.attribution.model = lambda: self.worker.lm if self.worker is not None else None
        self.attribution.on_light = lambda: self.status.count("rowsFromGeneration")
        self.attribution.cancel_background = self.worker.background_cancel.set
        self.attribution.wait_quiet = self.worker.wait_quiet
        self.verification = VerificationQueue(loop, lambda: self.settings.verify_rows and self.attribution_method() != "none")
        self.verification.wake_worker = self.worker.wake
        self.attribution.verification = self.verification

    def prompt_for(self, document: Document) -> tuple[Any, list[Any]]:
        """The prompt options and other files' snippets for a completion in `document`."""
        import dataclasses

        settings = self.settings
        options = dataclasses.replace(settings.prompt_options(), file_path=self.repository.shown_path(document.uri),
                                      repository_name=repository_name(self.documents.roots))
        snippets = self.repository.snippets(document, options.repository_tokens) if settings.repository_context else []
        return options, snippets

    def _idle_work(self) -> Callable[[Any, threading.Event], None] | None:
        """Background work for the model worker (its thread): warm-ups first, they make the next
        completion faster (once typing pauses, `WARM_UP_PAUSE_S`); then attribution rows; then
        verification (once the user has not typed for `TYPING_HOLD_S`)."""
        warm = None if self.typing(WARM_UP_PAUSE_S) else self.warmups.next_work()
        if warm is not None:
            self._loop.call_soon_threadsafe(self.status.count, "warmUps")
            return warm
        if self.attribution is None:
            return None
        # verified rows come last: after every estimate row (and prefetch) that is waiting
        work = self.attribution.next_work()
        if work is not None or self.verification is None or self.typing():
            return work  # while typing: `note_typing` wakes the worker when the hold ends
        return self.verification.next_work()

    def note_typing(self) -> None:
        """An open document changed: hold warm-ups back for `WARM_UP_PAUSE_S` and verification for
        `TYPING_HOLD_S` (the worker is woken when each hold ends), and stop a verification step
        under way at its next mask batch (it resumes from there)."""
        self._typed_at = time.monotonic()
        if self.worker is None:
            return
        if self.verification is not None and self.verification.running():
            self.worker.background_cancel.set()
        for handle in self._wakes:
            handle.cancel()
        self._wakes = [self._loop.call_later(delay + 0.01, self.worker.wake) for delay in (WARM_UP_PAUSE_S, TYPING_HOLD_S)]

    def typing(self, within: float = TYPING_HOLD_S) -> bool:
        """Whether an open document was edited in the last `within` seconds."""
        return time.monotonic() - self._typed_at < within

    def _attribution_activity(self, activity: str | None) -> None:
        self.status.show(explaining=activity)

    def open_provenance(self, root: Path | None) -> None:
        base = root if root is not None else Path.home()
        self.provenance = ProvenanceLog(log_path(base))
        # what this workspace's earlier edits teach the flags, read off the event loop
        self.spawn(asyncio.to_thread(self.workspace_flags.load, log_path(base)))

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

    async def current_settings(self) -> Settings:
        """The settings, once a pull in flight has answered (it is bounded by its timeout)."""
        pull = self.settings_pull
        if pull is not None and not pull.done():
            await asyncio.shield(pull)
        return self.settings

    def attribution_method(self) -> str:
        """The configured method, or the engine's default when the setting is null."""
        if self.settings.attribution_method:
            return self.settings.attribution_method
        if self.model_default_method:
            return self.model_default_method
        return DEFAULT_METHOD

    # -- model work ------------------------------------------------------------------------------

    async def run_model(self, fn: Callable[[Any, threading.Event], Any], *, completion: bool = False, priority: int = INTERACTIVE,
                        preemptible: bool = False) -> Any:
        """Run `fn(lm, cancel)` on the model worker; None (plus a status notification) when no
        model is ready or the job was superseded before it ran."""
        if self.worker is None or not self.status.ready:
            self.status.not_ready()
            return None
        try:
            return await self.worker.run(fn, priority, completion=completion, preemptible=preemptible)
        except ModelNotReady:
            self.status.not_ready()
            return None
        except JobCancelled:
            return None

    # -- positions -------------------------------------------------------------------------------

    @property
    def encoding(self) -> str:
        try:
            workspace = self.client.workspace
            return str(getattr(workspace.position_encoding, "value", workspace.position_encoding) or "utf-16")
        except RuntimeError:
            return "utf-16"

    def offset(self, document: Document, position: types.Position) -> int | None:
        """The character offset of `position`, or None when it is outside the document."""
        return positions.offset_of(document, position, self.encoding)

    def position(self, document: Document, offset: int) -> types.Position:
        return positions.position_of(document, offset, self.encoding)

    def range(self, document: Document, start: int, end: int) -> types.Range:
        return positions.range_of(document, start, end, self.encoding)

    def range_json(self, document: Document, start: int, end: int) -> dict[str, Any]:
        return positions.range_json_of(document, start, end, self.encoding)

    def _map_units(self, record: Record, units: list[Any]) -> list[list[int]] | None:
        """Where the engine's sources of `record` (offsets of the text it was computed from)
        are in the document now, [start, end) each; None when the document moved on too far."""
        document = self.documents.get(record.uri)
        if document is None:
            return None
        spans = []
        for unit in units:
            if unit.path is not None:  # another file's snippet: its offsets are that file's
                spans.append([unit.start, unit.end])
                continue
            start = document.map_offset(unit.start, record.mark, anchor=False)
            end = document.map_offset(unit.end, record.mark, anchor=True)
            if start is None or end is None:
                return None
            spans.append([start, max(start, end)])
        return spans

    # -- messages --------------------------------------------------------------------------------

    def notify(self, method: str, params: Any) -> None:
        """A notification to the client (none before it is connected)."""
        self._notify(method, params)

    def _notify(self, method: str, params: Any) -> None:
        if self.client.protocol.writer is not None:
            self.client.protocol.notify(method, params)

    def log_once(self, message: str) -> None:
        """A window/logMessage for a problem the user should see once, not per keystroke."""
        if message in self._logged:
            return
        self._logged.add(message)
        self.client.window_log_message(types.LogMessageParams(type=types.MessageType.Warning, message=f"whence: {message}"))

