"""The layer rule (docs/architecture.md): engine and trace import nothing of lsp, commands,
bench or the provenance log; inside lsp/, the rooms stack (protocol, text, state, runtime, the
session, features, server.py) and a module imports only its own room and those below; nothing
in features/ imports features/ (a new feature is checked without editing a list); the lsp import
graph has no circle."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "server" / "whence_ls"


def _modules(subpackage: str) -> list[str]:
    return sorted(f"whence_ls.{subpackage}.{m.name}" for m in pkgutil.walk_packages([str(PACKAGE / subpackage)]) if not m.ispkg)


@pytest.mark.parametrize("layer", ["engine", "trace", "report"])
def test_engine_and_trace_load_nothing_of_the_layers_above(layer):
    modules = [f"whence_ls.{layer}"] + _modules(layer)
    code = (f"import importlib, sys\nfor name in {modules!r}:\n    importlib.import_module(name)\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('whence_ls.lsp', 'whence_ls.commands', 'whence_ls.bench', 'whence_ls.provenance')))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def _runtime_imports(path: Path) -> set[str]:
    """Modules `path` imports when it runs (TYPE_CHECKING blocks excluded), function-level too."""
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(a.name for a in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.module:
                found.add(node.module)

    Visitor().visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


# lsp/'s rooms, lowest first: a module imports its own room and the rooms below it, never one
# above (the session is above every room; features above the session; server.py on top)
ROOMS = ["protocol", "text", "state", "runtime", "session", "features", "server"]


def _lsp_graph() -> dict[str, set[str]]:
    """lsp module (dotted, relative to lsp/: `features.hover`) -> the lsp modules it imports at
    run time (a `from whence_ls.lsp.text import positions` counts as `text`)."""
    lsp = PACKAGE / "lsp"
    graph: dict[str, set[str]] = {}
    for path in lsp.rglob("*.py"):
        name = ".".join(path.relative_to(lsp).with_suffix("").parts)
        graph[name] = {m[len("whence_ls.lsp."):] for m in _runtime_imports(path) if m.startswith("whence_ls.lsp.")}
    return graph


def _room(module: str) -> str:
    return module.split(".")[0]


def test_nothing_in_features_imports_features_and_rooms_only_look_down():
    graph = _lsp_graph()
    features = [m for m in graph if _room(m) == "features" and not m.endswith("__init__")]
    assert len(features) >= 10, features  # the rule below checks something
    rooms = {_room(m) for m in graph if "." in m}
    assert rooms <= set(ROOMS), f"a new room in lsp/ needs its place in ROOMS: {rooms - set(ROOMS)}"
    for module, imports in graph.items():
        room = _room(module)
        if room == "__init__":
            assert not imports
            continue
        for imported in imports:
            if room == "features":  # a feature reaches another only through the session's hooks
                assert _room(imported) != "features", f"{module} imports the feature {imported}"
            assert ROOMS.index(_room(imported)) <= ROOMS.index(room), f"{module} ({room}) imports {imported}, a room above it"


def test_the_lsp_import_graph_has_no_circle():
    graph = _lsp_graph()

    def visit(node: str, path: list[str]) -> None:
        for nxt in graph.get(node, ()):
            assert nxt not in path, f"import circle: {' -> '.join(path + [nxt])}"
            visit(nxt, path + [nxt])

    for start in graph:
        visit(start, [start])


def test_benchmark_logic_lives_in_the_bench_package():
    for path in (PACKAGE / "commands").glob("bench*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        functions = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        assert set(functions) <= {"add_parser", "run"}, f"{path.name} holds more than argument parsing: {functions}"
