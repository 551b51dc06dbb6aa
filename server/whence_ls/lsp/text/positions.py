"""LSP positions <-> document character offsets, in the encoding the client negotiated
(UTF-16 unless it chose otherwise). Documents hold Python str offsets; the protocol speaks
(line, column in code units)."""

from __future__ import annotations

from typing import Any

from lsprotocol import types

from whence_ls.errors import WhenceError
from whence_ls.lsp.text.documents import Document
from whence_ls.lsp.protocol.params import range_json as _range_json


def offset_of(document: Document, position: types.Position, encoding: str) -> int | None:
    """The character offset of `position`, or None when it is outside the document."""
    try:
        return document.offset_at(position.line, position.character, encoding)
    except WhenceError:
        return None


def position_of(document: Document, offset: int, encoding: str) -> types.Position:
    line, character = document.position_at(offset, encoding)
    return types.Position(line=line, character=character)


def range_of(document: Document, start: int, end: int, encoding: str) -> types.Range:
    return types.Range(start=position_of(document, start, encoding), end=position_of(document, end, encoding))


def range_json_of(document: Document, start: int, end: int, encoding: str) -> dict[str, Any]:
    """The same range as plain JSON (custom requests answer dicts)."""
    return _range_json(document.position_at(start, encoding), document.position_at(end, encoding))
