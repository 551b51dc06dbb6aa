"""trace never imports the engine or the LSP layer, and the CLI stays light to start."""

import ast
import subprocess
import sys
from pathlib import Path

TRACE = Path(__file__).parents[1] / "server" / "whence_ls" / "trace"


def test_trace_sources_do_not_import_engine_or_lsp():
    for path in TRACE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(("whence_ls.engine", "whence_ls.lsp")), f"{path.name}: {name}"


def test_using_trace_loads_neither_engine_nor_lsp():
    code = ("import sys, whence_ls.trace, whence_ls.bench.trace_index;"
            "bad=[m for m in sys.modules if m.startswith(('whence_ls.engine','whence_ls.lsp'))];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_index_command_module_imports_nothing_heavy():
    code = ("import sys, whence_ls.commands.index, whence_ls.commands.bench_trace;"
            "heavy=[m for m in ('torch','faiss','numpy','sentence_transformers','ray') if m in sys.modules];"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
