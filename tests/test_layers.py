"""The layer rule (docs/architecture.md): engine and trace import nothing of lsp, commands or
bench; lsp features reach each other only through the session and protocol_names, never through
server.py or each other's modules; the lsp import graph has no circle."""

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
            "bad = sorted(m for m in sys.modules if m.startswith(('whence_ls.lsp', 'whence_ls.commands', 'whence_ls.bench')))\n"
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


def test_lsp_features_never_import_the_server_and_the_graph_has_no_circle():
    lsp = PACKAGE / "lsp"
    graph: dict[str, set[str]] = {}
    for path in lsp.glob("*.py"):
        imports = _runtime_imports(path)
        graph[path.stem] = {m.split(".")[2] for m in imports if m.startswith("whence_ls.lsp.")}
        if path.stem != "server":
            assert "server" not in graph[path.stem], f"{path.name} imports lsp/server.py"
    features = {"code_actions", "code_lens", "commands_completion", "commands_explain", "commands_index", "custom",
                "diagnostics", "hover", "inline_completion", "lifecycle"}
    assert features <= set(graph)
    for feature in features:
        assert not (graph[feature] & (features - {feature})), f"{feature} imports another feature: {graph[feature] & features}"

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
