"""The prompt of a completion: the code before the cursor, the code after it (fill-in-the-middle,
in the template of the model's family) and snippets of other workspace files (in the repository
format the model was trained on), assembled as token ids with every token's place kept.

The order puts what changes least first, so the prefix cache still serves typing: repository
snippets, then the current file's header, then (for a suffix-first family) the suffix, then the
prefix. For a prefix-suffix-middle family the suffix follows the prefix and is run again after
each keystroke; its budget is kept small for that reason.

Markup (FIM markers, `<file_sep>`, paths) is given token ids directly, never tokenized from
text, and has no character span: it is never a source of attribution.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from whence_ls.engine.context import prefix_tokens, special_prefix_ids
from whence_ls.engine.records import ContextSegment, ContextWindow
from whence_ls.errors import WhenceError


@dataclass(frozen=True)
class FimTemplate:
    family: str
    prefix: tuple[str, ...]  # accepted spellings of each marker in the vocabulary
    suffix: tuple[str, ...]
    middle: tuple[str, ...]  # empty for suffix-first templates that generate right after the prefix
    suffix_first: bool
    stops: tuple[str, ...]  # tokens that end the middle in this family


FIM_TEMPLATES: tuple[FimTemplate, ...] = (
    FimTemplate("starcoder", ("<fim_prefix>",), ("<fim_suffix>",), ("<fim_middle>",), False,
                ("<|endoftext|>", "<file_sep>", "<fim_pad>", "<filename>")),
    FimTemplate("qwen2.5-coder", ("<|fim_prefix|>",), ("<|fim_suffix|>",), ("<|fim_middle|>",), False,
                ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|im_end|>")),
    FimTemplate("deepseek-coder", ("<｜fim▁begin｜>",), ("<｜fim▁hole｜>",), ("<｜fim▁end｜>",), False,
                ("<｜end▁of▁sentence｜>", "<|EOT|>")),
    FimTemplate("codellama", ("▁<PRE>", "<PRE>"), ("▁<SUF>", "<SUF>"), ("▁<MID>", "<MID>"), False,
                ("▁<EOT>", "<EOT>")),
    FimTemplate("codestral", ("[PREFIX]",), ("[SUFFIX]",), (), True, ("</s>",)),
)
FIM_CHOICES = ("auto", "off") + tuple(t.family for t in FIM_TEMPLATES)


@dataclass(frozen=True)
class RepositoryFormat:
    """How the model was trained to see several files of one repository."""

    kind: str  # "starcoder2", "qwen", "starcoder" (<filename> only) or "comments"
    repo_name: str | None = None  # marker token texts
    file_sep: str | None = None


def repository_format(tokenizer) -> RepositoryFormat:
    vocab = tokenizer.get_vocab()
    if "<file_sep>" in vocab:
        return RepositoryFormat("starcoder2", "<repo_name>" if "<repo_name>" in vocab else None, "<file_sep>")
    if "<|file_sep|>" in vocab:
        return RepositoryFormat("qwen", "<|repo_name|>" if "<|repo_name|>" in vocab else None, "<|file_sep|>")
    if "<filename>" in vocab:
        return RepositoryFormat("starcoder", "<reponame>" if "<reponame>" in vocab else None, "<filename>")
    return RepositoryFormat("comments")


@dataclass
class Snippet:
    """Code from another file of the workspace, for the model to see and a view to point at."""

    path: str  # as shown to the model and the user (workspace-relative)
    text: str
    start: int = 0  # character offset of text[0] in its file
    line: int = 0  # 0-based line of text[0]
    uri: str | None = None


@dataclass(frozen=True)
class PromptOptions:
    fim: str = "auto"  # "auto" (the tokenizer's family, if any), "off", or a family name
    suffix_tokens: int = 128  # at most this many tokens after the cursor (FIM only)
    repository_tokens: int = 384  # at most this many tokens of other files' snippets
    file_path: str | None = None  # the current document's workspace-relative path
    repository_name: str | None = None


def fim_template(tokenizer, choice: str = "auto") -> FimTemplate | None:
    """The FIM template for this tokenizer: detected when `choice` is "auto", None when "off" or
    when the vocabulary has no FIM markers. A named family must exist in the vocabulary."""
    if choice == "off":
        return None
    vocab = tokenizer.get_vocab()
    candidates = FIM_TEMPLATES if choice == "auto" else [t for t in FIM_TEMPLATES if t.family == choice]
    if not candidates:
        raise WhenceError(f"unknown FIM template {choice!r}: use one of {', '.join(FIM_CHOICES)}")
    for template in candidates:
        if all(_spelling(vocab, marker) is not None for marker in (template.prefix, template.suffix, template.middle) if marker):
            return template
    if choice != "auto":
        raise WhenceError(f"the model's tokenizer has no {choice} FIM tokens")
    return None


def _spelling(vocab: dict, spellings: tuple[str, ...]) -> int | None:
    return next((vocab[s] for s in spellings if s in vocab), None)


_COMMENT = {"python": "#", "ruby": "#", "shell": "#", "bash": "#", "r": "#", "yaml": "#", "toml": "#",
            "lua": "--", "sql": "--", "haskell": "--"}


def _path_comment(path: str, language: str | None) -> str:
    return f"{_COMMENT.get(language or '', '//')} {path}\n"


class _Builder:
    """Token ids with their spans and segments, appended in prompt order."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.vocab = tokenizer.get_vocab()
        self.ids: list[int] = []
        self.offsets: list[tuple[int, int]] = []
        self.segments: list[ContextSegment] = []

    def markup_token(self, text: str) -> None:
        self.ids.append(self.vocab[text])
        self.offsets.append((0, 0))

    def markup_text(self, text: str) -> None:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        self.ids.extend(ids)
        self.offsets.extend([(0, 0)] * len(ids))

    def code(self, role: str, text: str, start: int, ids: list[int], offsets: list[tuple[int, int]], **where) -> None:
        first = len(self.ids)
        self.ids.extend(ids)
        self.offsets.extend(offsets)
        self.segments.append(ContextSegment(role, text, start, first, len(self.ids), **where))

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def build_prompt(tokenizer, text: str, cursor: int, budget: int, *, options: PromptOptions = PromptOptions(),
                 snippets: list[Snippet] | None = None, language: str | None = None, start_floor: int = 0,
                 ceiling: int | None = None, prefix_room: int | None = None,
                 repository_room: int | None = None) -> ContextWindow:
    """The context for a completion at `cursor` in `text`: at most `budget` tokens of this
    document (before and after the cursor, with FIM markup), and on top of them at most
    `options.repository_tokens` of other files' snippets, the whole within `ceiling` (the
    model's window less the tokens to generate). `prefix_room` caps the document before the
    cursor further, `repository_room` the snippets (0: none), for a window cut short to bound
    a cold prefill.

    The snippets come on top rather than out of the document's budget: measured with
    `whence-ls bench quality` on the embedded model, a shared budget cut the prefix and lost
    more than the snippets gave."""
    if not 0 <= cursor <= len(text):
        raise WhenceError(f"offset {cursor} is outside the document (length {len(text)})")
    template = fim_template(tokenizer, options.fim)
    snippets = [s for s in (snippets or []) if s.text.strip()] if repository_room != 0 else []
    special = special_prefix_ids(tokenizer)
    if template is None and not snippets:
        from whence_ls.engine.context import build_context

        return dataclasses.replace(build_context(tokenizer, text, cursor, budget, start_floor=start_floor, prefix_room=prefix_room),
                                   language=language)
    build = _Builder(tokenizer)
    build.ids.extend(special)
    build.offsets.extend([(0, 0)] * len(special))
    formats: list[str] = []
    if snippets:
        snippet_room = options.repository_tokens if ceiling is None else min(options.repository_tokens, ceiling - budget)
        if repository_room is not None:
            snippet_room = min(snippet_room, repository_room)
        if _add_repository(build, snippets, snippet_room, options, language):
            formats.append("repository")
    suffix_ids: list[int] = []
    suffix_offsets: list[tuple[int, int]] = []
    suffix_end = cursor
    if template is not None:
        formats.insert(0, template.family)
        suffix_end, suffix_ids, suffix_offsets = _suffix_tokens(tokenizer, text, cursor, min(options.suffix_tokens, budget // 4))
    markers = 3 if template is not None else 0
    room = budget - len(special) - len(suffix_ids) - markers
    if prefix_room is not None:
        room = min(room, prefix_room)
    if room < 1:
        raise WhenceError("context budget too small for the prompt's repository part and suffix")
    window_start, ids, offsets, truncated = prefix_tokens(tokenizer, text, cursor, room, start_floor=start_floor)
    vocab = build.vocab
    if template is None:
        build.code("prefix", text[window_start:cursor], window_start, ids, offsets)
    else:
        prefix_marker = next(s for s in template.prefix if s in vocab)
        suffix_marker = next(s for s in template.suffix if s in vocab)
        if template.suffix_first:
            build.markup_token(suffix_marker)
            build.code("suffix", text[cursor:suffix_end], cursor, suffix_ids, suffix_offsets)
            build.markup_token(prefix_marker)
            build.code("prefix", text[window_start:cursor], window_start, ids, offsets)
        else:
            build.markup_token(prefix_marker)
            build.code("prefix", text[window_start:cursor], window_start, ids, offsets)
            build.markup_token(suffix_marker)
            build.code("suffix", text[cursor:suffix_end], cursor, suffix_ids, suffix_offsets)
            build.markup_token(next(s for s in template.middle if s in vocab))
    stops = tuple(vocab[s] for s in (template.stops if template is not None else ()) if s in vocab)
    return ContextWindow(
        text=text[window_start:cursor],
        doc_start=window_start,
        token_ids=build.ids,
        token_offsets=build.offsets,
        truncated=truncated,
        special_prefix=len(special),
        segments=build.segments,
        stop_token_ids=stops,
        prompt_format="+".join(formats) or "prefix",
        language=language,
    )


def _suffix_tokens(tokenizer, text: str, cursor: int, room: int) -> tuple[int, list[int], list[tuple[int, int]]]:
    """The code after the cursor, at most `room` tokens, ending at a line end when cut."""
    if room < 1 or cursor >= len(text):
        return cursor, [], []
    end = min(len(text), cursor + room * 16)
    encoded = tokenizer(text[cursor:end], add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    if len(ids) > room or end < len(text):
        keep = ids[:room]
        last = offsets[len(keep) - 1][1] if keep else 0
        newline = text.rfind("\n", cursor, cursor + last)
        end = newline + 1 if newline > cursor else cursor + last
        encoded = tokenizer(text[cursor:end], add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoded["input_ids"][:room], encoded["offset_mapping"][:room]
    return end, list(ids), [(cursor + s, cursor + e) for s, e in offsets]


def _add_repository(build: _Builder, snippets: list[Snippet], room: int, options: PromptOptions, language: str | None) -> bool:
    """Other files' snippets in the model's repository format, within `room` tokens; whole
    lines only. Returns whether any snippet fit."""
    form = repository_format(build.tokenizer)
    current = options.file_path or "current"
    # the current file's header closes the part: its tokens come out of the same room
    room -= (1 + build.count(current + "\n")) if form.file_sep else build.count(_path_comment(current, language))
    used = 0
    header_ids = len(build.ids)
    if form.repo_name is not None:
        build.markup_token(form.repo_name)
        build.markup_text(options.repository_name or "workspace")
    added = 0
    for snippet in snippets:
        header = snippet.path + "\n"
        cost = 1 + build.count(header) if form.file_sep else build.count(_path_comment(snippet.path, language))
        left = room - used - cost
        if left < 8:
            break
        encoded = build.tokenizer(snippet.text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
        text = snippet.text
        if len(ids) > left:
            last = offsets[left - 1][1]
            newline = text.rfind("\n", 0, last)
            if newline <= 0:
                continue
            text = text[: newline + 1]
            encoded = build.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            ids, offsets = encoded["input_ids"][:left], encoded["offset_mapping"][:left]
        if not text.endswith("\n"):
            text += "\n"  # the next header starts a line
            extra = build.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            ids, offsets = extra["input_ids"][: max(left, 1)], extra["offset_mapping"][: max(left, 1)]
        if form.file_sep:
            build.markup_token(form.file_sep)
            build.markup_text(header)
        else:
            build.markup_text(_path_comment(snippet.path, language))
        # spans in the snippet's own file; a newline added above maps onto the snippet's end
        spans = [(snippet.start + min(s, len(snippet.text)), snippet.start + min(e, len(snippet.text))) for s, e in offsets]
        build.code("repository", snippet.text[: len(text)], snippet.start, list(ids), spans,
                   path=snippet.path, uri=snippet.uri, line=snippet.line)
        used = len(build.ids) - header_ids
        added += 1
    if not added:
        del build.ids[header_ids:], build.offsets[header_ids:]
        return False
    # the current file's header: the model reads the prefix as the next file of the repository
    if form.file_sep:
        build.markup_token(form.file_sep)
        build.markup_text(current + "\n")
    else:
        build.markup_text(_path_comment(current, language))
    return True
