"""Split a source file into chunks with tree-sitter: functions, methods and classes, plus
windows over the top-level code between them.

Classes are chunks and are also searched for their methods; functions are not searched for
nested functions (a nested function is part of its parent's text, and keeping the chunk count
down is what keeps the default build fast). Nodes that only wrap or contain definitions
(decorators, `export`, namespaces, preprocessor conditionals, class bodies) are walked through.
"""

from __future__ import annotations

from dataclasses import dataclass

from whence_ls.grammars import get_parser

# The top-level code between definitions is cut into windows of at most this many lines.
WINDOW_LINES = 40

_FUNCTIONS = {
    "python": {"function_definition"},
    "javascript": {"function_declaration", "generator_function_declaration", "method_definition"},
    "go": {"function_declaration", "method_declaration"},
    "rust": {"function_item", "macro_definition"},
    "java": {"method_declaration", "constructor_declaration"},
    "c": {"function_definition"},
    "cpp": {"function_definition"},
}
_FUNCTIONS["typescript"] = _FUNCTIONS["tsx"] = _FUNCTIONS["javascript"] | {"function_signature"}

_CLASSES = {
    "python": {"class_definition"},
    "javascript": {"class_declaration"},
    "go": {"type_declaration"},
    "rust": {"impl_item", "trait_item", "struct_item", "enum_item"},
    "java": {"class_declaration", "interface_declaration", "enum_declaration", "record_declaration"},
    "c": {"struct_specifier", "union_specifier", "enum_specifier"},
    "cpp": {"class_specifier", "struct_specifier", "union_specifier", "enum_specifier"},
}
_CLASSES["typescript"] = _CLASSES["tsx"] = _CLASSES["javascript"] | {
    "abstract_class_declaration", "interface_declaration", "enum_declaration"}

# Walked through; a wrapper's start line becomes the start of the definition it wraps.
_WRAPPERS = {"decorated_definition", "export_statement", "template_declaration"}
_CONTAINERS = {
    "block", "class_body", "declaration_list", "interface_body", "enum_body",
    "enum_body_declarations", "namespace_definition", "linkage_specification",
    "preproc_if", "preproc_ifdef", "preproc_else", "preproc_elif", "field_declaration_list",
    "mod_item",
}


@dataclass
class Chunk:
    kind: str  # "function" | "class" | "window"
    name: str
    start_line: int  # 1-based, inclusive
    end_line: int
    start_byte: int
    end_byte: int


def chunk_source(source: bytes, language: str) -> list[Chunk]:
    """Chunks of one file, in source order; raises nothing on syntax errors (tree-sitter
    recovers, and the chunks it still finds are worth indexing)."""
    parser = get_parser(language)
    if parser is None:
        return []
    root = parser.parse(source).root_node
    functions = _FUNCTIONS.get(language, set())
    classes = _CLASSES.get(language, set())
    chunks: list[Chunk] = []
    pending: list = []  # top-level nodes not covered by a definition, waiting for a window

    def emit(node, start_node, kind: str) -> None:
        chunks.append(Chunk(kind, _definition_name(node), start_node.start_point[0] + 1, node.end_point[0] + 1,
                            start_node.start_byte, node.end_byte))

    def walk(children, start_node=None) -> bool:
        """Emit the definitions among `children` and below; True when there were any."""
        found = False
        for child in children:
            anchor = start_node or child
            if child.type in functions:
                emit(child, anchor, "function")
                found = True
            elif child.type in classes:
                if child.type in ("struct_specifier", "union_specifier", "enum_specifier") and \
                        child.child_by_field_name("body") is None:
                    continue  # a use of a type, not its definition
                emit(child, anchor, "class")
                walk(child.named_children)
                found = True
            elif child.type in _WRAPPERS:
                found |= walk(child.named_children, anchor)
            elif child.type in _CONTAINERS:
                found |= walk(child.named_children)
            # anything else (class-level fields, statements) stays part of the enclosing chunk
        return found

    for child in root.named_children:
        if walk([child]):
            _flush_windows(pending, chunks)
        else:
            pending.append(child)
    _flush_windows(pending, chunks)
    chunks.sort(key=lambda c: (c.start_byte, -c.end_byte))
    return chunks


def _definition_name(node) -> str:
    """The defined name; C and C++ keep it inside nested declarators."""
    for _ in range(4):
        name = node.child_by_field_name("name")
        if name is not None:
            return name.text.decode("utf-8", "replace")
        declarator = node.child_by_field_name("declarator")
        if declarator is None:
            return ""
        if declarator.type in ("identifier", "field_identifier", "qualified_identifier",
                               "destructor_name", "operator_name"):
            return declarator.text.decode("utf-8", "replace")
        node = declarator
    return ""


def _flush_windows(pending: list, chunks: list[Chunk]) -> None:
    if not pending:
        return
    group: list = []
    for node in pending:
        if group and node.end_point[0] - group[0].start_point[0] + 1 > WINDOW_LINES:
            _emit_window(group, chunks)
            group = []
        group.append(node)
    _emit_window(group, chunks)
    pending.clear()


def _emit_window(group: list, chunks: list[Chunk]) -> None:
    # lone comments or a lone import line say nothing about provenance on their own
    if all(node.type == "comment" for node in group):
        return
    first, last = group[0], group[-1]
    chunks.append(Chunk("window", "", first.start_point[0] + 1, last.end_point[0] + 1,
                        first.start_byte, last.end_byte))
