"""Tree-sitter grammars, shared by the engine (where a block ends) and trace (chunking).

The grammars come from the tree-sitter project's own PyPI wheels, which carry the compiled
parsers; tree-sitter-language-pack 1.x was rejected because it downloads parsers at run time,
and whence-ls must work offline.
"""

from __future__ import annotations

import functools
import importlib
import os

import tree_sitter

# language name -> (module, attribute returning the language pointer)
_GRAMMARS: dict[str, tuple[str, str]] = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
}

_EXTENSIONS: dict[str, str] = {
    ".py": "python", ".pyi": "python", ".pyw": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".go": "go", ".rs": "rust", ".java": "java",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".hxx": "cpp",
}

# LSP languageId -> our grammar name, where they differ
_LSP_LANGUAGE_IDS: dict[str, str] = {
    "typescriptreact": "tsx",
    "javascriptreact": "javascript",
    "c++": "cpp",
}


def supported_languages() -> list[str]:
    return sorted(_GRAMMARS)


def language_for_path(path: str) -> str | None:
    """The grammar name for a file path, or None when no grammar is carried for it."""
    return _EXTENSIONS.get(os.path.splitext(path)[1].lower())


def language_for_lsp_id(language_id: str | None, path: str = "") -> str | None:
    if language_id:
        name = _LSP_LANGUAGE_IDS.get(language_id, language_id)
        if name in _GRAMMARS:
            return name
    return language_for_path(path)


@functools.cache
def get_language(name: str) -> tree_sitter.Language | None:
    entry = _GRAMMARS.get(name)
    if entry is None:
        return None
    module_name, attr = entry
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return tree_sitter.Language(getattr(module, attr)())


def get_parser(name: str) -> tree_sitter.Parser | None:
    """A fresh parser (parsers are not thread-safe; languages are cached and shared)."""
    language = get_language(name)
    return tree_sitter.Parser(language) if language is not None else None
