"""The context window: the document text before the cursor, cut to a token budget.

Every context token keeps its document character span, so attribution scores can be shown
where they belong in the file.
"""

from __future__ import annotations

from whence_ls.engine.records import ContextWindow
from whence_ls.errors import WhenceError

# Tokenising a 10 MB prefix to keep its last 1k tokens would waste seconds: look at most this
# many characters per budgeted token back from the cursor (code tokens average ~3-4 chars; long
# runs of whitespace are the exception this margin covers).
_CHARS_PER_TOKEN_BOUND = 16


def build_context(tokenizer, text: str, end: int, budget: int, *, start_floor: int = 0,
                  prefix_room: int | None = None) -> ContextWindow:
    """Context for generating (or scoring) at document offset `end`: up to `budget` tokens of
    `text[start_floor:end]` (and at most `prefix_room` of the document), cut at a line start
    when the budget forces a cut."""
    special = special_prefix_ids(tokenizer)
    room = budget - len(special) if prefix_room is None else min(budget - len(special), prefix_room)
    window_start, ids, doc_offsets, truncated = prefix_tokens(tokenizer, text, end, room, start_floor=start_floor)
    return ContextWindow(
        text=text[window_start:end],
        doc_start=window_start,
        token_ids=special + list(ids),
        token_offsets=[(window_start, window_start)] * len(special) + doc_offsets,
        truncated=truncated,
        special_prefix=len(special),
    )


def prefix_tokens(tokenizer, text: str, end: int, room: int, *, start_floor: int = 0):
    """(window start, token ids, document spans, truncated): at most `room` tokens of
    `text[start_floor:end]`, starting on a line start when they had to be cut."""
    if not 0 <= end <= len(text):
        raise WhenceError(f"offset {end} is outside the document (length {len(text)})")
    if room < 1:
        raise WhenceError("context budget must be at least one token")
    window_start = max(start_floor, end - room * _CHARS_PER_TOKEN_BOUND)
    truncated = window_start > start_floor
    encoded = tokenizer(text[window_start:end], add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    if len(ids) > room:
        truncated = True
        cut = window_start + offsets[len(ids) - room][0]
        # start on a line boundary: a context that begins mid-identifier reads like noise
        newline = text.find("\n", cut, end)
        window_start = newline + 1 if newline != -1 else cut
        encoded = tokenizer(text[window_start:end], add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoded["input_ids"][-room:], encoded["offset_mapping"][-room:]
    elif truncated and window_start > 0:
        newline = text.find("\n", window_start, end)
        if newline != -1:
            window_start = newline + 1
            encoded = tokenizer(text[window_start:end], add_special_tokens=False, return_offsets_mapping=True)
            ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    return window_start, list(ids), [(window_start + s, window_start + e) for s, e in offsets], truncated


def special_prefix_ids(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts before any text (BOS), if any."""
    with_special = tokenizer("x", add_special_tokens=True)["input_ids"]
    without = tokenizer("x", add_special_tokens=False)["input_ids"]
    if len(with_special) > len(without) and with_special[-len(without):] == without:
        return list(with_special[: len(with_special) - len(without)])
    return []
