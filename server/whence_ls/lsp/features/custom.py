"""The `whence/...` requests: status, attribution matrix, token attribution (editor tinting),
traced source; and the `whence/rowsReady` notification, which tells the client that rows it may
be showing as pending have arrived (so a client refreshes when there is something new, rather
than polling); for the record an open matrix panel watches it carries the whole matrix, so the
panel updates without asking. Positions and ranges are LSP ones, like everywhere else."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from whence_ls.errors import WhenceError
from whence_ls.engine.attribution.catalogue import METHOD_SHORT_NOTES
from whence_ls.lsp.runtime.matrix_push import WatchedMatrix
from whence_ls.lsp.protocol.params import as_json, invalid_params as _invalid, object_params, plain, position_of, require
from whence_ls.lsp.protocol.names import (FEATURE_METHOD, MATRIX_HTML_METHOD, MATRIX_METHOD, ROWS_READY_METHOD, STATUS_METHOD,
                                          UNWATCH_MATRIX_METHOD,
                                          TOKEN_METHOD, TRACED_SOURCE_METHOD)
from whence_ls.engine.attribution.ranking import strongest_sources
from whence_ls.lsp.state.records import Record
from whence_ls.lsp.state.trace_search import NoIndex
from whence_ls.report.matrix_view import matrix_view

if TYPE_CHECKING:
    from whence_ls.lsp.text.documents import Document
    from pygls.lsp.server import LanguageServer

    from whence_ls.lsp.session import Session

log = logging.getLogger(__name__)

# the matrix and tinting wait this long for units (and, for tinting, the row) before answering
WAIT_S = 2.0

_LANGUAGE_IDS = {"tsx": "typescriptreact"}
# what the attribution scores mean and how they were measured (in a source checkout)
_DOCS = Path(__file__).resolve().parents[4] / "docs" / "bench-attribution.md"


class CustomRequestsFeature:
    def __init__(self, session: "Session") -> None:
        self.session = session
        # the record an open matrix panel shows (`watch` in whence/attributionMatrix): its
        # rowsReady notifications carry the whole answer; no other record's pay for building one
        self.watched_matrix = WatchedMatrix(self._current_matrix, lambda record: self.rows_ready(record, [], None))

    def register(self, server: "LanguageServer") -> None:
        ls = server
        ls.feature(STATUS_METHOD)(plain(self.status))
        ls.feature(MATRIX_METHOD)(plain(self.attribution_matrix))
        ls.feature(MATRIX_HTML_METHOD)(plain(self.matrix_html))
        ls.feature(UNWATCH_MATRIX_METHOD)(plain(self.unwatch_matrix))
        ls.feature(FEATURE_METHOD)(plain(self.feature_page))
        ls.feature(TOKEN_METHOD)(plain(self.token_attribution))
        ls.feature(TRACED_SOURCE_METHOD)(plain(self.traced_source))
        # the attribution queue exists once the worker is started (at initialize)
        self.session.initialize_hooks.append(lambda _params: self._announce_rows())

    def _announce_rows(self) -> None:
        if self.session.attribution is not None:
            self.session.attribution.on_rows = self.rows_ready
        if self.session.verification is not None:
            self.session.verification.on_verified = lambda record, indexes: self.rows_ready(record, indexes, None, verified=True)

    def rows_ready(self, record: Record, indexes: list[int], error: str | None, *, verified: bool = False) -> None:
        """Tell the client which rows of `record` arrived (estimated, or `verified` by
        ablation), and how far the record is."""
        session = self.session
        done, total = session.attribution.progress(record) if session.attribution is not None else (0, 0)
        body: dict[str, Any] = {"recordId": record.id, "uri": record.uri, "tokenIndexes": indexes, "done": done, "total": total}
        if verified:
            body["verified"] = True
        if error:
            body["error"] = error
        self.watched_matrix.attach(record, body)
        try:
            if session.client.protocol.writer is not None:
                session.client.protocol.notify(ROWS_READY_METHOD, body)
        except Exception:  # the client went away: rows stay on the record for the next request
            log.debug("could not send %s", ROWS_READY_METHOD, exc_info=True)

    def status(self, params: Any) -> dict[str, Any]:
        session = self.session
        session.status.stats = {
            "completionCacheHits": session.completion_cache.hits,
            "attributionPending": session.attribution.pending_count() if session.attribution else 0,
            "attributionPrefetch": session.attribution.prefetching() if session.attribution else False,
            "warmUpsPending": session.warmups.pending(),
            "records": len(session.records.all()),
        }
        return session.status.snapshot()

    def _find(self, body: dict[str, Any]) -> tuple["Document", Record, int | None] | None:
        session = self.session
        document_id = body.get("textDocument")
        uri = document_id.get("uri") if isinstance(document_id, dict) else None
        if not isinstance(uri, str):
            raise _invalid("expected {textDocument: {uri}, ...}")
        document = session.documents.get(uri)
        if document is None:
            return None
        record_id = body.get("recordId")
        if isinstance(record_id, str):
            record = session.records.get(record_id)
            return (document, record, None) if record is not None and record.uri == uri else None
        if not isinstance(body.get("position"), dict):
            raise _invalid("expected a position or a recordId")
        line, character = position_of(body)
        offset = session.offset(document, types.Position(line=line, character=character))
        if offset is None:
            return None
        found = session.records.at(uri, offset)
        if found is not None:
            return document, found[0], found[1]
        line_start, line_end = document.line_span(line)
        on_line = session.records.on_line(uri, line_start, line_end)
        return (document, on_line[0], None) if on_line else None

    def unwatch_matrix(self, params: Any) -> None:
        """The panel that watched `recordId` closed: stop building its matrix for every row."""
        body = as_json(params)
        record_id = body.get("recordId") if isinstance(body, dict) else None
        if isinstance(record_id, str):
            self.watched_matrix.unwatch(record_id)

    async def attribution_matrix(self, params: Any) -> dict[str, Any] | None:
        """The record's matrix with its `view`. With `watch: true` (an open panel) the record's
        later `whence/rowsReady` notifications carry the whole answer, so the panel updates
        without asking again; one record is watched at a time, the last one asked for."""
        session = self.session
        body = object_params(params, "{textDocument: {uri}, position | recordId, watch?}")
        found = self._find(body)
        if found is None:
            return None
        document, record, _ = found
        if body.get("watch") is True:
            self.watched_matrix.watch(record.id)
        queue = session.attribution
        units = record.units
        if units is None and queue is not None and session.attribution_method() != "none":
            await queue.wait_units(record, WAIT_S)
        return self._matrix_answer(document, record)

    def _current_matrix(self, record: Record) -> dict[str, Any] | None:
        """A watched record's matrix for its notification: none before its sources are known
        (the panel shows its pending rows until then) or once its document is closed."""
        document = self.session.documents.get(record.uri)
        return self._matrix_answer(document, record) if document is not None and record.units is not None else None

    def _matrix_answer(self, document: "Document", record: Record) -> dict[str, Any]:
        """What `whence/attributionMatrix` answers, from what the record has now (no waiting)."""
        session = self.session
        queue = session.attribution
        method = session.attribution_method()
        units = record.units
        rows, checks = [], []
        verification = session.verification
        for index in range(len(record.scored.tokens)):
            row = queue.row(record, index) if queue is not None else None
            verified = verification.verified(record, index) if verification is not None and row is not None else None
            shown = verified if verified is not None else row
            rows.append([round(s, 6) for s in shown.scores] if shown is not None and units is not None else None)
            checks.append(verification_json(verified) if verified is not None and units is not None else None)
        note = METHOD_SHORT_NOTES.get(method, "") if method != "none" else "attribution is off"
        error = queue.errors.get(record.id) if queue is not None else None
        answer = {
            "recordId": record.id,
            "method": method,
            "note": f"attribution failed: {error}" if error else note,
            "tokens": [
                {"text": t.text, "range": session.range_json(document, *record.spans[i]), "prob": t.prob,
                 **({"edited": True} if i in record.edited else {})}
                for i, t in enumerate(record.scored.tokens)
            ],
            "units": [_unit_json(session, document, record, u) for u in range(len(units or []))],
            "scores": rows,
            # per row: null while it is the estimate; how the ablation that replaced it was run
            # and how far the estimate was from it
            "verified": checks,
            "verifying": verification is not None and verification.verifying(record),
            "lines": completion_lines(document, record),
            "docs": _DOCS.as_uri() if _DOCS.is_file() else None,
        }
        # the lines, ranked columns and row truth every client renders, made here once
        answer["view"] = matrix_view(answer)
        return answer

    async def feature_page(self, params: Any) -> dict[str, Any] | None:
        """One SAE feature: its label, induction mark, how often it fires, its top snippets from
        the training corpus, and (with recordId and tokenIndex) the context lines this token's
        activation of it came from."""
        session = self.session
        body = object_params(params, "{layer, feature, recordId?, tokenIndex?}")
        layer, feature = body.get("layer"), body.get("feature")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (layer, feature)):
            raise _invalid("expected {layer, feature} as non-negative integers")
        if not session.sae.available:
            raise _invalid("the model has no sparse autoencoders: run `whence-ls model train-sae`, then restart the server")

        def read(lm: Any, cancel: Any):
            from whence_ls.engine.sae import load_for

            sae_set, index = load_for(lm)
            if sae_set is None or layer not in sae_set.saes or feature >= sae_set.width:
                return None
            entries = (index or {}).get("layers", {}).get(str(layer), [])
            return {"layer": layer, "feature": feature, "width": sae_set.width, **(entries[feature] if feature < len(entries) else {}),
                    "metrics": sae_set.metrics.get(str(layer), {})}

        page = await session.run_model(read)
        if page is None:
            raise _invalid(f"no feature {feature} in layer {layer} of this model's sparse autoencoders")
        record = session.records.get(body["recordId"]) if isinstance(body.get("recordId"), str) else None
        index = body.get("tokenIndex")
        if record is not None and isinstance(index, int) and 0 <= index < len(record.scored.tokens):
            document = session.documents.get(record.uri)
            features = await session.sae.features_of(record, index) or []
            mine = next((f for f in features if f["layer"] == layer and f["feature"] == feature), None)
            if mine is not None and document is not None and record.units is not None:
                page["token"] = {"text": record.scored.tokens[index].text, "activation": mine["activation"]}
                page["sources"] = []
                for source in mine["sources"]:
                    if source["unit"] < len(record.units):
                        unit = record.units[source["unit"]]
                        label, link, line = record.place_of(source["unit"], document)
                        page["sources"].append({"label": label, "uri": unit.uri or document.uri, "line": line - 1,
                                                "text": unit.text.splitlines()[0][:120], "share": source["share"]})
        return page

    async def matrix_html(self, params: Any) -> dict[str, Any] | None:
        """The record's attribution as a self-contained page (what `whence-ls explain --html` writes)."""
        from whence_ls.report.matrix_html import render_matrix_html

        matrix = await self.attribution_matrix(params)
        if matrix is None:
            return None
        found = self._find(object_params(params, "{textDocument: {uri}, position | recordId}"))
        title = found[0].uri.rsplit("/", 1)[-1] if found is not None else "completion"
        return {"html": render_matrix_html(matrix, title=title)}

    async def token_attribution(self, params: Any) -> dict[str, Any] | None:
        session = self.session
        body = object_params(params, "{textDocument: {uri}, position}")
        if not isinstance(body.get("position"), dict):
            raise _invalid("expected {textDocument: {uri}, position}")
        body.pop("recordId", None)
        found = self._find(body)
        if found is None or found[2] is None:
            return None
        document, record, index = found
        token = record.scored.tokens[index]
        row = None
        queue = session.attribution
        method = session.attribution_method()
        if queue is not None and method != "none":
            row = await queue.wait_row(record, index, WAIT_S)
            if row is not None and record.units is None:
                await queue.wait_units(record, WAIT_S)
        verification = session.verification
        verified = verification.verified(record, index) if verification is not None and row is not None else None
        row = verified if verified is not None else row  # the ablation's row, once there, tints
        units = []
        if row is not None and record.units is not None:
            # only this document's lines can be tinted in its editor
            units = [
                {"range": session.range_json(document, *record.unit_spans[u]), "score": round(score, 6)}
                for u, score in tint_sources(row)
                if u < len(record.units) and record.units[u].path is None
            ]
        answer = {
            "token": {"text": token.text, "range": session.range_json(document, *record.hover_span(index)), "prob": token.prob},
            "units": units,
            "method": method,
            # with `pending`, a client waits for the whence/rowsReady that names this token
            "recordId": record.id,
            "tokenIndex": index,
        }
        if row is None:
            answer["pending"] = True
        elif verified is not None:
            answer["verified"] = verification_json(verified)
        return answer

    async def traced_source(self, params: Any) -> dict[str, Any]:
        body = object_params(params, "{hit}")
        hit = body.get("hit")
        if not isinstance(hit, dict):
            raise _invalid("expected {hit}")
        require(hit, "path", str, "a trace hit with a path")
        try:
            content = await self.session.trace.read_source(hit)
        except NoIndex as exc:
            raise _invalid(str(exc)) from None
        except WhenceError as exc:
            raise _invalid(str(exc)) from None
        path = hit["path"]
        uri = Path(path).as_uri() if Path(path).is_absolute() else path
        language = str(hit.get("language") or "")
        return {
            "uri": uri,
            "path": path,
            "content": content,
            "languageId": _LANGUAGE_IDS.get(language, language),
            "license": hit.get("license"),
            "startLine": hit.get("source_start_line"),
            "endLine": hit.get("source_end_line"),
        }


