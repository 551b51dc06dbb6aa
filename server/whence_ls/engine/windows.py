"""Which context window a completion reads: its prompt's shape, where the window starts (where a
cached prompt's started, so the prefix cache serves it), and, with a bound on cold prefill, a
shorter window when the cache holds too little of the full one.

A jump to a part of a file no cached window holds would read its whole window before the first
token: 1.7-2.4 s for ~500-800 tokens with one core busy on a 2-core machine (`whence-ls bench
lsp --busy-cores 1`). With the machine's measured prefill rate (`prefill_rate.py`) the window is
cut to what the bound allows; its start is remembered as provisional, so typing on reuses it,
until the full window (warmed in the background) is in the cache.
"""

from __future__ import annotations

import dataclasses

from whence_ls.engine.loading import LoadedModel
from whence_ls.engine.prefix_cache import PrefixCache
from whence_ls.engine.prompt import PromptOptions, Snippet, build_prompt
from whence_ls.engine.records import ContextWindow

# the fewest document tokens a window cut short to bound a cold prefill keeps (`complete_at`'s
# `cold_prefill_s`): below this a completion knows too little of its file to be worth the wait
COLD_FLOOR_TOKENS = 192
# fewer snippet tokens than this are left out of a window cut short (a path and a line or two)
MIN_REPOSITORY_TOKENS = 64


@dataclasses.dataclass
class PromptShape:
    options: PromptOptions
    snippets: list[Snippet] | None
    language: str | None

    ceiling: int | None = None  # the model's window less the tokens to generate

    def window(self, lm: LoadedModel, text: str, cursor: int, budget: int, start_floor: int = 0,
               prefix_room: int | None = None, repository_room: int | None = None) -> ContextWindow:
        return build_prompt(lm.tokenizer, text, cursor, budget, options=self.options, snippets=self.snippets,
                            language=self.language, start_floor=start_floor, ceiling=self.ceiling, prefix_room=prefix_room,
                            repository_room=repository_room)


def context_window(lm: LoadedModel, text: str, cursor: int, budget: int, reuse: PrefixCache | None,
                    shape: PromptShape | None = None, cold_tokens: int | None = None) -> ContextWindow:
    """The context for a completion at `cursor`; with a prefix cache, cut where a cached prompt
    was cut (so their token ids match) while that still fits the budget. With `cold_tokens`,
    a window that would need more than that many tokens the cache does not hold is cut shorter:
    where an earlier short cut was made if it still serves, else just before the cursor."""
    shape = shape or PromptShape(PromptOptions(), None, None)
    window = full_window(lm, text, cursor, budget, reuse, shape)
    if reuse is None or cold_tokens is None:
        return window
    shared = reuse.shared(window.token_ids)
    if len(window.token_ids) - shared <= cold_tokens:
        return window
    for anchor in reuse.anchors(provisional=True):
        # a provisional start serves if it cut the document later, or left other files'
        # snippets out (then the document may start where the full window's does)
        if anchor.holds_in(text, cursor) and (anchor.doc_start > window.doc_start or
                                              (anchor.repository_room is not None and anchor.doc_start >= window.doc_start)):
            short = shape.window(lm, text, cursor, budget, start_floor=anchor.doc_start, repository_room=anchor.repository_room)
            segment = short.prefix_segment()
            # a cut must still leave about the floor's worth of document (a jump up the file
            # lands just below a cut made further down), and the window fit the bound. About:
            # a cut to the floor starts at the next line start, so it holds a line less (a cut
            # that had to hold the whole floor was never used by the keystroke after it)
            kept_enough = short.doc_start <= window.doc_start or \
                segment.end_token - segment.first_token >= COLD_FLOOR_TOKENS * 3 // 4
            if not short.truncated and kept_enough \
                    and len(short.token_ids) - reuse.shared(short.token_ids) <= max(cold_tokens, COLD_FLOOR_TOKENS):
                return dataclasses.replace(short, truncated=short.doc_start > 0 or short.truncated, shortened=True,
                                           repository_room=anchor.repository_room)
    room, repository_room = cold_rooms(window, shared, cold_tokens)
    prefix = window.prefix_segment()
    if room >= prefix.end_token - prefix.first_token and repository_room is None:
        return window
    short = shape.window(lm, text, cursor, budget, prefix_room=room, repository_room=repository_room)
    if short.doc_start > window.doc_start or len(short.token_ids) < len(window.token_ids):
        return dataclasses.replace(short, shortened=True, repository_room=repository_room)
    return window


def cold_rooms(window: ContextWindow, shared: int, cold_tokens: int) -> tuple[int, int | None]:
    """How many tokens of the document before the cursor, and of other files' snippets (None: as
    many as the full window has), a window may keep to prefill at most `cold_tokens` that the
    cache does not hold (`shared` of `window`'s leading tokens it does). The document comes
    first: snippets the cache does not hold get what is left after it (measured with `bench
    quality`, the prefix is worth more than the snippets), none when that is less than
    `MIN_REPOSITORY_TOKENS`; it never falls below `COLD_FLOOR_TOKENS`."""
    prefix = window.prefix_segment()
    prefix_uncached = max(0, prefix.end_token - max(prefix.first_token, shared))
    others_uncached = (len(window.token_ids) - shared) - prefix_uncached  # snippets, suffix, markup
    has_snippets = any(s.role == "repository" for s in window.segments)
    # the repository part: from the special tokens to the first of this document's segments
    # (with the markup and the current file's header)
    repository_end = min((s.first_token for s in window.segments if s.role != "repository"), default=window.special_prefix)
    repository_uncached = max(0, repository_end - max(window.special_prefix, shared)) if has_snippets else 0
    if not repository_uncached:
        return max(COLD_FLOOR_TOKENS, cold_tokens - others_uncached), None
    fixed_uncached = others_uncached - repository_uncached  # the suffix and its markup
    room = max(COLD_FLOOR_TOKENS, cold_tokens - fixed_uncached)
    left = cold_tokens - fixed_uncached - min(room, prefix.end_token - prefix.first_token)
    return room, (left if left >= MIN_REPOSITORY_TOKENS else 0)


def full_window(lm: LoadedModel, text: str, cursor: int, budget: int, reuse: PrefixCache | None,
                 shape: PromptShape) -> ContextWindow:
    if reuse is None:
        return shape.window(lm, text, cursor, budget)
    for anchor in reuse.anchors():
        if anchor.holds_in(text, cursor):
            window = shape.window(lm, text, cursor, budget, start_floor=anchor.doc_start)
            if not window.truncated:
                return dataclasses.replace(window, truncated=anchor.doc_start > 0)
    window = shape.window(lm, text, cursor, budget)
    if window.truncated:
        # a new cut: leave a quarter of the budget to type into before the window must move
        window = shape.window(lm, text, cursor, max(1, budget * 3 // 4))
    return window
