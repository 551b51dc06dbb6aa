"""Hover on a token of an accepted completion or explained line: its confidence at once, and
what drove it (the strongest source lines, with bars and links, the copy finding and the logit
lens) in at most ~8 lines of markdown."""

from __future__ import annotations

import asyncio
import json
import math
from urllib.parse import quote
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from whence_ls.engine.sae.labels import readable_label
from whence_ls.lsp.protocol.params import plain

from whence_ls.engine.attribution.catalogue import FALLBACK_METHOD, METHOD_SHORT_NOTES
from whence_ls.lsp.protocol.names import CONTRAST_COMMAND, SHOW_FEATURE_COMMAND
from whence_ls.engine.attribution.ranking import strongest_sources
from whence_ls.lsp.state.records import Record

if TYPE_CHECKING:
    from whence_ls.lsp.text.documents import Document
    from pygls.lsp.server import LanguageServer

    from whence_ls.lsp.session import Session

# a hover on a token whose row is not ready waits this long for it, then answers without it
HOVER_WAIT_S = 2.0
# a default whose rows are made after the completion (`stacked_leave_one_out`: its masked forwards, once per record)
# shows the row of its part read while decoding (its stacked half) when its own row is not there
# within this long; its own row replaces it on the next hover (`whence/rowsReady` says when)
LIVE_PART_WAIT_S = 0.1
# the "saw:" line's features need a forward of their own: the hover shows what it has after this
# long, and they go on computing for the next hover (yielding to completions)
FEATURES_WAIT_S = 0.25
TOP_SOURCES = 3
BAR_WIDTH = 12


