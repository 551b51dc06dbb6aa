"""Low-confidence diagnostics: the least confident tokens of accepted completions and explained
lines, at most `diagnosticsShare` of each record's tokens, and only tokens the model itself
found doubtful. They move with edits and vanish when the user rewrites the token."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lsprotocol import types

from whence_ls.lsp.records import Record

if TYPE_CHECKING:
    from pygls.lsp.server import LanguageServer

    from whence_ls.lsp.session import Session

SOURCE = "whence"
CODE = "low-confidence"
# a token the model gave this much probability is not worth a squiggle, whatever its rank
DOUBT_PROBABILITY = 0.5


def low_confidence_tokens(record: Record, share: float) -> list[int]:
    """Indexes of the record's flagged tokens, least confident first."""
    tokens = record.scored.tokens
    candidates = [i for i in range(len(tokens)) if tokens[i].text.strip()]
    if not candidates or share <= 0:
        return []
    limit = max(1, int(len(tokens) * share))
    order = sorted(candidates, key=lambda i: tokens[i].logprob)[:limit]
    return [i for i in order if tokens[i].prob < DOUBT_PROBABILITY and i not in record.edited and record.spans[i][1] > record.spans[i][0]]


class DiagnosticsFeature:
    def __init__(self, session: "Session") -> None:
        self.session = session
        self._published: set[str] = set()

    def register(self, server: "LanguageServer") -> None:
        # diagnostics are pushed (textDocument/publishDiagnostics): nothing to answer, only the
        # hooks through which edits and new records ask for a fresh publication
        self.session.publish_diagnostics = self.publish
        self.session.clear_diagnostics = self.clear

    def diagnostics_for(self, uri: str) -> list[types.Diagnostic]:
        session = self.session
        document = session.documents.get(uri)
        if document is None:
            return []
        found = []
        for record in session.records.for_uri(uri):
            for index in low_confidence_tokens(record, session.settings.diagnostics_share):
                token = record.scored.tokens[index]
                start, end = record.spans[index]
                runner = token.runner_up()
                best = f"; best alternative `{runner.text}` (p={_p(runner.logprob)})" if runner else ""
                what = "completion" if record.kind == "completion" else "line"
                found.append(
                    types.Diagnostic(
                        range=session.range(document, start, end),
                        message=f"low confidence: `{token.text}` p={token.prob:.2f}{best} (whence {what})",
                        severity=types.DiagnosticSeverity.Information,
                        code=CODE,
                        source=SOURCE,
                        data={"recordId": record.id, "tokenIndex": index},
                    )
                )
        return found

    def publish(self, uri: str) -> None:
        diagnostics = self.diagnostics_for(uri)
        if not diagnostics and uri not in self._published:
            return  # nothing shown before, nothing to clear: spare the client a message per keystroke
        self._published.add(uri)
        if not diagnostics:
            self._published.discard(uri)
        document = self.session.documents.get(uri)
        self.session.client.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=uri, diagnostics=diagnostics, version=document.version if document else None)
        )

    def clear(self, uri: str) -> None:
        if uri in self._published:
            self._published.discard(uri)
            self.session.client.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=[]))


def _p(logprob: float) -> str:
    import math

    return f"{math.exp(logprob):.2f}"
