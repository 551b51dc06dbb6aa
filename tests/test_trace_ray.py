"""The Ray engine (local Ray, two workers) builds the same index as one process."""

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from whence_ls.trace import build_index, open_index
from whence_ls.trace import store

ray = pytest.importorskip("ray")

CORPUS = Path(__file__).parent / "data" / "trace" / "repo_mit"


def table(directory: Path, sql: str):
    connection = sqlite3.connect(directory / store.METADATA)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def test_ray_build_equals_local_build(tmp_path):
    import shutil

    # a copy outside any git checkout: the commit recorded per file must not move between builds
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    local, distributed = tmp_path / "local", tmp_path / "ray"
    # three files per shard: several shards, so the two workers really split the work
    local_summary = build_index([str(corpus)], str(local), shard_files=3)
    ray_summary = build_index([str(corpus)], str(distributed), engine="ray", workers=2, shard_files=3)
    assert not ray.is_initialized()  # the build shut down the Ray it started
    assert ray_summary["engine"] == "ray"
    for key in ("files", "chunks", "chunk_kinds", "languages", "licenses", "skipped", "fingerprints"):
        assert ray_summary[key] == local_summary[key], key

    for sql in ("SELECT * FROM files ORDER BY id", "SELECT * FROM chunks ORDER BY id"):
        assert table(local, sql) == table(distributed, sql)
    for name in ("exact", "renamed"):
        for part in store.fingerprint_files(name):
            assert np.array_equal(np.load(local / part), np.load(distributed / part)), part
    assert np.array_equal(np.load(local / store.IDF), np.load(distributed / store.IDF))

    local_index, ray_index = open_index(local), open_index(distributed)
    local_vectors = local_index._vectors.reconstruct_n(0, local_index._vectors.ntotal)
    ray_vectors = ray_index._vectors.reconstruct_n(0, ray_index._vectors.ntotal)
    np.testing.assert_allclose(local_vectors, ray_vectors, atol=1e-6)

    query = (corpus / "pkg" / "retry.py").read_text()
    assert [h.to_json() for h in local_index.search(query)] == [h.to_json() for h in ray_index.search(query)]
