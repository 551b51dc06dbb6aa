"""The rest of a completion once its first part is in the document.

A completion shown early (cut at a line end when its time budget ran out) or typed through by
the user goes on being offered from what the model already generated: no model call. The rest
is a record of its own, exact: its tokens keep the scores the model gave them, and its context
is what the model saw when it chose them, the original context plus the tokens before them
(now document text, so they are attribution sources like any other line).
"""

from __future__ import annotations

import dataclasses
import uuid

from whence_ls.engine.records import ContextSegment, ScoredText, ScoredToken


def rest_of(full: ScoredText, consumed: int, heal: str = "") -> ScoredText | None:
    """The part of `full` after its first `consumed` characters (already in the document), or
    None when nothing is left. `heal` is the document text just before the cursor that the
    completion's first token re-produced (`healed_chars` of its timings).

    A `consumed` inside a token (the user typed part of it) leaves that token as the rest's first
    token with the typed part cut from its text, as token healing does with the cursor's word."""
    if not 0 <= consumed <= len(full.text):
        raise ValueError(f"consumed {consumed} is outside the completion (length {len(full.text)})")
    if consumed == len(full.text):
        return None
    if consumed == 0:
        return full
    first = next(k for k, t in enumerate(full.tokens) if t.end > consumed)
    before, after = full.tokens[:first], full.tokens[first:]
    cursor = full.doc_start
    context = _extended(full.context, before, cursor, heal, full.text[: after[0].start])
    tokens = [
        dataclasses.replace(t, text=t.text[max(0, consumed - t.start):], start=max(0, t.start - consumed), end=t.end - consumed)
        for t in after
    ]
    # the text of the rest's first token that is already in the document: what its healing was
    healed = (len(heal) if first == 0 else 0) + consumed - after[0].start
    return dataclasses.replace(
        full, id=uuid.uuid4().hex[:12], text=full.text[consumed:], doc_start=cursor + consumed, tokens=tokens, context=context,
        attribution={}, attribution_method=None,
        # the same positions of the same sequence: the rows generation read stay true
        live_rows={i - first: row for i, row in full.live_rows.items() if i >= first},
        timings={"generated_tokens": len(after), "healed_chars": healed, "continues": full.id, "continues_after_chars": consumed},
    )


def _extended(context, before: list[ScoredToken], cursor: int, heal: str, visible: str):
    """`context` followed by the completion tokens `before` (which the model saw next), their
    text `heal + visible` now document text from `cursor - len(heal)`."""
    start = cursor - len(heal)
    offsets = []
    position = start
    for token in before:
        # contiguous spans: the healed text goes to the tokens that re-produced it (a token's
        # visible text is only what it added after the healed text)
        offsets.append((position, cursor + token.end))
        position = cursor + token.end
    added = heal + visible
    n = len(context.token_ids)
    segments = list(context.segments)
    if segments and before:  # a prompt in parts: the completion's first part is one more run of document text
        segments.append(ContextSegment("prefix", added, start, n, n + len(before)))
    return dataclasses.replace(
        context,
        text=context.text + added,
        token_ids=list(context.token_ids) + [t.token_id for t in before],
        token_offsets=list(context.token_offsets) + offsets,
        segments=segments,
    )
