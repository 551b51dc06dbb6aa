"""Accepted completions and explained lines as live records that follow their text.

A record wraps the engine's `ScoredText` (which keeps the offsets it was computed with) and
holds the *current* document offsets of its range, of each token and of its context units.
Every edit moves them: text inserted before a record shifts it, an edit inside marks the
touched tokens as user-edited (they stop getting hovers and diagnostics), and a record whose
text is deleted or rewritten as a whole is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from whence_ls.engine.records import ScoredText
from whence_ls.sourcefile import source_label

from whence_ls.lsp.text.documents import Edit, map_end, map_start

if TYPE_CHECKING:  # the engine's source type; importing its module at run time would import torch
    from whence_ls.engine.attribution.units import ContextUnit

# a long session must not grow without bound; the oldest records of a document go first
MAX_RECORDS_PER_DOCUMENT = 200


@dataclass
class Record:
    scored: ScoredText
    uri: str
    start: int
    end: int
    spans: list[list[int]]  # current [start, end) of each token
    mark: int = 0  # document edit mark of the text the record was computed from
    edited: set[int] = field(default_factory=set)
    # the sources attribution rows are over: the engine's, as it made them (None until the
    # worker computed them); `unit_spans` holds where each is in the document now (a snippet of
    # another file keeps its offsets there, which this document's edits do not move)
    units: list["ContextUnit"] | None = None
    unit_spans: list[list[int]] = field(default_factory=list)
    trace_hits: list[dict[str, Any]] | None = None  # None: not searched (yet)
    trace_note: str = ""  # why there are no hits: no index, error, ...
    # the typed part of the word the first token wrote (token healing: `tot` typed, the token
    # is `total`, its text `al`): a person reads and hovers `total` as one word, so a hover on
    # `tot` answers with that token. Empty when none, or once an edit touches it.
    lead: str = ""

    @property
    def id(self) -> str:
        return self.scored.id

    @property
    def kind(self) -> str:
        return self.scored.kind

    @property
    def language(self) -> str | None:
        """The document's language when the record was computed: its context's."""
        return self.scored.context.language

    @classmethod
    def place(cls, scored: ScoredText, uri: str, start: int, mark: int) -> "Record":
        """A record for `scored` whose text now begins at document offset `start`; `mark` is
        the edit mark of the document text it was computed from (its context offsets)."""
        spans = [[start + t.start, start + t.end] for t in scored.tokens]
        return cls(scored=scored, uri=uri, start=start, end=start + len(scored.text), spans=spans, mark=mark)

    def set_units(self, units: list["ContextUnit"], spans: list[list[int]]) -> None:
        self.units, self.unit_spans = list(units), spans

    def place_of(self, unit_index: int, document) -> tuple[str, str, int]:
        """(label, link target, 1-based line) of a source for a view: `line 12`, `line 40 (below)`
        or `utils.py:12`."""
        unit = self.units[unit_index]
        if unit.path is not None:
            line = (unit.line or 0) + 1
            return source_label(line, unit.path), f"{unit.uri or unit.path}#L{line}", line
        line = document.position_at(self.unit_spans[unit_index][0])[0] + 1
        return source_label(line, below=unit.role == "suffix"), f"{document.uri}#L{line}", line

    def first_identifier(self, unit_index: int) -> int:
        """Where the identifiers of source `unit_index` start in a row's flat `identifier_scores`."""
        return sum(len(unit.identifiers) for unit in self.units[:unit_index])

    def hover_span(self, index: int) -> tuple[int, int]:
        """Where token `index` reads in the document: its span, and for the first token the
        typed part of its word before it (`lead`)."""
        start, end = self.spans[index]
        return (start - len(self.lead), end) if index == 0 and self.lead else (start, end)

    def token_at(self, offset: int) -> int | None:
        """The unedited token under `offset` (a cursor just after a token's last character
        still counts, as editors report hovers at the end of words)."""
        if not self.start - len(self.lead) <= offset <= self.end:
            return None
        fallback = None
        for index in range(len(self.spans)):
            start, end = self.hover_span(index)
            if index in self.edited or start == end:
                continue
            if start <= offset < end:
                return index
            if offset == end:
                fallback = index
        return fallback

    def live_tokens(self) -> list[int]:
        return [i for i, (s, e) in enumerate(self.spans) if i not in self.edited and e > s]

    def apply(self, edit: Edit) -> bool:
        """Follow one edit; False when the record's text is gone."""
        if self.lead and edit.start <= self.start and edit.end >= self.start - len(self.lead):
            self.lead = ""  # the typed word changed (or was split from the token): no longer its text
        if edit.end <= self.start and not (edit.start == edit.end == self.start == self.end):
            if edit.delta:
                self._shift(edit)
            return True
        if edit.start >= self.end:
            return True
        if edit.start <= self.start and edit.end >= self.end and edit.end > edit.start:
            return False  # the whole text was deleted or rewritten
        for index, (start, end) in enumerate(self.spans):
            inside_insert = edit.start == edit.end and start < edit.start < end
            if inside_insert or (edit.start < end and edit.end > start):
                self.edited.add(index)
        self._shift(edit)
        if len(self.edited) == len(self.spans):
            return False  # every token was rewritten: nothing of the model's text remains
        return self.end > self.start

    def _shift(self, edit: Edit) -> None:
        self.start, self.end = map_start(self.start, edit), map_end(self.end, edit)
        for span in self.spans:
            span[0], span[1] = map_start(span[0], edit), map_end(span[1], edit)
        if self.units is not None:
            for unit, span in zip(self.units, self.unit_spans):
                if unit.path is None:  # another file's lines do not move with this document
                    span[0], span[1] = map_start(span[0], edit), map_end(span[1], edit)