# the tint shows only the sources that explain most of a token, never the whole file
TINT_SHARE = 0.6
TINT_MAX = 5


def verification_json(row: Any) -> dict[str, Any]:
    """A verified row's check of its estimate, as the wire carries it."""
    extra = getattr(row, "extra", {}) or {}
    check = extra.get("estimate_agreement") or {}
    return {"masks": extra.get("verified_masks"), "mode": extra.get("verification"), "sameTop": check.get("same_top"),
            "rankInEstimate": check.get("rank_in_estimate"), "estimateLds": check.get("lds")}


def tint_sources(row: Any) -> list[tuple[int, float]]:
    """The row's shown sources (`strongest_sources`), strongest first, until they hold
    TINT_SHARE of their weight (at most TINT_MAX)."""
    order = strongest_sources(row.scores, row.rank_by_abs)
    total = sum(abs(score) for _, score in order) or 1.0
    chosen, held = [], 0.0
    for u, score in order[:TINT_MAX]:
        chosen.append((u, score))
        held += abs(score) / total
        if held >= TINT_SHARE:
            break
    return chosen


def completion_lines(document: "Document", record: Record) -> list[dict[str, Any]]:
    """Each document line the record is on, as it reads in the editor up to the record's end:
    the first one with the code before the cursor (`total = ...`, where the completion's own
    text is `al = ...` after a typed `tot`). {line: 0-based, text}."""
    first, last = document.position_at(record.start)[0], document.position_at(record.end)[0]
    lines = []
    for line in range(first, last + 1):
        start, end = document.line_span(line)
        text = document.text[start : min(end, record.end)]
        if text.strip():
            lines.append({"line": line, "text": text})
    return lines


def _unit_json(session, document, record: Record, unit_index: int) -> dict[str, Any]:
    """A source for the client: this document's lines have a range (and `below` after the
    cursor); another file's snippet has its path, URI and line instead."""
    unit = record.units[unit_index]
    label, _, line = record.place_of(unit_index, document)
    entry: dict[str, Any] = {"text": unit.text, "line": line - 1, "label": label,
                             "identifiers": [identifier.text for identifier in unit.identifiers]}
    if unit.path is None:
        entry["range"] = session.range_json(document, *record.unit_spans[unit_index])
        if unit.role == "suffix":
            entry["below"] = True
    else:
        entry.update(path=unit.path, uri=unit.uri)
    return entry
