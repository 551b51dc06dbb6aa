"""Open documents: text, incremental edits, and LSP position <-> character offset mapping.

The server keeps its own copy (rather than reading pygls' workspace) because records must see
every edit as a character range of the text *before* it, which pygls has already thrown away
by the time a didChange handler runs. An edit log lets anything computed against an older text
(an offer, context units) map its offsets to the current one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from whence_ls.errors import WhenceError
from whence_ls.grammars import language_for_lsp_id
from whence_ls.lsp.text.line_index import LineIndex
from whence_ls.sourcefile import MAX_FILE_BYTES, decode_source

# documents larger than this get empty answers; 10 MB files are served
MAX_DOCUMENT_CHARS = MAX_FILE_BYTES
# the log only needs to reach back as far as the oldest pending offer or unit computation
MAX_EDIT_LOG = 20_000


@dataclass(frozen=True)
class Edit:
    """`text[start:end]` was replaced by `length` characters."""

    start: int
    end: int
    length: int

    @property
    def delta(self) -> int:
        return self.length - (self.end - self.start)


def map_start(position: int, edit: Edit) -> int:
    """Where a span start moves: an insertion exactly at it pushes it right."""
    if position < edit.start:
        return position
    if position >= edit.end:
        return position + edit.delta
    return edit.start


def map_end(position: int, edit: Edit) -> int:
    """Where a span end (or an anchor point) moves: an insertion exactly at it leaves it."""
    if position <= edit.start:
        return position
    if position >= edit.end:
        return position + edit.delta
    return edit.start + edit.length


@dataclass
class Document:
    uri: str
    text: str
    version: int | None
    language_id: str
    from_disk: bool = False  # read because the client never sent didOpen
    disk_mtime_ns: int = 0
    _lines: LineIndex | None = None  # built on first use, then kept up to date by each edit
    _log: list[Edit] = field(default_factory=list)
    _log_base: int = 0  # edits dropped from the front of the log

    @property
    def language(self) -> str | None:
        return language_for_lsp_id(self.language_id, _uri_path(self.uri) or "")

    @property
    def problem(self) -> str | None:
        """Why this document gets no model answers, or None."""
        if len(self.text) > MAX_DOCUMENT_CHARS:
            return f"document is {len(self.text) / 1e6:.1f}M characters; whence serves documents up to {MAX_DOCUMENT_CHARS // 2**20} Mi"
        if "\x00" in self.text[:8192]:
            return "document looks binary (it contains NUL characters)"
        return None

    # -- edits -------------------------------------------------------------------------------

    def mark(self) -> int:
        """A point in the edit history; `map_offset` moves offsets from it to now."""
        return self._log_base + len(self._log)

    def map_offset(self, offset: int, mark: int, *, anchor: bool = True) -> int | None:
        """`offset` in the text as it was at `mark`, in the current text; None when the log
        no longer reaches that far back."""
        if mark < self._log_base:
            return None
        move = map_end if anchor else map_start
        for edit in self._log[mark - self._log_base :]:
            offset = move(offset, edit)
        return offset

    def inserted_since(self, mark: int) -> list[tuple[int, int]] | None:
        """The spans of the current text that edits since `mark` put there; None when the log
        no longer reaches that far back."""
        if mark < self._log_base:
            return None
        spans: list[tuple[int, int]] = []
        for edit in self._log[mark - self._log_base :]:
            spans = [(map_start(s, edit), map_end(e, edit)) for s, e in spans]
            spans = [(s, e) for s, e in spans if e > s]
            if edit.length:
                spans.append((edit.start, edit.start + edit.length))
        return spans

    def apply(self, start: int, end: int, new_text: str) -> Edit:
        self.text = self.text[:start] + new_text + self.text[end:]
        if self._lines is not None:
            self._lines.edited(self.text, start, end, len(new_text))
        edit = Edit(start, end, len(new_text))
        self._log.append(edit)
        if len(self._log) > MAX_EDIT_LOG:
            drop = len(self._log) - MAX_EDIT_LOG
            del self._log[:drop]
            self._log_base += drop
        return edit

    def replace_all(self, new_text: str) -> Edit:
        """A full-text change, narrowed to the span that actually differs so records outside
        it survive clients that sync whole documents."""
        old = self.text
        prefix = _common_prefix(old, new_text)
        suffix = _common_prefix(old[prefix:][::-1], new_text[prefix:][::-1]) if prefix < min(len(old), len(new_text)) else 0
        return self.apply(prefix, len(old) - suffix, new_text[prefix : len(new_text) - suffix])

    # -- positions ---------------------------------------------------------------------------

    @property
    def lines(self) -> LineIndex:
        if self._lines is None:
            self._lines = LineIndex(self.text)
        return self._lines

    def line_count(self) -> int:
        return len(self.lines)

    def line_span(self, line: int) -> tuple[int, int]:
        """Character offsets of a 0-based line, without its line break (CR LF, LF or CR)."""
        lines = self.lines
        if not 0 <= line < len(lines):
            raise WhenceError(f"line {line} is outside the document (it has {len(lines)} lines, 0-based)")
        start = lines.start(line)
        end = lines.start(line + 1) if line + 1 < len(lines) else len(self.text)
        if end > start and self.text[end - 1] == "\n":
            end -= 1
        if end > start and self.text[end - 1] == "\r":
            end -= 1
        return start, end

    def offset_at(self, line: int, character: int, encoding: str = "utf-16") -> int:
        """Character offset of an LSP position; a column past the line end means the end (as
        the LSP spec says), a line past the document is an error."""
        start, end = self.line_span(line)
        if character < 0:
            raise WhenceError(f"negative column {character}")
        return start + _chars_for_units(self.text[start:end], character, encoding)

    def position_at(self, offset: int, encoding: str = "utf-16") -> tuple[int, int]:
        offset = max(0, min(offset, len(self.text)))
        line = self.lines.line_of(offset)
        start = self.lines.start(line)
        return line, _units_for_chars(self.text[start:offset], encoding)


def _chars_for_units(line: str, units: int, encoding: str) -> int:
    if encoding == "utf-32" or line.isascii():
        return min(units, len(line))
    count = 0
    for index, char in enumerate(line):
        width = _width(char, encoding)
        if count >= units or count + width > units:
            return index  # a column inside a character (half a surrogate pair) means its start
        count += width
    return len(line)


def _units_for_chars(prefix: str, encoding: str) -> int:
    if encoding == "utf-32" or prefix.isascii():
        return len(prefix)
    return sum(_width(c, encoding) for c in prefix)


def _width(char: str, encoding: str) -> int:
    code = ord(char)
    if encoding == "utf-8":
        return 1 if code < 0x80 else 2 if code < 0x800 else 3 if code < 0x10000 else 4
    return 2 if code > 0xFFFF else 1


def _common_prefix(a: str, b: str) -> int:
    """Length of the common prefix, by bisection on slice equality (memcmp-fast on 10 MB)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _uri_path(uri: str) -> str | None:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    return unquote(parsed.path)


