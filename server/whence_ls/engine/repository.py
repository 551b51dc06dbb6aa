"""Repository context: which snippets of other workspace files a completion's prompt carries.

Candidates are files the user has open and files the current one imports; each is cut into its
top-level blocks (a function, a class, a run of statements), and the blocks are ranked by what
the current file uses: a block that defines a name the file mentions counts most, then shared
identifiers. The best blocks go last in the prompt, nearest the cursor.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from whence_ls.engine.prompt import Snippet

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEFINES = re.compile(r"^(?:async\s+def|def|class|function|const|let|var|export\s+(?:async\s+)?(?:function|class|const))\s+([A-Za-z_$][\w$]*)"
                      r"|^([A-Za-z_][A-Za-z0-9_]*)\s*(?::[^=]*)?=", re.M)
_PY_IMPORT = re.compile(r"^\s*(?:from\s+(\.*)([\w.]*)\s+import\s+([\w., ()*]+)|import\s+([\w., ]+))", re.M)
_JS_IMPORT = re.compile(r"""(?:import\s[^'"]*?from\s*|import\s*\(\s*|require\s*\(\s*|import\s+)['"](\.{1,2}/[^'"]+)['"]""")
# a block longer than this many lines is cut: a 300-line class would crowd out everything else
MAX_BLOCK_LINES = 60
# how much of a file is read for candidates (a generated 10 MB file is nobody's context)
MAX_FILE_CHARS = 400_000
_COMMON = frozenset("""self cls None True False return def class import from if else elif for while in is not and or
with as try except finally raise pass break continue lambda yield async await global nonlocal del assert print len
str int float list dict set tuple range object super isinstance const let var function new this null undefined
true false export default require module""".split())


@dataclass
class Block:
    snippet: Snippet
    defines: frozenset[str]
    words: frozenset[str]


def blocks_of(path: str, text: str, uri: str | None = None) -> list[Block]:
    """The top-level blocks of a file: each starts at a line with no indentation (decorators and
    comments stay with what follows them) and runs to the next one."""
    text = text[:MAX_FILE_CHARS]
    lines = text.split("\n")
    starts: list[int] = []
    for number, line in enumerate(lines):
        if line and not line[0].isspace() and not line.startswith((")", "]", "}")):
            previous = lines[number - 1] if number else ""
            attached = previous.startswith(("@", "#", "//")) and starts and starts[-1] == number - 1
            if not attached:  # a decorated definition goes on the decorator's block
                starts.append(number)
    blocks: list[Block] = []
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    for k, first in enumerate(starts):
        last = (starts[k + 1] if k + 1 < len(starts) else len(lines))
        last = min(last, first + MAX_BLOCK_LINES)
        body = "\n".join(lines[first:last]).rstrip()
        if not body.strip():
            continue
        words = frozenset(w for w in _IDENTIFIER.findall(body) if w not in _COMMON and len(w) > 1)
        defines = frozenset(m.group(1) or m.group(2) for m in _DEFINES.finditer(body.split("\n", 1)[0] + "\n"))
        blocks.append(Block(Snippet(path, body + "\n", offsets[first], first, uri), defines, words))
    return blocks


def rank_blocks(blocks: list[Block], query: str, limit_chars: int) -> list[Snippet]:
    """The blocks most useful to a completion in `query` (the current file's text), within
    `limit_chars`, best last."""
    used = {}
    for word in _IDENTIFIER.findall(query):
        if word not in _COMMON and len(word) > 1:
            used[word] = used.get(word, 0) + 1
    scored = []
    for order, block in enumerate(blocks):
        defined = sum(1 for name in block.defines if name in used)
        shared = sum(1 for word in block.words if word in used)
        if not defined and not shared:
            continue
        score = 3.0 * defined + shared / math.sqrt(len(block.words) or 1)
        scored.append((score, -order, block))
    scored.sort(key=lambda item: (item[0], item[1]), reverse=True)
    chosen: list[Snippet] = []
    total = 0
    for _, _, block in scored:
        size = len(block.snippet.text)
        if total + size > limit_chars:
            continue
        chosen.append(block.snippet)
        total += size
    return list(reversed(chosen))


def imported_files(text: str, document_path: Path, roots: list[Path], language: str | None) -> list[Path]:
    """Workspace files the document imports (Python modules and packages, relative JS/TS
    imports), in the order the imports appear; only files under `roots`."""
    found: list[Path] = []
    if language in ("javascript", "typescript", "tsx", "jsx"):
        for match in _JS_IMPORT.finditer(text):
            base = (document_path.parent / match.group(1)).resolve()
            for candidate in (base, *(base.with_name(base.name + ext) for ext in (".ts", ".tsx", ".js", ".jsx")),
                              base / "index.ts", base / "index.js"):
                if candidate.is_file():
                    found.append(candidate)
                    break
    else:
        for match in _PY_IMPORT.finditer(text):
            dots, module, names, plain = match.groups()
            modules: list[tuple[int, str]] = []
            if plain is not None:
                modules += [(0, part.strip().split(" as ")[0]) for part in plain.split(",") if part.strip()]
            else:
                level = len(dots or "")
                modules.append((level, module or ""))
                for name in (names or "").replace("(", "").replace(")", "").split(","):
                    name = name.strip().split(" as ")[0]
                    if name and name != "*":
                        modules.append((level, f"{module}.{name}" if module else name))
            for level, name in modules:
                path = _resolve_python(level, name, document_path, roots)
                if path is not None:
                    found.append(path)
    inside = [p for p in dict.fromkeys(found) if p != document_path and any(is_under(p, root) for root in roots)]
    return inside


def _resolve_python(level: int, name: str, document_path: Path, roots: list[Path]) -> Path | None:
    parts = [p for p in name.split(".") if p]
    bases = [document_path.parent.parents[level - 2] if level >= 2 else document_path.parent] if level else []
    if not level:
        bases = list(roots) + [root / "src" for root in roots] + [document_path.parent]
    for base in bases:
        target = base.joinpath(*parts) if parts else base
        for candidate in (target.with_suffix(".py") if parts else None, target / "__init__.py"):
            if candidate is not None and candidate.is_file():
                return candidate.resolve()
    return None


def is_under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False
