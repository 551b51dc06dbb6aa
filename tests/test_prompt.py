"""The prompt: fill-in-the-middle per model family and other files' snippets, token by token,
with every code token's place kept; attribution over the suffix and the snippets."""

from __future__ import annotations

import pytest

from conftest import embedded_model_dir

DOCUMENT = '''import os


def total_size(paths):
    """Sum of the sizes of the files."""
    size = 0
    for path in paths:
        size += os.path.getsize(path)
    return size


def describe(paths):
    count = len(paths)
    return f"{count} files, {total_size(paths)} bytes"
'''
CURSOR = DOCUMENT.index("size += ") + len("size += ")

UTILS = '''def human_bytes(n):
    """Format a byte count: 1.5 kB."""
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
'''


def _tokenizer(extra=()):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(embedded_model_dir()))
    if extra:
        tokenizer.add_special_tokens({"additional_special_tokens": list(extra)})
    return tokenizer


def _spans_match(context, text_of):
    """Every code token's span holds the token's own text in its file."""
    for segment in context.all_segments():
        for p in range(segment.first_token, segment.end_token):
            start, end = context.token_offsets[p]
            piece = text_of(segment)[start:end]
            decoded = context_tokenizer.decode([context.token_ids[p]])
            assert piece == decoded or piece in decoded, (segment.role, p, piece, decoded)


context_tokenizer = None


def test_plain_prompt_is_the_prefix_window():
    from whence_ls.engine.context import build_context
    from whence_ls.engine.prompt import build_prompt

    tokenizer = _tokenizer()
    plain = build_context(tokenizer, DOCUMENT, CURSOR, 64)
    prompt = build_prompt(tokenizer, DOCUMENT, CURSOR, 64)
    assert prompt.token_ids == plain.token_ids and prompt.prompt_format == "prefix"


