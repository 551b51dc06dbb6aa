"""Benchmark queries made from corpus chunks: the ways a completion can reproduce its source.

Each maker takes a chunk's text and a random generator and returns the query text, or None
when the chunk does not lend itself to that change (no names to rename, say).
"""

from __future__ import annotations

import builtins
import io
import keyword
import random
import re
import textwrap
import tokenize

from whence_ls.trace.tokens import normalise

_BUILTINS = set(dir(builtins)) | {"self", "cls"}
_SYLLABLES = ("ka", "zu", "mo", "ri", "te", "lo", "vi", "ne", "sa", "qu", "fe", "dy")


def exact_copy(text: str, rng: random.Random) -> str:
    return text


def span(text: str, rng: random.Random, low: int = 40, high: int = 300) -> str | None:
    """40-300 characters cut from the chunk at word boundaries, as a completion would be."""
    if len(text) < low:
        return None
    length = rng.randint(low, min(high, len(text)))
    start = rng.randint(0, len(text) - length)
    # move both ends to the nearest whitespace, so no token is cut in half
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    end = start + length
    while end < len(text) and not text[end].isspace():
        end += 1
    return text[start:end]


def normalised_length(text: str, language: str) -> int:
    return len(normalise(text, language).exact.text)


def reformatted(text: str, rng: random.Random) -> str | None:
    """Same code, other layout: indentation unit, spaces in brackets and around operators,
    blank lines and full-line comments changed."""
    out = []
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        if stripped.startswith("#") and rng.random() < 0.7:
            continue  # comments dropped
        if not stripped:
            if rng.random() < 0.5:
                continue
            out.append("")
            continue
        body = stripped
        if "'" not in body and '"' not in body:  # leave literals alone
            body = re.sub(r"\(\s*", "( ", body) if rng.random() < 0.5 else body
            body = re.sub(r",\s*", " , " if rng.random() < 0.5 else ",", body)
            body = re.sub(r"\s*=\s*", " = ", body) if "==" not in body and "!=" not in body else body
        out.append(" " * (indent // 2) + body)
        if rng.random() < 0.1:
            out.append(" " * (indent // 2) + "# reviewed")
    result = "\n".join(out) + "\n"
    return result if result.strip() != text.strip() else None


def renamed(text: str, rng: random.Random, language: str = "python") -> str | None:
    """Identifiers consistently renamed (not keywords, builtins or attribute names)."""
    mapping: dict[str, str] = {}

    def new_name(old: str) -> str:
        if old not in mapping:
            mapping[old] = "".join(rng.choice(_SYLLABLES) for _ in range(3)) + f"_{len(mapping)}"
        return mapping[old]

    if language == "python":
        source = textwrap.dedent(text)
        try:
            tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
        except (tokenize.TokenError, IndentationError, SyntaxError):
            return None
        pieces = []
        previous = None
        for tok in tokens:
            if (tok.type == tokenize.NAME and not keyword.iskeyword(tok.string)
                    and not keyword.issoftkeyword(tok.string) and tok.string not in _BUILTINS
                    and not (previous is not None and previous.string == ".")):
                tok = tok._replace(string=new_name(tok.string))
            pieces.append((tok.type, tok.string))
            if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
                previous = tok
        try:
            result = tokenize.untokenize(pieces)
        except ValueError:
            return None
    else:
        result = re.sub(r"(?<![.\w])([A-Za-z_]\w*)", lambda m: new_name(m.group(1))
                        if m.group(1) not in _BUILTINS else m.group(1), text)
    return result if mapping else None


_NEW_STATEMENTS = (
    "count = 0", "result = None", "items = list(items)", "logger.debug('here')",
    "if value is None:\n{indent}    return None", "total += 1", "assert data is not None",
    "name = name.strip()",
)


def edited(text: str, rng: random.Random) -> str | None:
    """Statements added, removed or changed: about one edit per six lines, at least one."""
    lines = text.splitlines()
    body = [i for i, line in enumerate(lines) if i > 0 and line.strip() and not line.strip().startswith("#")]
    if len(body) < 3:
        return None
    for _ in range(max(1, round(len(body) / 6))):
        body = [i for i, line in enumerate(lines) if i > 0 and line.strip()]
        if not body:
            break
        where = rng.choice(body)
        line = lines[where]
        indent = line[: len(line) - len(line.lstrip())]
        action = rng.choice(("add", "remove", "change"))
        if action == "remove" and not line.rstrip().endswith(":"):
            del lines[where]
        elif action == "add":
            statement = rng.choice(_NEW_STATEMENTS).format(indent=indent)
            lines.insert(where, indent + statement)
        else:
            changed = re.sub(r"\b\d+\b", lambda m: str(int(m.group()) + 1), line, count=1)
            if changed == line:
                changed = re.sub(r"(?<![\w.])([A-Za-z_]\w*)\s*=(?!=)", r"\1_new =", line, count=1)
            if changed == line:
                changed = line.rstrip() + "  # changed"
                changed = indent + "x = " + line.strip() if not line.rstrip().endswith(":") else changed
            lines[where] = changed
    result = "\n".join(lines) + "\n"
    return result if result != text else None


MAKERS = {
    "exact": exact_copy,
    "span": span,
    "reformatted": reformatted,
    "renamed": renamed,
    "edited": edited,
}
