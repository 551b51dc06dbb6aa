"""Where each line of a document starts, kept up to date edit by edit.

A request must not cost time in proportion to the document: rebuilding the line table of a
200k-line file after every keystroke did. The table is a numpy array, so an edit rescans only
the lines it touched and shifts the rest with one vectorised add.

Line breaks are what LSP says they are: `\\r\\n`, `\\n` and a lone `\\r`.
"""

from __future__ import annotations

import numpy as np

from whence_ls.sourcefile import LINE_BREAK as BREAK


def scan_starts(text: str, begin: int = 0, end: int | None = None) -> list[int]:
    """Line starts after each break in `text[begin:end]` (absolute offsets)."""
    return [m.end() for m in BREAK.finditer(text, begin, len(text) if end is None else end)]


class LineIndex:
    def __init__(self, text: str) -> None:
        self.starts = np.array([0, *scan_starts(text)], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.starts)

    def start(self, line: int) -> int:
        return int(self.starts[line])

    def line_of(self, offset: int) -> int:
        return int(np.searchsorted(self.starts, offset, side="right")) - 1

    def edited(self, text: str, start: int, end: int, length: int) -> None:
        """`text` is the new text, in which `[start, end)` of the old one became `length` characters."""
        starts, delta = self.starts, length - (end - start)
        # rescan from the line holding the character before the edit (a `\r` there and a `\n`
        # inserted after it are one break) up to the first line start the edit cannot reach:
        # one more than a character past its end, so `\r` + `\n` across the end is seen too
        first = self.line_of(max(0, start - 1))
        rescan_from = int(starts[first])
        keep = int(np.searchsorted(starts, end + 1, side="right"))
        kept = starts[keep:] + delta
        rescan_to = int(kept[0]) if len(kept) else len(text)
        fresh = scan_starts(text, rescan_from, rescan_to)
        if len(kept):  # the break before the first kept line is found by the scan too
            fresh = [s for s in fresh if s < rescan_to]
        self.starts = np.concatenate([starts[: first + 1], np.array(fresh, dtype=np.int64), kept])
