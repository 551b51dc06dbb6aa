"""JSON-RPC framing over a byte stream that survives any framing error.

pygls' own reader trusts every header: after a Content-Length that is wrong, lowercase, negative
or not a number, or after LF-only header lines, it answers nothing ever again, and a huge
Content-Length makes it allocate the body (MemoryError). This reader owns the stream instead:

- header names are case-insensitive and header lines may end in LF alone;
- a body larger than the cap is never read into memory;
- after any framing error it resynchronises on the next line that ends in a Content-Length
  header (a JSON body never holds a raw newline, so such a line is a header, not body text);
- bytes after the first JSON value of a body (a Content-Length that was too long) go back into
  the stream, where they may be the start of the next header.

Frames come out as `Frame(body=...)` or `Frame(problem=...)`; what a body means is
`rpc_gate`'s business.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
# a header line longer than this is garbage; it is skipped piece by piece, never held whole
LINE_LIMIT = 64 * 1024
# `search`, not `match`: garbage left by a short Content-Length runs into the next header line
CONTENT_LENGTH_LINE = re.compile(rb"content-length[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?\n\Z", re.IGNORECASE)
HEADER_LINE = re.compile(rb"[A-Za-z0-9-]+[ \t]*:[^\r\n]*\r?\n\Z")


@dataclass
class Frame:
    body: bytes | None = None
    problem: str | None = None  # a framing error, answered as a parse error with a null id


class FrameReader:
    """Frames from `read_chunk` (an awaitable giving the next bytes, b"" at the end)."""

    def __init__(self, read_chunk: Callable[[], Awaitable[bytes]], max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self._read_chunk = read_chunk
        self._buffer = bytearray()
        self._eof = False
        self.max_body_bytes = max_body_bytes
        self.skipped_bytes = 0  # garbage skipped while resynchronising (for the log)

    def push_back(self, data: bytes) -> None:
        self._buffer[:0] = data

    async def _fill(self) -> bool:
        if self._eof:
            return False
        chunk = await self._read_chunk()
        if not chunk:
            self._eof = True
            return False
        self._buffer += chunk
        return True

    async def _readline(self) -> bytes | None:
        """The next line with its ending, at most LINE_LIMIT bytes; None at the end."""
        while True:
            end = self._buffer.find(b"\n", 0, LINE_LIMIT)
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) >= LINE_LIMIT:
                line = bytes(self._buffer[:LINE_LIMIT])
                del self._buffer[:LINE_LIMIT]
                return line
            if not await self._fill():
                if self._buffer:
                    line = bytes(self._buffer)
                    self._buffer.clear()
                    return line
                return None

    async def _read(self, size: int) -> bytes | None:
        while len(self._buffer) < size:
            if not await self._fill():
                return None
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def next_frame(self) -> Frame | None:
        """The next frame, or None when the stream has ended."""
        length: int | None = None
        problem: str | None = None
        in_headers = False
        while True:
            line = await self._readline()
            if line is None:
                return None
            header = CONTENT_LENGTH_LINE.search(line)
            if header is not None and (not in_headers or header.start() > 0):
                # a new frame starts here; garbage before it on the line is skipped
                self.skipped_bytes += header.start()
                in_headers = True
                length, problem = self._length(header.group(1))
                continue
            if not in_headers:
                self.skipped_bytes += len(line)  # between frames: garbage or stray blank lines
                continue
            if line in (b"\r\n", b"\n"):
                break  # end of the headers
            if header is not None:
                length, problem = self._length(header.group(1))
            elif not HEADER_LINE.match(line):
                # the headers never ended: a body without its blank line, or garbage
                return Frame(problem="malformed header line (headers must end with an empty line)")
        if problem is not None:
            return Frame(problem=problem)  # the body is skipped by the resynchronisation
        body = await self._read(length)
        if body is None:
            return None
        return Frame(body=body)

    def _length(self, value: bytes) -> tuple[int | None, str | None]:
        text = value.decode("ascii", "replace")
        if not value.isdigit():
            return None, f"Content-Length {text!r} is not a non-negative integer"
        length = int(value)
        if length == 0:
            return None, "Content-Length 0: an empty body"
        if length > self.max_body_bytes:
            return None, f"a body of {length} bytes is over the {self.max_body_bytes}-byte limit (serve --max-message-mb)"
        return length, None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


@dataclass
class ParsedBody:
    value: Any = None
    error: str | None = None  # why the body is not one JSON value (a parse error)
    trailing: bytes = b""  # what followed the first JSON value


def parse_body(body: bytes) -> ParsedBody:
    """The body's JSON value; bytes after the first value are returned, not dropped, because
    with a Content-Length that was too long they are the start of the next frame."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ParsedBody(error=f"the body is not UTF-8 ({exc.reason} at byte {exc.start})")
    start = len(text) - len(text.lstrip())
    try:
        value, end = _DECODER.raw_decode(text, start)
    except RecursionError:
        return ParsedBody(error="the body is nested too deeply")
    except ValueError as exc:
        return ParsedBody(error=f"the body is not JSON ({exc})")
    rest = text[end:]
    if rest.strip():
        return ParsedBody(value=value, error="bytes after the JSON value (is Content-Length right?)", trailing=rest.encode("utf-8"))
    return ParsedBody(value=value)
