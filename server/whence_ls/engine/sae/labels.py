"""A feature's label in words. The feature index stores labels in a compact form
(`features._label`: the tokens a feature fires on, in backticks, with whitespace drawn as ⏎ and
·, and the token before them when they share it); a hover that showed that form read as a
newline symbol and six dots after a docstring's closing quotes, which means nothing without the
legend. The shipped indexes keep
the compact form, so the words are made at display time, here, without torch."""

from __future__ import annotations

import keyword


def readable_label(label: str) -> str:
    """The compact form above in words ("a new line indented 6, after `.` + three quotes (a
    docstring's quotes)"); a label not in that form ("(never fires)") is returned as it is."""
    if not label.startswith("`"):
        return label
    tokens_part, before = label, None
    if label.endswith("`") and " after `" in label:
        tokens_part, _, rest = label.rpartition(" after `")
        before = rest[:-1]
    said = " or ".join(token_in_words(t.strip("`")) for t in tokens_part.split(" / "))
    return f"{said}, after {token_in_words(before)}" if before else said


def token_in_words(token: str) -> str:
    if token == "∅":
        return "an empty token"
    if token.startswith("⏎"):
        indent = token.count("·") + 4 * token.count("→")
        breaks = token.count("⏎")
        start = "a new line" if breaks == 1 else f"{breaks} new lines"
        return f"{start} indented {indent}" if indent else start
    if token and set(token) <= {"·", "→"}:
        width = token.count("·") + 4 * token.count("→")
        return "a space" if width == 1 else f"{width} spaces of indentation"
    if keyword.iskeyword(token) or keyword.issoftkeyword(token):
        return f"the keyword `{token}`"
    if '"""' in token or "'''" in token:
        return f"`{token}` (a docstring's quotes)"
    if token.startswith("#"):
        return f"`{token}` (a comment)"
    return f"`{token}`"
