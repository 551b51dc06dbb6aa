"""Start-up, settings, model loading and document synchronisation."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import uuid
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from whence_ls.lsp.protocol.params import plain

from whence_ls.engine.attribution.catalogue import FALLBACK_METHOD
from whence_ls.lsp.text.documents import uri_to_path
from whence_ls.lsp.runtime.settings import Settings
from whence_ls.errors import WhenceError

if TYPE_CHECKING:
    from pygls.lsp.server import LanguageServer

    from whence_ls.lsp.session import Session

log = logging.getLogger(__name__)

LOAD_TITLE = "whence: loading model"
# how long to wait for the client's answer to a server request (configuration, progress) before
# going on without it: a client that never answers must not stop the model from loading
CONFIGURATION_TIMEOUT_S = 3.0
# how long `exit` waits for the model worker to finish its current job
EXIT_WAIT_S = 2.0
# how often the load progress moves on within one stage
LOAD_TICK_S = 0.5


class LifecycleFeature:
    def __init__(self, session: "Session") -> None:
        self.session = session
        self._loaded_key: tuple | None = None  # the settings the loaded (or loading) model came from
        self._load_task: asyncio.Task | None = None

    def register(self, server: "LanguageServer") -> None:
        ls = server
        ls.feature(types.INITIALIZE)(plain(self.initialize))
        ls.feature(types.INITIALIZED)(plain(self.initialized))
        ls.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)(plain(self.did_change_configuration))
        ls.feature(types.TEXT_DOCUMENT_DID_OPEN)(plain(self.did_open))
        ls.feature(types.TEXT_DOCUMENT_DID_CHANGE)(plain(self.did_change))
        ls.feature(types.TEXT_DOCUMENT_DID_CLOSE)(plain(self.did_close))
        ls.feature(types.TEXT_DOCUMENT_DID_SAVE, types.SaveOptions(include_text=False))(plain(self.did_save))
        ls.feature(types.SHUTDOWN)(plain(self.shutdown))
        ls.feature(types.EXIT)(plain(self.exit))

    # -- start-up --------------------------------------------------------------------------------

    def initialize(self, params: types.InitializeParams) -> None:
        # answers at once: nothing here touches the model
        session = self.session
        session.start_worker()
        for hook in session.initialize_hooks:
            hook(params)
        options = params.initialization_options
        # a client that renders whence/status itself (ours) gets no work-done progress as well
        session.client_renders_status = isinstance(options, dict) and options.get("clientRendersStatus") is True
        self.apply_settings(options)
        root = None
        if params.workspace_folders:
            root = uri_to_path(params.workspace_folders[0].uri)
        elif params.root_uri:
            root = uri_to_path(params.root_uri)
        elif params.root_path:
            from pathlib import Path

            root = Path(params.root_path)
        session.open_provenance(root)
        roots = [uri_to_path(f.uri) for f in params.workspace_folders or []]
        roots.append(root)
        session.documents.set_roots([r for r in roots if r is not None])
        # no notification yet: before the initialize answer a server may only log or show messages
        session.status.state, session.status.message, session.status.progress = "loading", "waiting for settings", 0

    async def initialized(self, params: types.InitializedParams) -> None:
        await self.pull_configuration()
        self.start_loading()

    async def did_change_configuration(self, params: types.DidChangeConfigurationParams) -> None:
        settings = params.settings
        if isinstance(settings, dict) and settings:
            self.apply_settings(settings)
        else:
            await self.pull_configuration()
        self.start_loading()

    async def pull_configuration(self) -> None:
        session = self.session
        workspace = session.client.client_capabilities.workspace if session.client.client_capabilities else None
        if not (workspace and workspace.configuration):
            return
        pull = session.settings_pull = asyncio.get_running_loop().create_future()
        try:
            answer = await asyncio.wait_for(
                session.client.workspace_configuration_async(
                    types.ConfigurationParams(items=[types.ConfigurationItem(section="whence")])
                ),
                CONFIGURATION_TIMEOUT_S,
            )
            if answer and isinstance(answer[0], dict):
                self.apply_settings(answer[0])
        except Exception as exc:  # a client that cannot answer still gets a server with defaults
            log.warning("workspace/configuration failed: %s", exc)
        finally:
            pull.set_result(None)
            if session.settings_pull is pull:
                session.settings_pull = None

    def apply_settings(self, raw: Any) -> None:
        session = self.session
        before = session.settings
        settings, problems = before.merged(raw)
        for problem in problems:
            session.client.window_show_message(types.ShowMessageParams(type=types.MessageType.Warning, message=f"whence: {problem}"))
        session.settings = settings
        session.trace.configure(settings.trace_index)
        if settings.attribution_method != before.attribution_method and session.attribution is not None:
            session.attribution.reset(session.records.all())
        if (settings.max_new_tokens, settings.context_tokens) != (before.max_new_tokens, before.context_tokens):
            session.completion_cache.clear()

    # -- the model -------------------------------------------------------------------------------

    def start_loading(self) -> None:
        """Load the configured model unless it is the one loaded (or loading) already."""
        session = self.session
        key = session.settings.model_key()
        if key == self._loaded_key:
            return
        self._loaded_key = key
        self._load_task = session.spawn(self.load(session.settings))

    async def load(self, settings: Settings) -> None:
        session = self.session
        assert session.worker is not None
        name = settings.model or "embedded (smollm2-135m-instruct)"
        token = f"whence-load-{uuid.uuid4().hex[:8]}"
        progress = await self._progress_begin(token, f"loading {name}")
        loop = asyncio.get_running_loop()
        session.status.set("loading", f"loading {name}", progress=5, model=name, device=settings.device)

        def report(percent: int, message: str) -> None:
            def send() -> None:
                session.status.set("loading", message, progress=percent)
                if progress:
                    session.client.work_done_progress.report(token, types.WorkDoneProgressReport(message=message, percentage=percent))

            loop.call_soon_threadsafe(send)

        found: dict[str, str] = {}

        def loader():
            # each stage reports where it starts; a ticker moves the bar on within a stage, so a
            # long one (importing torch, reading weights) does not look stuck
            stage = {"percent": 8, "ceiling": 30, "message": "importing torch and transformers"}
            stopped = threading.Event()

            def tick() -> None:
                while not stopped.wait(LOAD_TICK_S):
                    stage["percent"] = min(stage["ceiling"] - 1, stage["percent"] + 3)
                    report(stage["percent"], stage["message"])

            def begin(percent: int, ceiling: int, message: str) -> None:
                stage.update(percent=percent, ceiling=ceiling, message=message)
                report(percent, message)

            from whence_ls.engine.model_spec import missing_model

            missing = missing_model(settings.model)
            if missing is not None:  # said at once, not after importing torch (a minute, on a busy machine)
                raise WhenceError(missing)
            ticker = threading.Thread(target=tick, name="whence-load-progress", daemon=True)
            begin(8, 30, "importing torch and transformers")
            ticker.start()
            try:
                from whence_ls.engine.loading import load_model

                begin(30, 70, f"reading weights of {name}")
                lm = load_model(settings.model, settings.device, precision=settings.precision)
                begin(70, 90, "preparing the vocabulary table")
                lm.token_texts()  # token healing needs it; building it here keeps the first completion fast
                from whence_ls.engine.generation import measure_prefill_rate

                measure_prefill_rate(lm)  # the bound on a cold prefill (`coldPrefillMs`) needs it from the start
                begin(90, 100, "reading the attribution calibration")
                from whence_ls.engine.attribution import default_method  # torch's methods, off the event loop

                found["default_method"] = default_method(lm)  # reads the calibration, once
                from whence_ls.engine.attribution.live_rows import LiveAttention

                # decides, once per model, whether completions can capture their rows as they
                # decode (two probe forwards: 0.3-0.6 s the first completion would otherwise wait),
                # and builds the stacked estimator's live weights where its scorer ships (~0.4 s)
                LiveAttention.for_model(lm, stacked=True)
                try:
                    from whence_ls.engine.sae import load_for

                    found["sae"] = load_for(lm)[0] is not None
                except Exception as exc:  # a broken SAE set costs the feature line, never the model
                    log.warning("sparse autoencoders not used: %s", exc)
                    found["sae"] = False
            finally:
                stopped.set()
            return lm

        try:
            lm = await asyncio.wrap_future(session.worker.load(loader))
        except Exception as exc:
            message = str(exc) if exc.__class__.__name__ == "WhenceError" else f"{type(exc).__name__}: {exc}"
            log.error("model load failed: %s", message)
            session.model_name = None
            session.status.set("error", f"cannot load the model: {message}", progress=None)
            session.client.window_show_message(types.ShowMessageParams(type=types.MessageType.Error, message=f"whence: cannot load the model: {message}"))
            if progress:
                session.client.work_done_progress.end(token, types.WorkDoneProgressEnd(message=f"failed: {message}"))
            return
        if session.settings.model_key() != settings.model_key():
            return  # settings changed while loading: the newer load reports
        session.model_name = lm.name
        session.sae.available = bool(found.get("sae"))
        default_method = found.get("default_method")
        if default_method is not None:
            before = session.attribution_method()
            session.model_default_method = default_method
            session.model_calibrated = default_method != FALLBACK_METHOD
            if session.attribution is not None and session.attribution_method() != before:
                session.attribution.reset(session.records.all())
        session.completion_cache.clear()
        session.status.set("ready", f"{lm.name} on {lm.device_label}, loaded in {lm.load_seconds:.1f}s", progress=100, model=lm.name, device=lm.device_label)
        if progress:
            session.client.work_done_progress.end(token, types.WorkDoneProgressEnd(message="ready"))
        session.worker.wake()

    async def _progress_begin(self, token: str, message: str) -> bool:
        session = self.session
        window = session.client.client_capabilities.window if session.client.client_capabilities else None
        if not (window and window.work_done_progress) or session.client_renders_status:
            return False
        try:
            await asyncio.wait_for(session.client.work_done_progress.create_async(token), CONFIGURATION_TIMEOUT_S)
        except Exception as exc:
            log.warning("work done progress refused: %s", exc)
            return False
        session.client.work_done_progress.begin(token, types.WorkDoneProgressBegin(title=LOAD_TITLE, message=message, percentage=0, cancellable=False))
        return True

    # -- documents -------------------------------------------------------------------------------

    def did_open(self, params: types.DidOpenTextDocumentParams) -> None:
        item = params.text_document
        session = self.session
        session.records.drop_uri(item.uri)
        session.retention.reopened(item.uri)
        session.documents.open(item.uri, item.text, item.version, item.language_id)
        session.warmups.request(item.uri)

    def did_change(self, params: types.DidChangeTextDocumentParams) -> None:
        session = self.session
        uri = params.text_document.uri
        document = session.documents.get(uri)
        if document is None or document.from_disk:
            return  # never opened: nothing to follow (requests read the file from disk)
        touched = False
        edited_at = None
        for change in params.content_changes:
            if isinstance(change, types.TextDocumentContentChangePartial):
                start = session.offset(document, change.range.start)
                end = session.offset(document, change.range.end)
                if start is None or end is None or end < start:
                    log.warning("%s: change range %s outside the document; resyncing is up to the client", uri, change.range)
                    continue
                edit = document.apply(start, end, change.text)
                edited_at = start + len(change.text)
            else:
                edit = document.replace_all(change.text)
            session.retention.apply(uri, edit)
            for dropped in session.records.apply(uri, edit):
                if session.attribution is not None:
                    session.attribution.forget(dropped)
            touched = True
        document.version = params.text_document.version
        if touched:
            session.note_typing()
            session.placement.place_pending(uri)
            session.publish_diagnostics(uri)
            if edited_at is not None:
                session.warmups.request(uri, edited_at)  # the next completion is most likely asked here
            for hook in session.document_hooks:
                hook(uri, document.text)

    def did_close(self, params: types.DidCloseTextDocumentParams) -> None:
        session = self.session
        uri = params.text_document.uri
        for record in session.records.drop_uri(uri):
            if session.attribution is not None:
                session.attribution.forget(record)
        session.retention.closed(uri)  # its last checkpoint, from the text as it was at the close
        session.documents.close(uri)
        session.clear_diagnostics(uri)
        for hook in session.document_hooks:
            hook(uri, None)

    def did_save(self, params: types.DidSaveTextDocumentParams) -> None:
        self.session.retention.saved(params.text_document.uri)

    def shutdown(self, params: Any) -> None:
        # answers at once: the worker is told to stop, and `exit` waits for it
        session = self.session
        if session.worker is not None:
            session.worker.stop()
        if session.attribution is not None:
            session.attribution.close()
        session.trace.shutdown()
        if session.provenance is not None:
            session.provenance.close()

    def exit(self, params: Any) -> None:
        session = self.session
        stopped = session.worker is None or session.worker.stop(timeout=EXIT_WAIT_S)
        # a thread that is not a daemon (the rows' light lane, a library's pool) would hold the
        # interpreter's teardown until its work ends: an editor waits for the exit meanwhile
        lingering = [t for t in threading.enumerate() if t.is_alive() and not t.daemon and t is not threading.main_thread()
                     and t is not threading.current_thread()]
        if stopped and not lingering:
            return
        # torch is still inside a batch on the worker thread, and a process that exits under it
        # aborts (SIGABRT, "terminate called without an active exception"); everything worth
        # keeping is committed already (the provenance log is written at acceptance), so leave
        # without running interpreter teardown
        sys.stdout.flush()
        os._exit(0 if session.client.protocol._shutdown else 1)