class HoverFeature:
    def __init__(self, session: "Session") -> None:
        self.session = session

    def register(self, server: "LanguageServer") -> None:
        server.feature(types.TEXT_DOCUMENT_HOVER)(plain(self.hover))

    async def hover(self, params: types.HoverParams) -> types.Hover | None:
        session = self.session
        document = session.documents.get(params.text_document.uri)
        if document is None:
            return None
        offset = session.offset(document, params.position)
        if offset is None:
            return None
        found = session.records.at(document.uri, offset)
        if found is None:
            return None
        record, index = found
        row, note = await self.row(record, index)
        verified = self.verified(record, index) if row is not None else None
        features = None
        # the "saw:" features need a forward of their own, submitted ahead of background work:
        # asked while the row shown is only the default's live part, they would hold back the
        # default's own row (by ~2.4 s for two hovered tokens with a core busy), so they are
        # asked once the token's own row is shown
        own = row is not None and getattr(row, "method", None) == session.attribution_method()
        if own and session.sae.available:
            try:
                features = await asyncio.wait_for(session.sae.features_of(record, index), FEATURES_WAIT_S)
            except asyncio.TimeoutError:
                features = None  # the next hover finds them computed
        start, end = record.hover_span(index)
        return types.Hover(
            contents=types.MarkupContent(kind=types.MarkupKind.Markdown,
                                         value=self.markdown(document, record, index, row, note, features, verified)),
            range=session.range(document, start, end),
        )

    async def row(self, record: Record, index: int) -> tuple[Any | None, str]:
        """The token's attribution row (waiting briefly for it) and, without one, why not."""
        session = self.session
        method = session.attribution_method()
        if method == "none":
            return None, "attribution is off (`whence.attributionMethod` is `none`)"
        queue = session.attribution
        if queue is None:
            return None, "attribution computing…"
        if not session.status.ready and queue.row(record, index) is None:
            return None, "attribution waits for the model to load"
        row = await queue.wait_row(record, index, LIVE_PART_WAIT_S)
        if row is None:
            row = await queue.live_part_row(record, index)
            if row is not None and record.units is not None:
                return row, ""
            row = await queue.wait_row(record, index, HOVER_WAIT_S - LIVE_PART_WAIT_S)
        if row is not None and record.units is None:
            await queue.wait_units(record, HOVER_WAIT_S)
        if row is None:
            error = queue.errors.get(record.id)
            return None, f"attribution failed: {error}" if error else "attribution computing… (hover again in a moment)"
        return row, ""

    def verified(self, record: Record, index: int) -> Any | None:
        """The token's verified row when the background ablation has made it; otherwise its
        record moves to the front of verification (a person is reading it) and None."""
        queue = self.session.verification
        if queue is None:
            return None
        row = queue.verified(record, index)
        if row is None:
            queue.to_front(record)
        return row

    def markdown(self, document: "Document", record: Record, index: int, row: Any | None, note: str,
                 features: list | None = None, verified: Any | None = None) -> str:
        """At most ~8 lines: the token and its runner-up, a copy when that is the finding, the 3
        strongest sources with bars and their strongest identifiers, the logit lens, one note
        that says whether the sources are verified by ablation or estimated."""
        token = record.scored.tokens[index]
        alternatives = [a for a in token.alternatives if a.token_id != token.token_id]
        # the first token of a healed completion wrote the typed part of its word too (`tot` +
        # `al`): the reader sees, and the probability is of, the whole word
        written = (record.lead if index == 0 else "") + token.text
        head = f"**`{_code(written)}`** p = **{token.prob:.2f}** · entropy {token.entropy:.1f}"
        if record.kind == "explanation":
            # the person wrote this token, not the model: say what the model would have written
            head += _expected(token, alternatives)
        elif alternatives:
            runner = alternatives[0]
            head += f" · runner-up `{_code(runner.text)}` {math.exp(runner.logprob):.2f}"
        what = "completion" if record.kind == "completion" else "explained line"
        lines = [head + f" · token {_visible_number(record.scored.tokens, index)}/"
                 f"{sum(1 for t in record.scored.tokens if t.text)} of this {what}  "]
        if row is None:
            lines += ["", f"_{note}_"]
            return "\n".join(lines)
        units = record.units or []
        extra = getattr(row, "extra", {}) or {}
        copied = extra.get("copied_from_unit")
        if isinstance(copied, int) and copied < len(units):
            label, link, _ = record.place_of(copied, document)
            lines.append(f"**copied from [{label}]({link})**: `{_code(_trim(units[copied].text))}`  ")
        elif extra.get("copied_from_completion"):
            lines.append("**copied from earlier in this completion**  ")
        shown = verified if verified is not None else row  # the sources: the ablation's once it is there
        top = [(u, sc) for u, sc in strongest_sources(shown.scores, shown.rank_by_abs, TOP_SOURCES) if u < len(units)]
        if not top:
            lines.append("_no line of the context stood out for this token_  ")
        strongest = max((abs(sc) for _, sc in top), default=1.0) or 1.0
        identifier_scores = getattr(row, "identifier_scores", None)
        for unit_index, score in top:
            unit = units[unit_index]
            filled = max(1, round(BAR_WIDTH * abs(score) / strongest))
            bar = ("█" * filled).ljust(BAR_WIDTH, "░")
            label, link, _ = record.place_of(unit_index, document)
            words = _strongest_identifiers(unit, record.first_identifier(unit_index), identifier_scores)
            tail = f" — {', '.join(f'`{w}`' for w in words)}" if words else ""
            lines.append(f"`{bar}` [{label}]({link}) `{_code(_trim(unit.text))}`{tail}  ")
        lens = extra.get("logit_lens")
        if isinstance(lens, dict) and lens.get("layers"):
            lines.append(_lens_line(lens))
        method = getattr(row, "method", None) or self.session.attribution_method()
        why = ""
        if alternatives:
            arguments = quote(json.dumps([{"recordId": record.id, "tokenIndex": index}]))
            why = f"[why `{_code(written)}` and not `{_code(alternatives[0].text)}`?](command:{CONTRAST_COMMAND}?{arguments})"
        if features:
            # what the model "saw": its strongest SAE features, each said as what it fires on, a
            # link to its page, with the line it fires on most behind the link (its title)
            shown = []
            for feature in features[:3]:
                arguments = quote(json.dumps([{"recordId": record.id, "tokenIndex": index, "uri": document.uri,
                                               "layer": feature["layer"], "feature": feature["feature"]}]))
                mark = " (induction)" if feature.get("induction") else ""
                title = _example_title(feature.get("example"))
                shown.append(f"[{_feature_label(feature['label'])}](command:{SHOW_FEATURE_COMMAND}?{arguments}{title}){mark}")
            lines.append("what the model saw: features firing on " + " · ".join(shown) + (f" · {why}" if why else "") + "  ")
        elif why:
            lines.append(why + "  ")
        context = record.scored.context
        if context is not None and context.shortened:
            # the sources above come from this shorter window: say so, and why
            cut = context.snippets_cut()
            snippets = f", other files' snippets {cut}" if cut else ""
            lines.append(f"_this completion read a shorter context ({len(context.token_ids)} tokens{snippets}) to answer quickly: the "
                         "full window was not in the cache (`whence.coldPrefillMs`); the next completion here reads it_  ")
        precision = getattr(record.scored, "precision", "fp32")
        if precision in ("fp16", "onnx-fp32"):
            lines.append(f"_decoded with {precision} weights: within rounding of the fp32 model's numbers_  ")
        elif precision != "fp32":
            lines.append(f"_decoded with {precision} weights (`whence.precision`): these probabilities and this row are "
                         "that decode's, not the fp32 model's; `whence-ls bench generate` measures the difference_  ")
        lines.append(f"_{self.truth_sentence(record, method, verified)}_")
        return "\n".join(lines)

    def truth_sentence(self, record: Record, method: str, verified: Any | None) -> str:
        """Whether the sources above are verified or estimated, how far the estimate was from
        the verification, and how true either is on the benchmark."""
        if verified is None:
            queue = self.session.verification
            pending = queue is not None and queue.verifying(record)
            return f"estimated, {'verifying by ablation… · ' if pending else ''}{self.method_sentence(method)}"
        extra = getattr(verified, "extra", {}) or {}
        check = extra.get("estimate_agreement") or {}
        sentence = f"verified by {extra.get('verified_masks', '?')} ablations"
        if extra.get("verification_precision", "fp32") != "fp32":  # measured as good as fp32 (masked_model.py)
            sentence += f" (run in {extra['verification_precision']})"
        if check.get("same_top"):
            sentence += "; the estimate had the same top line"
        elif check.get("rank_in_estimate"):
            sentence += f"; the estimate ranked this top line {_ordinal(check['rank_in_estimate'])}"
        if check.get("lds") is not None:
            sentence += f" (estimate's LDS on these ablations {check['lds']:.2f})"
        short = METHOD_SHORT_NOTES.get("verified")
        return f"{sentence} · {short}" if short else sentence

    def method_sentence(self, method: str) -> str:
        short = METHOD_SHORT_NOTES.get(method)
        name = method.replace("_", " ")
        sentence = f"{name}: {short}" if short else name
        if self.session.model_calibrated is False and method == FALLBACK_METHOD:
            sentence += " (this model is not calibrated: run `whence-ls model calibrate` for the calibrated estimator)"
        default = self.session.attribution_method()
        if method != default:  # the live part's row, shown while the default's own is made
            sentence += f"; the {default.replace('_', ' ')} row is being made (hover again)"
        return sentence


