"""Low-confidence diagnostics on accepted completions and explained lines: at most one per
completion line, on its least sure readable token, and only where the model put most of its
probability on writing something else (`engine/confidence.py`); at most `diagnosticsShare` of a
record's tokens. They move with edits and vanish when the user rewrites the token."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lsprotocol import types

from whence_ls.engine.confidence import FLAG_THRESHOLD, flag_score, flagged_tokens, instead
from whence_ls.engine.flag_calibration import WorkspaceCalibration, describe, facts_of
from whence_ls.lsp.state.records import Record
from whence_ls.lsp.state.workspace_flags import WORKSPACE_FLAG_CHANCE

if TYPE_CHECKING:
    from pygls.lsp.server import LanguageServer

    from whence_ls.lsp.session import Session

SOURCE = "whence"
CODE = "low-confidence"


def low_confidence_tokens(record: Record, share: float, calibration: WorkspaceCalibration | None = None) -> list[int]:
    """Indexes of the record's flagged tokens, least confident first: by the global flag, or by
    the workspace's calibrated chance of a rewrite when it has one (`workspace_flags.py`)."""
    if share <= 0:
        return []
    scored = record.scored
    skip = set(record.edited) | {i for i, (start, end) in enumerate(record.spans) if end <= start}
    if calibration is None:
        score, threshold = flag_score, FLAG_THRESHOLD
    else:
        score, threshold = (lambda s, i: calibration.edit_chance(facts_of(s, i))), WORKSPACE_FLAG_CHANCE
    flagged = flagged_tokens(scored, skip, threshold, score)
    limit = max(1, int(len(scored.tokens) * share))
    return sorted(flagged, key=lambda i: -score(scored, i))[:limit]


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
        calibration = session.workspace_flags.active(session.settings.workspace_flags)
        for record in session.records.for_uri(uri):
            for index in low_confidence_tokens(record, session.settings.diagnostics_share, calibration):
                token = record.scored.tokens[index]
                start, end = record.spans[index]
                other = instead(record.scored, index)
                other_p = next((a.logprob for a in token.alternatives if a.text == other), None) if other is not None else None
                best = f"; the model would have written `{other.strip() or other!r}` (p={_p(other_p)}) instead" if other is not None else ""
                what = "completion" if record.kind == "completion" else "explained line"
                if calibration is not None:  # the person reads why: their own edits, in counts
                    best += f"; {describe(calibration, facts_of(record.scored, index))} (a flag learned from this workspace's edits)"
                found.append(
                    types.Diagnostic(
                        range=session.range(document, start, end),
                        message=f"unsure: `{token.text.strip()}` p={token.prob:.2f}{best} (whence {what})",
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
