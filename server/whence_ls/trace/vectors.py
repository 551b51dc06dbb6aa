"""The FAISS index of chunk embeddings.

Exact inner-product search up to FLAT_LIMIT vectors (the standard library is ~20k: an exact
scan takes about a millisecond there), HNSW above it. Measured on the real vectors of the
stdlib index with real benchmark queries (docs/bench-trace.md): HNSW (M=32, efSearch=128)
recall@10 0.98 at 1.5 ms, IVF256-PQ48 0.66; an exact scan of 1M vectors would take ~50 ms.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

FLAT_LIMIT = 200_000
HNSW_NEIGHBOURS = 32
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = 128


def make_vector_index(vectors: np.ndarray, kind: str | None = None):
    import faiss

    dim = vectors.shape[1]
    kind = kind or ("flat" if vectors.shape[0] <= FLAT_LIMIT else "hnsw")
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    if vectors.shape[0]:
        previous = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(os.cpu_count() or 1)  # building does use the cores
        try:
            index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        finally:
            faiss.omp_set_num_threads(previous)
    return index, kind


def build_vector_index(vectors: np.ndarray, path: Path) -> str:
    import faiss

    index, kind = make_vector_index(vectors)
    faiss.write_index(index, str(path))
    return kind


def read_vector_index(path: Path):
    import faiss

    # one query at a time gains nothing from OpenMP, and on a busy machine its spinning
    # threads cost tens of milliseconds per search
    faiss.omp_set_num_threads(1)
    index = faiss.read_index(str(path), faiss.IO_FLAG_READ_ONLY)
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = HNSW_EF_SEARCH
    return index