def uri_to_path(uri: str) -> Path | None:
    path = _uri_path(uri)
    return Path(path) if path else None


class DocumentStore:
    """Documents by URI. A file URI the client never opened is read from disk, so a client
    that skips didOpen still gets answers (without edit tracking), but only from inside the
    workspace folders: a request naming any other file (/etc/passwd, a symlink out of the
    workspace, `..` in the URI) must not reveal it."""

    def __init__(self) -> None:
        self._documents: dict[str, Document] = {}
        self._roots: list[Path] = []

    def set_roots(self, roots: list[Path]) -> None:
        """The workspace folders, resolved (symlinks followed): the only places read from disk."""
        resolved = []
        for root in roots:
            try:
                resolved.append(root.resolve(strict=True))
            except OSError:
                continue
        self._roots = resolved

    @property
    def roots(self) -> list[Path]:
        return list(self._roots)

    def open_documents(self) -> list[Document]:
        """The documents the client opened (not those read from disk for a request)."""
        return [d for d in self._documents.values() if not d.from_disk]

    def readable(self, path: Path) -> bool:
        try:
            real = path.resolve(strict=True)
        except OSError:
            return False
        return any(real == root or root in real.parents for root in self._roots)

    def open(self, uri: str, text: str, version: int | None, language_id: str) -> Document:
        document = Document(uri, text, version, language_id)
        self._documents[uri] = document
        return document

    def close(self, uri: str) -> None:
        self._documents.pop(uri, None)

    def get(self, uri: str) -> Document | None:
        document = self._documents.get(uri)
        if document is not None:
            if document.from_disk and _mtime_ns(document.uri) != document.disk_mtime_ns:
                document = None  # changed on disk: read it again below
            else:
                return document
        path = uri_to_path(uri)
        if path is None or not self.readable(path) or not path.is_file():
            return None
        try:
            stat = path.stat()
            if stat.st_size > MAX_FILE_BYTES:
                return None
            text = decode_source(path.read_bytes(), str(path))
        except (OSError, WhenceError):
            return None
        document = Document(uri, text, None, "", from_disk=True, disk_mtime_ns=stat.st_mtime_ns)
        self._documents[uri] = document
        return document

    def uris(self) -> list[str]:
        return list(self._documents)


def _mtime_ns(uri: str) -> int:
    path = uri_to_path(uri)
    try:
        return path.stat().st_mtime_ns if path is not None else -1
    except OSError:
        return -1
