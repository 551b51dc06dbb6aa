"""Hover on a token of an accepted completion or explained line: its confidence at once, and
what drove it (attribution over context units) as a markdown bar chart with links."""

from __future__ import annotations

import keyword
import math
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from whence_ls.lsp.params import plain

from whence_ls.lsp.attribution_queue import attribution_engine
from whence_ls.lsp.records import Record

if TYPE_CHECKING:
    from whence_ls.lsp.documents import Document
    from whence_ls.lsp.server import WhenceServer

# a hover on a token whose row is not ready waits this long for it, then answers without it
HOVER_WAIT_S = 2.0
TOP_UNITS = 6
BAR_WIDTH = 12


class HoverFeature:
    def __init__(self, server: "WhenceServer") -> None:
        self.server = server

    def register(self) -> None:
        self.server.feature(types.TEXT_DOCUMENT_HOVER)(plain(self.hover))

    async def hover(self, params: types.HoverParams) -> types.Hover | None:
        server = self.server
        document = server.documents.get(params.text_document.uri)
        if document is None:
            return None
        offset = server.offset(document, params.position)
        if offset is None:
            return None
        found = server.records.at(document.uri, offset)
        if found is None:
            return None
        record, index = found
        row, note = await self.row(record, index)
        start, end = record.spans[index]
        return types.Hover(
            contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=self.markdown(document, record, index, row, note)),
            range=server.range(document, start, end),
        )

    async def row(self, record: Record, index: int) -> tuple[Any | None, str]:
        """The token's attribution row (waiting briefly for it) and, without one, why not."""
        server = self.server
        method = server.attribution_method()
        if method == "none":
            return None, "attribution is off (`whence.attributionMethod` is `none`)"
        if attribution_engine() is None:
            return None, "attribution is not available in this installation"
        queue = server.attribution
        if queue is None:
            return None, "attribution computing…"
        if not server.status.ready and queue.row(record, index) is None:
            return None, "attribution waits for the model to load"
        row = await queue.wait_row(record, index, HOVER_WAIT_S)
        if row is not None and record.units is None:
            await queue.wait_units(record, HOVER_WAIT_S)
        if row is None:
            error = queue.errors.get(record.id)
            return None, f"attribution failed: {error}" if error else "attribution computing… (hover again in a moment)"
        return row, ""

    def markdown(self, document: "Document", record: Record, index: int, row: Any | None, note: str) -> str:
        token = record.scored.tokens[index]
        what = "a completion" if record.kind == "completion" else "an explained line"
        lines = [
            f"**`{_code(token.text)}`** · p = **{token.prob:.3f}** · entropy {token.entropy:.2f} nats  ",
            # tokens with no visible text (the healed prefix) are not counted: users see text
            f"token {_visible_number(record.scored.tokens, index)} of {sum(1 for t in record.scored.tokens if t.text)} in {what} by {record.scored.model}",
            "",
        ]
        alternatives = [a for a in token.alternatives if a.token_id != token.token_id][:4]
        if alternatives:
            lines.append("runner-ups: " + " · ".join(f"`{_code(a.text)}` {math.exp(a.logprob):.3f}" for a in alternatives))
            lines.append("")
        if row is None:
            lines.append(f"_{note}_")
            return "\n".join(lines)
        method = getattr(row, "method", None) or self.server.attribution_method()
        lines.append(f"**what drove it** ({method.replace('_', ' ')}):")
        lines.append("")
        engine = attribution_engine()
        method_note = getattr(engine, "METHOD_NOTES", {}).get(method) if engine is not None else None
        units = record.units or []
        top = [(u, s) for u, s in row.top(TOP_UNITS) if u < len(units)]
        if not top:
            lines.append("_the method found no signal in the context for this token_")
        strongest = max((abs(s) for _, s in top), default=1.0) or 1.0
        for unit_index, score in top:
            unit = units[unit_index]
            filled = max(1, round(BAR_WIDTH * abs(score) / strongest))
            bar = ("█" * filled).ljust(BAR_WIDTH, "░")
            line, _ = document.position_at(unit.start)
            link = f"{document.uri}#L{line + 1}"
            sign = "+" if score >= 0 else "−"
            lines.append(f"`{bar}` {sign}{abs(score):.2f} [`{_code(unit.text.strip() or unit.text)}`]({link}) line {line + 1}  ")
        repeated = _earlier_occurrences(record, index, units)
        if repeated:
            # a copied identifier is the commonest case, and gradient rankings often miss it: with
            # several occurrences, blanking one changes little (docs/benchmarks.md, copy cases)
            word, found = repeated
            where = ", ".join(f"[line {line + 1}]({document.uri}#L{line + 1})" for line in
                              sorted({document.position_at(units[u].start)[0] for u in found})[-3:])
            more = len({document.position_at(units[u].start)[0] for u in found}) - 3
            lines += ["", f"`{_code(word)}` also occurs in the context: {where}" + (f" (+{more} more lines)" if more > 0 else "")]
        if method_note:
            # underscores inside an emphasis would end it early: name the method with spaces
            lines += ["", f"_{method.replace('_', ' ')}: {method_note}_"]
        return "\n".join(lines)


# keywords and near-keywords of the other languages whence-ls completes
_COMMON_WORDS = frozenset({"self", "this", "function", "const", "let", "var", "func", "fn", "int", "void",
                           "public", "private", "static", "new", "null", "true", "false", "nil"})


def _earlier_occurrences(record: Record, index: int, units: list) -> tuple[str, list[int]] | None:
    """The identifier the token belongs to and the context units that spell it, if any."""
    text, token = record.scored.text, record.scored.tokens[index]
    if not any(c.isalnum() or c == "_" for c in token.text):
        return None
    left = token.start + next(k for k, c in enumerate(token.text) if c.isalnum() or c == "_")
    right = left
    while left > 0 and (text[left - 1].isalnum() or text[left - 1] == "_"):
        left -= 1
    while right < len(text) and (text[right].isalnum() or text[right] == "_"):
        right += 1
    word = text[left:right]
    if len(word) < 2 or word.isdigit() or keyword.iskeyword(word) or word in _COMMON_WORDS:
        return None  # a keyword "occurs earlier" in any code: no news to the reader
    found = [u for u, unit in enumerate(units) if unit.text.strip() == word]
    return (word, found) if found else None


def _code(text: str) -> str:
    """Token text made visible inside inline code (whitespace shown, backticks kept out)."""
    shown = text.replace("`", "ˋ").replace("\n", "⏎").replace("\t", "⇥")
    return shown if shown.strip() else shown.replace(" ", "·")


def _visible_number(tokens: list, index: int) -> int:
    return sum(1 for t in tokens[: index + 1] if t.text)
