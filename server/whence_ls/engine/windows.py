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


@dataclasses.dataclass
class PromptShape:
    options: PromptOptions
    snippets: list[Snippet] | None
    language: str | None

    ceiling: int | None = None  # the model's window less the tokens to generate

    def window(self, lm: LoadedModel, text: str, cursor: int, budget: int, start_floor: int = 0,
               prefix_room: int | None = None) -> ContextWindow:
        return build_prompt(lm.tokenizer, text, cursor, budget, options=self.options, snippets=self.snippets,
                            language=self.language, start_floor=start_floor, ceiling=self.ceiling, prefix_room=prefix_room)


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
        if anchor.holds_in(text, cursor) and anchor.doc_start > window.doc_start:
            short = shape.window(lm, text, cursor, budget, start_floor=anchor.doc_start)
            segment = short.prefix_segment()
            # the cut must still leave the floor's worth of document (a jump up the file lands
            # just below a cut made further down) and fit the bound
            if not short.truncated and segment.end_token - segment.first_token >= COLD_FLOOR_TOKENS \
                    and len(short.token_ids) - reuse.shared(short.token_ids) <= max(cold_tokens, COLD_FLOOR_TOKENS):
                return dataclasses.replace(short, truncated=True, shortened=True)
    # what the document part may have: the cold tokens, less whatever else in the prompt (the
    # other files' snippets, the code after the cursor) the cache does not hold either
    prefix = window.prefix_segment()
    prefix_tokens = prefix.end_token - prefix.first_token
    others_uncached = (len(window.token_ids) - shared) - max(0, prefix.end_token - max(prefix.first_token, shared))
    room = max(COLD_FLOOR_TOKENS, cold_tokens - others_uncached)
    if room >= prefix_tokens:
        return window
    short = shape.window(lm, text, cursor, budget, prefix_room=room)
    return dataclasses.replace(short, shortened=True) if short.doc_start > window.doc_start else window


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
