"""The trace index as the server sees it: opened lazily, searched off the event loop.

Searches run on their own single thread (the index's embedding model is not the code LM, so
they need not queue behind generation); one thread keeps index access serial.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from pathlib import Path
from typing import Any

from whence_ls.paths import default_index_dir

log = logging.getLogger(__name__)

TOP_HITS = 5


class NoIndex(Exception):
    """No trace index is configured or built; the message says which path was looked at."""


class TraceSearch:
    def __init__(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="whence-trace")
        self._path: Path | None = None
        self._index: Any = None
        self._configured: str | None = None

    def configure(self, trace_index: str | None) -> None:
        if trace_index != self._configured:
            self._configured = trace_index
            self._index = None
            self._path = None

    def index_path(self) -> Path:
        return Path(self._configured).expanduser() if self._configured else default_index_dir()

    def _open(self) -> Any:
        path = self.index_path()
        if self._index is not None and self._path == path:
            return self._index
        try:
            from whence_ls.trace import index_present, open_index
        except ImportError as exc:
            raise NoIndex(f"the trace package is not available: {exc}") from exc
        if not index_present(path):  # restores an index a killed build left as its backup
            hint = "set whence.traceIndex" if self._configured else "run `whence-ls index build` or the whence.buildIndex command"
            raise NoIndex(f"no trace index at {path} ({hint})")
        self._index = open_index(path)
        self._path = path
        return self._index

    def _search(self, code: str, language: str | None, first_line: int) -> list[dict[str, Any]]:
        index = self._open()
        return [hit.to_json() for hit in index.search(code, language=language, k=TOP_HITS, first_line=first_line)]

    def _read(self, hit: dict[str, Any]) -> str:
        index = self._open()
        return index.read_source(_hit_object(index, hit))

    async def search(self, code: str, language: str | None, first_line: int = 1) -> list[dict[str, Any]]:
        """The top traced sources of `code` as JSON hits; NoIndex when there is no index."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._search, code, language, first_line)

    async def read_source(self, hit: dict[str, Any]) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._read, hit)

    def forget_index(self) -> None:
        self._index = None
        self._path = None

    def index_exists(self) -> bool:
        try:
            from whence_ls.trace import index_present
        except ImportError:
            return self.index_path().exists()
        return index_present(self.index_path())

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _hit_object(index: Any, hit: dict[str, Any]) -> Any:
    """The trace hit object `read_source` takes, rebuilt from its JSON form."""
    from whence_ls.trace import TraceHit

    return TraceHit.from_json(hit)


def hits_note(exc: Exception) -> str:
    """Why a record has no trace hits, for its lens."""
    return str(exc) if isinstance(exc, NoIndex) else f"trace search failed: {exc}"
