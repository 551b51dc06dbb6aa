"""Commands on the trace index: build the default index (with progress), and open a traced
source (validated here, opened by the client)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from whence_ls.lsp.protocol.params import invalid_params as _invalid, jsonable, plain, require, single_argument as _single
from whence_ls.lsp.protocol.names import BUILD_COMMAND, OPEN_COMMAND

if TYPE_CHECKING:
    from pygls.lsp.server import LanguageServer

    from whence_ls.lsp.session import Session

log = logging.getLogger(__name__)


class IndexCommands:
    def __init__(self, session: "Session") -> None:
        self.session = session
        self._building: asyncio.Task | None = None

    def register(self, server: "LanguageServer") -> None:
        server.command(OPEN_COMMAND)(plain(self.open_traced_source))
        server.command(BUILD_COMMAND)(plain(self.build_index))

    def open_traced_source(self, *args: Any) -> Any:
        # the client opens it (through whence/tracedSource); the server only validates the hit
        hit = _single(args, dict, "arguments [hit]")
        require(hit, "path", str, "a trace hit with a path")
        return hit

    async def build_index(self, *args: Any) -> dict[str, Any]:
        session = self.session
        if self._building is not None and not self._building.done():
            return await asyncio.shield(self._building)
        self._building = session.spawn(self._build())
        return await asyncio.shield(self._building)

    async def _build(self) -> dict[str, Any]:
        session = self.session
        token = f"whence-index-{uuid.uuid4().hex[:8]}"
        loop = asyncio.get_running_loop()
        progress = False
        window = session.client.client_capabilities.window if session.client.client_capabilities else None
        if window and window.work_done_progress:
            try:
                await session.client.work_done_progress.create_async(token)
                session.client.work_done_progress.begin(token, types.WorkDoneProgressBegin(title="whence: building the trace index", percentage=0))
                progress = True
            except Exception:
                progress = False
        out = session.trace.index_path()

        def report(stage: str, done: int, total: int) -> None:
            if progress:
                percent = int(100 * done / total) if total else 0
                loop.call_soon_threadsafe(
                    session.client.work_done_progress.report, token,
                    types.WorkDoneProgressReport(message=f"{stage} {done}/{total}", percentage=min(100, percent)),
                )

        def build() -> dict[str, Any]:
            from whence_ls.trace import build_index

            return build_index([], str(out), progress=report)

        try:
            summary = await asyncio.to_thread(build)
        except Exception as exc:
            if progress:
                session.client.work_done_progress.end(token, types.WorkDoneProgressEnd(message=f"failed: {exc}"))
            raise _invalid(f"index build failed: {exc}") from None
        if progress:
            session.client.work_done_progress.end(token, types.WorkDoneProgressEnd(message=f"built {out}"))
        session.trace.forget_index()  # reopen: the new index replaced the old one
        session.placement.retrace_all()
        return {"index": str(out), "summary": jsonable(summary)}


