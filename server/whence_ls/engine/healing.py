"""Token healing: the context's last token is backed off and generation must re-produce its text,
so a cursor after indentation or inside a word does not leave the model continuing from a token
it would rarely have produced there (see `heal_context`)."""

from __future__ import annotations

import dataclasses
import re

import torch

from whence_ls.engine.loading import LoadedModel
from whence_ls.engine.records import ContextSegment, ContextWindow


def heal_context(context: ContextWindow) -> tuple[ContextWindow, str]:
    """Back off the context's last token; generation must then start by re-producing its text.

    A cursor after indentation or inside a word leaves a token that the model would rarely have
    produced there (8 spaces alone, half an identifier), and continuing from it derails the
    completion (a 9-space indent, `os.pa` + `th`). Letting the model choose a token that covers
    the backed-off text ("token healing") fixes both.
    """
    prefix = context.prefix_segment()
    if prefix.end_token - prefix.first_token < 2:
        return context, ""
    last = prefix.end_token - 1  # the prefix's last token; FIM markup and the suffix may follow it
    start, _ = context.token_offsets[last]
    heal = context.text[start - context.doc_start :]

    def shifted(segment: ContextSegment) -> ContextSegment:
        if segment.first_token > last:
            return dataclasses.replace(segment, first_token=segment.first_token - 1, end_token=segment.end_token - 1)
        if segment is prefix:
            return dataclasses.replace(segment, text=segment.text[: len(segment.text) - len(heal)], end_token=last)
        return segment

    healed = dataclasses.replace(
        context,
        text=context.text[: start - context.doc_start],
        token_ids=context.token_ids[:last] + context.token_ids[last + 1 :],
        token_offsets=context.token_offsets[:last] + context.token_offsets[last + 1 :],
        segments=[shifted(s) for s in context.segments],
    )
    return healed, heal


_TRAILING_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def healing_closure(before: str, heal: str) -> str | None:
    """What the token that finishes re-producing `heal` must not add right after it:

    - "space" when the cursor follows whitespace: the indentation is the user's, exactly (a
      newline-plus-20-spaces token once added 12 spaces and continued an inner block);
    - "word" when the cursor follows a name the context already uses as a whole word: it is
      finished (`elem` must not become `elements`, `description` not `descriptions`); a word the
      context does not know yet (`os.pa`) may still be completed by the healing token;
    - None otherwise."""
    if not heal:
        return None
    if heal[-1].isspace():
        return "space"
    text = before + heal
    word = _TRAILING_WORD.search(text)
    if word is not None and re.search(rf"(?<![A-Za-z0-9_]){re.escape(word.group())}(?![A-Za-z0-9_])", text[: word.start()]):
        return "word"
    return None


def _extends(extension: str, closed: str | None) -> bool:
    """Whether a healing token's text after the healed text breaks `closed`."""
    if not extension or closed is None:
        return False
    first = extension[0]
    return first.isspace() if closed == "space" else (first.isalnum() or first == "_")


def healing_mask(lm: LoadedModel, pending: str, closed: str | None = None) -> torch.Tensor:
    """Vocabulary mask of tokens consistent with text still to be re-produced (and, for the
    token that finishes it, with `closed`: see `healing_closure`)."""
    special = lm.special_token_ids()
    allowed = [
        i for i, t in enumerate(lm.token_texts())
        if t and i not in special and "\ufffd" not in t
        and (pending.startswith(t) or t.startswith(pending) and not _extends(t[len(pending):], closed))
    ]
    mask = torch.full((len(lm.token_texts()),), float("-inf"), device=lm.device)
    mask[allowed] = 0.0
    return mask
