"""`whence/retentionReport`: the numbers and plots of what the programmer kept, for the client's
view (and its HTML export). Read from the provenance log off the event loop; an empty or
missing log is a report with nothing in it, a broken one an error that says which file."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from whence_ls.errors import WhenceError
from whence_ls.lsp.protocol.params import invalid_params, plain
from whence_ls.lsp.protocol.names import RETENTION_REPORT_METHOD

if TYPE_CHECKING:
    from pygls.lsp.server import LanguageServer

    from whence_ls.lsp.session import Session


class RetentionReportFeature:
    def __init__(self, session: "Session") -> None:
        self.session = session

    def register(self, server: "LanguageServer") -> None:
        server.feature(RETENTION_REPORT_METHOD)(plain(self.report))

    async def report(self, params: Any = None) -> dict[str, Any]:
        session = self.session
        if session.provenance is None:
            raise invalid_params("no workspace: the server was not initialized with one")
        path = session.provenance.path

        def build() -> dict[str, Any]:
            from whence_ls.provenance import read_rows, read_shown
            from whence_ls.lsp.state.retention_stats import summarize
            from whence_ls.report.retention_html import STYLE, render_body, render_page

            rows, shown = (read_rows(path), read_shown(path)) if path.is_file() else ([], [])
            summary = summarize(rows, shown)
            return {"log": str(path), "summary": summary, "body": render_body(summary, str(path)), "style": STYLE,
                    "page": render_page(summary, str(path))}

        try:
            return await asyncio.to_thread(build)
        except Exception as exc:  # a log that cannot be read: say which, keep serving
            raise WhenceError(f"cannot read the provenance log {path}: {exc}") from None
