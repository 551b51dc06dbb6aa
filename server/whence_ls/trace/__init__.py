"""The corpus index: where a piece of code comes from (verbatim, renamed copy, or by meaning),
with line spans on both sides and licenses.

    idx = open_index(path)
    hits = idx.search(code, language=None, k=5)
    build_index(corpora, out, languages=None, engine="local", progress=callback)

Never imports whence_ls.engine or whence_ls.lsp (docs/architecture.md: they join results, not us).
"""

from whence_ls.trace.build import build_index
from whence_ls.trace.hit import TraceHit
from whence_ls.trace.index import TraceIndex, index_present, open_index

__all__ = ["TraceHit", "TraceIndex", "build_index", "index_present", "open_index"]