class RecordStore:
    def __init__(self) -> None:
        self._by_uri: dict[str, list[Record]] = {}
        self._by_id: dict[str, Record] = {}

    def add(self, record: Record) -> None:
        records = self._by_uri.setdefault(record.uri, [])
        records.append(record)
        self._by_id[record.id] = record
        while len(records) > MAX_RECORDS_PER_DOCUMENT:
            self._by_id.pop(records.pop(0).id, None)

    def get(self, record_id: str) -> Record | None:
        return self._by_id.get(record_id)

    def for_uri(self, uri: str) -> list[Record]:
        return list(self._by_uri.get(uri, ()))

    def at(self, uri: str, offset: int) -> tuple[Record, int] | None:
        """The newest record with an unedited token under `offset`, and that token."""
        for record in reversed(self._by_uri.get(uri, ())):
            index = record.token_at(offset)
            if index is not None:
                return record, index
        return None

    def on_line(self, uri: str, start: int, end: int) -> list[Record]:
        """Records that overlap the character range [start, end], newest first."""
        return [r for r in reversed(self._by_uri.get(uri, ())) if r.start <= end and r.end >= start]

    def apply(self, uri: str, edit: Edit) -> list[Record]:
        """Move the document's records through `edit`; returns the records dropped."""
        records = self._by_uri.get(uri)
        if not records:
            return []
        kept, dropped = [], []
        for record in records:
            (kept if record.apply(edit) else dropped).append(record)
        self._by_uri[uri] = kept
        for record in dropped:
            self._by_id.pop(record.id, None)
        return dropped

    def remove(self, record: Record) -> None:
        records = self._by_uri.get(record.uri, [])
        if record in records:
            records.remove(record)
        self._by_id.pop(record.id, None)

    def drop_uri(self, uri: str) -> list[Record]:
        records = self._by_uri.pop(uri, [])
        for record in records:
            self._by_id.pop(record.id, None)
        return records

    def all(self) -> list[Record]:
        return [r for records in self._by_uri.values() for r in records]