def _ordinal(rank: int) -> str:
    suffix = "th" if 10 <= rank % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(rank % 10, "th")
    return f"{rank}{suffix}"


def _expected(token, alternatives: list) -> str:
    """An explained token's comparison: the model's own first choice when it is another token,
    else that it is the model's choice too (with the next one)."""
    first = token.alternatives[0] if token.alternatives else None
    if first is not None and first.token_id != token.token_id:
        return f" · the model expected `{_code(first.text)}` {math.exp(first.logprob):.2f}"
    if alternatives:
        return f" · the model's own first choice (next: `{_code(alternatives[0].text)}` {math.exp(alternatives[0].logprob):.2f})"
    return " · the model's own first choice"


def _strongest_identifiers(unit, first: int, identifier_scores: list[float] | None, limit: int = 2) -> list[str]:
    """The identifiers of `unit` that carry most of its score (sub-sources), strongest first;
    theirs start at index `first` of `identifier_scores`."""
    names = [identifier.text for identifier in unit.identifiers]
    if not names or not identifier_scores:
        return []
    scored = [(abs(identifier_scores[first + k]), name) for k, name in enumerate(names) if first + k < len(identifier_scores)]
    scored = [item for item in scored if item[0] > 0]
    scored.sort(reverse=True)
    seen: list[str] = []
    for _, name in scored:
        if name not in seen:
            seen.append(name)
        if len(seen) == limit:
            break
    return seen


def _feature_label(label: str) -> str:
    """A feature's label in words (what it fires on) inside link text: backticks kept (they
    render as code), brackets out."""
    return readable_label(label).replace("[", "(").replace("]", ")")[:90]


def _example_title(example: dict | None) -> str:
    """The link title (shown on mouse-over) with the corpus line the feature fires on most."""
    if not example or not example.get("code"):
        return ""
    where = f"{example.get('path', '?')}:{example.get('line', '?')}: {_trim(str(example['code']), 80)}"
    return ' "fires most on ' + where.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _lens_line(lens: dict) -> str:
    layers = lens["layers"]
    settled = lens.get("top_from_layer")
    if settled is None:
        return f"logit lens: never the top prediction of a single layer of {layers}  "
    earlier = lens.get("earlier") or []
    before = ", ".join(f"layer {e['layer']}: `{_code(e['text'])}`" for e in earlier)
    return f"logit lens: the top prediction from layer {settled} of {layers}" + (f" (before: {before})" if before else "") + "  "


def _trim(text: str, limit: int = 60) -> str:
    first = text.strip().splitlines()[0] if text.strip() else text
    more = "…" if len(first) > limit or "\n" in text.strip() else ""
    return first[:limit].rstrip() + more


def _code(text: str) -> str:
    """Token text made visible inside inline code (whitespace shown, backticks kept out)."""
    shown = text.replace("`", "ˋ").replace("\n", "⏎").replace("\t", "⇥")
    return shown if shown.strip() else shown.replace(" ", "·")


def _visible_number(tokens: list, index: int) -> int:
    return sum(1 for t in tokens[: index + 1] if t.text)
