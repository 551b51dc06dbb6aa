"""A code lens above each accepted completion: its top traced source, or, with no index, a lens
that says so and offers to build the default one."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from lsprotocol import types

from whence_ls.lsp.protocol.names import BUILD_COMMAND, OPEN_COMMAND
from whence_ls.lsp.protocol.params import as_json, plain
from whence_ls.lsp.state.records import Record

if TYPE_CHECKING:
    from pygls.lsp.server import LanguageServer

    from whence_ls.lsp.session import Session

log = logging.getLogger(__name__)



class CodeLensFeature:
    def __init__(self, session: "Session") -> None:
        self.session = session

    def register(self, server: "LanguageServer") -> None:
        ls = server
        ls.feature(types.TEXT_DOCUMENT_CODE_LENS, types.CodeLensOptions(resolve_provider=True))(plain(self.code_lens))
        ls.feature(types.CODE_LENS_RESOLVE)(plain(self.resolve))

    def code_lens(self, params: types.CodeLensParams) -> list[types.CodeLens]:
        """A lens only where it says something: above each completion the index traced to a
        source. Without any index, one hint (on the newest completion) offers to build one; a
        completion whose search found nothing, or is still running, gets no lens (the search
        asks the client to refresh its lenses when it ends)."""
        session = self.session
        document = session.documents.get(params.text_document.uri)
        if document is None:
            return []
        completions = [r for r in session.records.for_uri(document.uri) if r.kind == "completion"]
        if not completions:
            return []
        if not session.trace.index_exists() and all(r.trace_hits is None for r in completions):
            newest = max(completions, key=lambda r: r.start)
            return [self._lens(document, newest)]
        return [self._lens(document, r) for r in completions if r.trace_hits]

    def _lens(self, document, record: Record) -> types.CodeLens:
        line, _ = document.position_at(record.start)
        where = types.Range(types.Position(line, 0), types.Position(line, 0))
        return types.CodeLens(range=where, data={"recordId": record.id}, command=self.command(record))

    async def resolve(self, lens: types.CodeLens) -> types.CodeLens:
        data = as_json(lens.data) if lens.data is not None else {}
        record = self.session.records.get(str(data.get("recordId", ""))) if isinstance(data, dict) else None
        if record is None:
            lens.command = types.Command(title="whence: this completion is gone (edited away)", command="")
            return lens
        await self.session.placement.ensure_trace(record)
        lens.command = self.command(record)
        return lens

    def command(self, record: Record) -> types.Command:
        if record.trace_hits is None and not self.session.trace.index_exists():
            return types.Command(
                title="whence: no trace index, so no provenance — build the default index (Python stdlib)",
                command=BUILD_COMMAND,
                arguments=[],
            )
        hits = record.trace_hits or []
        if not hits:
            note = record.trace_note or "no traced source above the threshold"
            return types.Command(title=f"whence: {note}", command="")
        top = hits[0]
        more = f" · {len(hits) - 1} more" if len(hits) > 1 else ""
        return types.Command(
            title=(
                f"whence: {top['kind']} {top['score']:.2f} · {_short(top['path'])}:"
                f"{top['source_start_line']}-{top['source_end_line']} · {top['license']}{more}"
            ),
            command=OPEN_COMMAND,
            arguments=[top],
        )


def _short(path: str) -> str:
    parts = path.replace("\\", "/").split("/")
    return "/".join(parts[-3:]) if len(parts) > 3 else path



