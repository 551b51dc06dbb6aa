"""Reading a user's source file and turning editor positions into offsets, with clear errors."""

from __future__ import annotations

import re
from pathlib import Path

from whence_ls.errors import WhenceError

MAX_FILE_BYTES = 20 * 1024 * 1024

_LOCATION = re.compile(r"^(?P<path>.+?):(?P<line>\d+)(?::(?P<col>\d+))?$")


def parse_location(location: str, *, need_column: bool) -> tuple[str, int, int | None]:
    """`PATH:LINE[:COL]`, 1-based as editors and compilers print them."""
    match = _LOCATION.match(location)
    if not match or (need_column and match.group("col") is None):
        shape = "PATH:LINE:COL" if need_column else "PATH:LINE"
        raise WhenceError(f"expected {shape} (1-based), got {location!r}")
    col = match.group("col")
    return match.group("path"), int(match.group("line")), int(col) if col is not None else None


def read_source(path: str) -> str:
    file = Path(path)
    if not file.exists():
        raise WhenceError(f"no such file: {path}")
    if not file.is_file():
        raise WhenceError(f"not a regular file: {path}")
    size = file.stat().st_size
    if size > MAX_FILE_BYTES:
        raise WhenceError(f"{path} is {size / 1e6:.1f} MB; whence-ls reads source files up to {MAX_FILE_BYTES // 2**20} MiB")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise WhenceError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return decode_source(data, path)


def decode_source(data: bytes, name: str) -> str:
    if b"\x00" in data[:8192]:
        raise WhenceError(f"{name} looks binary (it contains NUL bytes); whence-ls completes text files")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WhenceError(f"{name} is not valid UTF-8 (byte {exc.start}); whence-ls reads UTF-8 source files") from exc
    return text.removeprefix("\ufeff")


# what ends a line: CR LF, LF, or a lone CR, as LSP says (the language server and the CLI must
# number lines alike: `explainLine` passes the server's line numbers to the engine)
LINE_BREAK = re.compile(r"\r\n|\r|\n")


def line_starts(text: str) -> list[int]:
    return [0, *(m.end() for m in LINE_BREAK.finditer(text))]


def offset_of(text: str, line: int, col: int) -> int:
    """Character offset of 1-based LINE:COL; COL may be one past the end of the line."""
    starts = line_starts(text)
    if not 1 <= line <= len(starts):
        raise WhenceError(f"line {line} is outside the file (it has {len(starts)} lines)")
    start = starts[line - 1]
    end = starts[line] - 1 if line < len(starts) else len(text)
    if text[start:end].endswith("\r"):
        end -= 1
    if not 1 <= col <= end - start + 1:
        raise WhenceError(f"column {col} is outside line {line} (it has {end - start} characters)")
    return start + col - 1


def line_col_of(text: str, offset: int, starts: list[int] | None = None) -> tuple[int, int]:
    """1-based (line, column) of a character offset."""
    import bisect

    starts = starts or line_starts(text)
    index = bisect.bisect_right(starts, offset) - 1
    return index + 1, offset - starts[index] + 1


def source_label(line: int, path: str | None = None, below: bool = False) -> str:
    """How a source of attribution is named to a person, everywhere (hover, messages, CLI):
    `line 12` (1-based), `line 40 (below)` after the cursor a completion was made at, or
    `pkg/utils.py:12` for another file's snippet."""
    if path is not None:
        return f"{path}:{line}"
    return f"line {line}" + (" (below)" if below else "")