@pytest.mark.parametrize("family, markers", [
    ("starcoder", ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")),
    ("qwen2.5-coder", ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")),
    ("deepseek-coder", ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>")),
    ("codellama", ("▁<PRE>", "▁<SUF>", "▁<MID>")),
    ("codestral", ("[PREFIX]", "[SUFFIX]")),
])
def test_fim_template_of_each_family(family, markers):
    global context_tokenizer
    from whence_ls.engine.prompt import build_prompt, fim_template

    tokenizer = _tokenizer(markers)
    context_tokenizer = tokenizer
    assert fim_template(tokenizer).family == family
    vocab = tokenizer.get_vocab()
    context = build_prompt(tokenizer, DOCUMENT, CURSOR, 200)
    assert context.prompt_format == family
    roles = [s.role for s in context.segments]
    ids = context.token_ids
    prefix = next(s for s in context.segments if s.role == "prefix")
    suffix = next(s for s in context.segments if s.role == "suffix")
    assert DOCUMENT[: CURSOR].endswith(prefix.text) and DOCUMENT[CURSOR:].startswith(suffix.text)
    assert suffix.text.startswith("os.path.getsize(path)\n")
    if family == "codestral":  # suffix first, then the prefix, then the model writes the middle
        assert roles == ["suffix", "prefix"]
        assert ids[suffix.first_token - 1] == vocab["[SUFFIX]"] and ids[prefix.first_token - 1] == vocab["[PREFIX]"]
        assert prefix.end_token == len(ids)
    else:
        assert roles == ["prefix", "suffix"]
        assert ids[prefix.first_token - 1] == vocab[markers[0]]
        assert ids[suffix.first_token - 1] == vocab[markers[1]] and ids[-1] == vocab[markers[2]]
    _spans_match(context, lambda segment: DOCUMENT)


def test_fim_off_and_named_family_errors():
    from whence_ls.engine.prompt import PromptOptions, build_prompt, fim_template
    from whence_ls.errors import WhenceError

    tokenizer = _tokenizer(("<fim_prefix>", "<fim_suffix>", "<fim_middle>"))
    assert build_prompt(tokenizer, DOCUMENT, CURSOR, 200, options=PromptOptions(fim="off")).prompt_format == "prefix"
    with pytest.raises(WhenceError, match="no codestral FIM tokens"):
        fim_template(tokenizer, "codestral")
    with pytest.raises(WhenceError, match="unknown FIM template"):
        fim_template(tokenizer, "nonsense")
    assert fim_template(_tokenizer()) is None  # the embedded tokenizer has no FIM markers


def test_suffix_budget_ends_on_a_line():
    from whence_ls.engine.prompt import PromptOptions, build_prompt

    tokenizer = _tokenizer(("<fim_prefix>", "<fim_suffix>", "<fim_middle>"))
    context = build_prompt(tokenizer, DOCUMENT, CURSOR, 400, options=PromptOptions(suffix_tokens=20))
    suffix = next(s for s in context.segments if s.role == "suffix")
    assert suffix.end_token - suffix.first_token <= 20
    assert suffix.text.endswith("\n") and len(suffix.text) < len(DOCUMENT) - CURSOR
    assert len(context.token_ids) <= 400


def test_repository_snippets_in_the_models_format():
    global context_tokenizer
    from whence_ls.engine.prompt import PromptOptions, Snippet, build_prompt

    tokenizer = _tokenizer()
    context_tokenizer = tokenizer
    vocab = tokenizer.get_vocab()
    snippet = Snippet("pkg/utils.py", UTILS, start=40, line=3, uri="file:///w/pkg/utils.py")
    context = build_prompt(tokenizer, DOCUMENT, CURSOR, 400, snippets=[snippet],
                           options=PromptOptions(file_path="pkg/sizes.py", repository_name="w"))
    assert context.prompt_format == "repository"
    text = tokenizer.decode(context.token_ids)
    assert text.startswith("<repo_name>w<file_sep>pkg/utils.py\ndef human_bytes(n):")
    assert "<file_sep>pkg/sizes.py\nimport os" in text
    assert context.token_ids[0] == vocab["<repo_name>"]
    repository = context.segments[0]
    assert (repository.role, repository.path, repository.line) == ("repository", "pkg/utils.py", 3)
    file_text = " " * 40 + UTILS  # the snippet sits at offset 40 of its file
    _spans_match(context, lambda segment: DOCUMENT if segment.path is None else file_text)
    # the prefix keeps the document's offsets, and the prompt keeps its budget
    assert context.prefix_segment().text == context.text and DOCUMENT[context.doc_start : CURSOR] == context.text
    tight = build_prompt(tokenizer, DOCUMENT, CURSOR, 120, snippets=[snippet], options=PromptOptions(repository_tokens=40))
    repository_part = tight.prefix_segment().first_token
    assert repository_part <= 40 and tight.segments[0].text.endswith("\n")
    assert len(tight.segments[0].text) < len(UTILS)  # cut to whole lines of the budget
    # the document keeps its own budget; the model's window caps the whole
    assert len(tight.token_ids) - repository_part <= 120
    capped = build_prompt(tokenizer, DOCUMENT, CURSOR, 120, snippets=[snippet], ceiling=130)
    assert len(capped.token_ids) <= 130


def test_path_comments_without_repository_tokens():
    from whence_ls.engine.prompt import PromptOptions, Snippet, repository_format, _add_repository, _Builder

    class NoRepositoryTokens:
        """The embedded tokenizer with its repository markers hidden."""

        def __init__(self, inner):
            self.inner = inner

        def get_vocab(self):
            return {k: v for k, v in self.inner.get_vocab().items() if k not in ("<file_sep>", "<filename>", "<repo_name>", "<reponame>")}

        def __call__(self, *args, **kwargs):
            return self.inner(*args, **kwargs)

    tokenizer = NoRepositoryTokens(_tokenizer())
    assert repository_format(tokenizer).kind == "comments"
    build = _Builder(tokenizer)
    assert _add_repository(build, [Snippet("utils.py", UTILS)], 200, PromptOptions(file_path="main.py"), "python")
    text = tokenizer.inner.decode(build.ids)
    assert text.startswith("# utils.py\ndef human_bytes") and text.endswith("# main.py\n")


def test_healing_backs_off_the_prefix_not_the_fim_markup(tiny_fim_lm):
    from whence_ls.engine.healing import heal_context
    from whence_ls.engine.prompt import build_prompt

    lm = tiny_fim_lm
    cursor = DOCUMENT.index("getsize") + 3  # inside a word
    context = build_prompt(lm.tokenizer, DOCUMENT, cursor, 300)
    healed, heal = heal_context(context)
    assert heal and (context.text[: -len(heal)] == healed.text)
    assert len(healed.token_ids) == len(context.token_ids) - 1
    assert healed.token_ids[-1] == context.token_ids[-1]  # the middle marker stays last
    prefix, suffix = healed.segments
    assert prefix.end_token == context.segments[0].end_token - 1
    assert (suffix.first_token, suffix.end_token) == (context.segments[1].first_token - 1, context.segments[1].end_token - 1)


def test_fim_completion_attributes_to_lines_below_and_other_files(tiny_fim_lm):
    """The real generation and attribution on a tiny FIM model: sources include the lines after
    the cursor and the snippet's lines (with their file and line), and a row's mass covers them."""
    from whence_ls.engine.attribution import attribute_rows, context_units
    from whence_ls.engine.generation import complete_at
    from whence_ls.engine.prompt import PromptOptions, Snippet

    lm = tiny_fim_lm
    snippet = Snippet("pkg/utils.py", UTILS, start=0, line=10, uri="file:///w/pkg/utils.py")
    record = complete_at(lm, DOCUMENT, CURSOR, language="python", max_new_tokens=6, snippets=[snippet],
                         prompt=PromptOptions(file_path="pkg/sizes.py"))
    assert record.context.prompt_format == "starcoder+repository"
    assert record.tokens and record.doc_start == CURSOR
    units = context_units(lm, record, "python")
    roles = {u.role for u in units}
    assert roles == {"repository", "prefix", "suffix"}
    below = [u for u in units if u.role == "suffix"]
    assert below[0].start >= CURSOR and DOCUMENT[below[0].start : below[0].end] == below[0].text
    first_snippet = next(u for u in units if u.role == "repository")
    assert (first_snippet.path, first_snippet.line, first_snippet.text) == ("pkg/utils.py", 10, "def human_bytes(n):")
    rows = attribute_rows(lm, record, [0], "gradient_norm", language="python")
    scores = rows[0].scores
    assert abs(sum(abs(x) for x in scores) - 1.0) < 1e-6
    assert sum(abs(scores[i]) for i, u in enumerate(units) if u.role != "prefix") > 0


def test_repository_part_is_reused_while_typing(tiny_lm):
    """The stable part goes first: typing after a prompt with snippets reuses its keys."""
    from whence_ls.engine.generation import complete_at
    from whence_ls.engine.prompt import Snippet

    lm = tiny_lm
    lm.prefix_cache.clear()
    snippets = [Snippet("pkg/utils.py", UTILS)]
    first = complete_at(lm, DOCUMENT, CURSOR, language="python", max_new_tokens=3, reuse_prefix=True, snippets=snippets)
    typed = DOCUMENT[:CURSOR] + "os." + DOCUMENT[CURSOR:]
    second = complete_at(lm, typed, CURSOR + 3, language="python", max_new_tokens=3, reuse_prefix=True, snippets=snippets)
    assert first.context.prompt_format == "repository"
    repository_end = second.context.prefix_segment().first_token
    assert second.timings["reused_tokens"] >= repository_end > 40
