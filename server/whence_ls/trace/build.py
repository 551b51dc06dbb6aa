"""`build_index`: corpora -> a trace index directory, on one process or on Ray."""

from __future__ import annotations

import collections
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from whence_ls.errors import WhenceError
from whence_ls.grammars import supported_languages
from whence_ls.trace import store
from whence_ls.trace.corpus import SkipCounts, list_source_files, resolve_corpora
from whence_ls.trace.embedder import (DEFAULT_EMBEDDING, DEFAULT_MAX_TOKENS, EMBEDDINGS, MODEL_NAME,
                                      StaticEmbedder)
from whence_ls.trace.fingerprints import STREAM_PARAMS, STREAMS
from whence_ls.trace.shard import ShardInput, ShardResult, build_shard
from whence_ls.trace.vectors import build_vector_index

# Files per shard: fixed (not derived from the engine or worker count) so that every engine
# computes the same shards and therefore the same index.
SHARD_FILES = 64
# A fingerprint found in more files than this is a common pattern (boilerplate) and is dropped:
# the larger of an absolute floor and a share of the corpus.
COMMON_MIN_FILES = 10
COMMON_FILE_SHARE = 0.005

Progress = Callable[[str, int, int], None]


def build_index(corpora: list[str], out: str, languages=None, engine: str = "local",
                progress: Progress | None = None, workers: int | None = None,
                embedding: str = DEFAULT_EMBEDDING, max_tokens: int = DEFAULT_MAX_TOKENS,
                shard_files: int = SHARD_FILES) -> dict:
    """Index `corpora` (directories, git checkouts or files; empty = the running interpreter's
    standard library) into the directory `out`, replacing any index there only once the new
    one is complete. `shard_files` is the unit of work (a Ray task). Returns the summary."""
    started = time.perf_counter()
    if engine not in ("local", "ray"):
        raise WhenceError(f"unknown build engine {engine!r} (use local or ray)")
    if shard_files < 1:
        raise WhenceError("shard_files must be at least 1")
    if embedding not in EMBEDDINGS:
        raise WhenceError(f"unknown embedding {embedding!r} (use {' or '.join(EMBEDDINGS)})")
    wanted = _check_languages(languages)
    out_path = Path(out).expanduser().resolve()
    store.check_output_path(out_path)
    resolved = resolve_corpora(list(corpora))
    skipped = SkipCounts()
    shards: list[ShardInput] = []
    for corpus in resolved:
        paths = list_source_files(corpus, wanted, skipped)
        shards += [ShardInput(corpus, paths[i:i + shard_files], embedding, max_tokens)
                   for i in range(0, len(paths), shard_files)]
    total_files = sum(len(s.paths) for s in shards)
    if total_files == 0:
        names = ", ".join(c.root for c in resolved)
        langs = f" in {', '.join(sorted(wanted))}" if wanted else ""
        raise WhenceError(f"empty corpus: no source files{langs} under {names}")

    report = progress or (lambda stage, done, total: None)
    report("index", 0, total_files)
    if engine == "ray":
        from whence_ls.trace.ray_engine import run_shards_on_ray

        results = run_shards_on_ray(shards, report, workers)
    else:
        results = []
        done = 0
        for shard in shards:
            results.append(build_shard(shard))
            done += len(shard.paths)
            report("index", done, total_files)

    for result in results:
        skipped.reasons.update(result.skipped.reasons)
        for reason, example in result.skipped.examples.items():
            skipped.examples.setdefault(reason, example)
    files_count = sum(len(r.files) for r in results)
    if files_count == 0:
        detail = ", ".join(f"{n} {r}" for r, n in sorted(skipped.reasons.items()))
        raise WhenceError(f"empty corpus: every source file was skipped ({detail})")

    out_path.parent.mkdir(parents=True, exist_ok=True)
    store.remove_stale_builds(out_path)
    tmp = store.temporary_path(out_path)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        report("write", 0, 1)
        summary = _write_merged(tmp, results, skipped, engine, embedding, max_tokens)
        summary["seconds"] = round(time.perf_counter() - started, 2)
        summary["chunks_per_second"] = round(summary["chunks"] / max(summary["seconds"], 1e-9), 1)
        store.write_manifest(tmp, summary)
        store.install(tmp, out_path)
        report("write", 1, 1)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary["path"] = str(out_path)
    summary["size_bytes"] = sum(p.stat().st_size for p in out_path.iterdir() if p.is_file())
    return summary


def _check_languages(languages) -> set[str] | None:
    if not languages:
        return None
    wanted = set(languages)
    unknown = wanted - set(supported_languages())
    if unknown:
        raise WhenceError(f"unknown language(s) {', '.join(sorted(unknown))}; "
                          f"supported: {', '.join(supported_languages())}")
    return wanted


def _write_merged(directory: Path, results: list[ShardResult], skipped: SkipCounts,
                  engine: str, embedding: str, max_tokens: int) -> dict:
    files, chunks, vectors = [], [], []
    streams: dict[str, list] = {name: [] for name in STREAMS}
    for result in results:
        offset = len(files)
        files += result.files
        chunks += [(file_index + offset, *rest) for file_index, *rest in result.chunks]
        vectors.append(result.vectors)
        for name in STREAMS:
            hashes, rows = result.fingerprints[name]
            rows = rows.copy()
            rows[:, 0] += offset
            streams[name].append((hashes, rows))
    store.write_metadata(directory, files, chunks)
    common_limit = max(COMMON_MIN_FILES, int(COMMON_FILE_SHARE * len(files)))
    fingerprint_counts = {}
    for name in STREAMS:
        hashes = np.concatenate([h for h, _ in streams[name]])
        rows = np.concatenate([r for _, r in streams[name]])
        kept_hashes, kept_rows, common = _drop_common(hashes, rows, common_limit)
        store.write_fingerprints(directory, name, kept_hashes, kept_rows, common)
        fingerprint_counts[name] = {"kept": int(kept_hashes.size), "common_hashes": int(common.size)}
    if embedding == "static":
        from scipy import sparse

        bags = sparse.vstack(vectors, format="csr")
        embedder = StaticEmbedder(None)
        embedder.idf = StaticEmbedder.corpus_idf(bags)
        np.save(directory / store.IDF, embedder.idf)
        all_vectors = embedder.vectors(bags)
    else:
        all_vectors = np.concatenate(vectors).astype(np.float32)
    vector_index_kind = build_vector_index(all_vectors, directory / store.VECTORS)

    languages = collections.Counter(f.language for f in files)
    licenses = collections.Counter(f.license for f in files)
    kinds = collections.Counter(c[1] for c in chunks)
    return {
        "files": len(files),
        "chunks": len(chunks),
        "chunk_kinds": dict(sorted(kinds.items())),
        "languages": dict(sorted(languages.items())),
        "licenses": dict(sorted(licenses.items())),
        "skipped": dict(sorted(skipped.reasons.items())),
        "skipped_examples": dict(sorted(skipped.examples.items())),
        "fingerprints": fingerprint_counts,
        "winnowing": {n: {"k": p.k, "w": p.w} for n, p in STREAM_PARAMS.items()},
        "common_min_files": common_limit,
        "embedding_model": MODEL_NAME,
        "embedding": embedding,
        "embedding_max_tokens": max_tokens,
        "vector_index": vector_index_kind,
        "engine": engine,
        "repositories": sorted({f.repository for f in files if f.repository}),
    }


def _drop_common(hashes: np.ndarray, rows: np.ndarray, limit: int):
    """Keep fingerprints found in at most `limit` files, sorted by hash (then file, position)
    so that lookups are a binary search and the order does not depend on the shards."""
    order = np.lexsort((rows[:, 1], rows[:, 0], hashes))
    hashes, rows = hashes[order], rows[order]
    if hashes.size == 0:
        return hashes, rows, np.empty(0, np.uint64)
    # distinct (hash, file) pairs, then how many files each hash is in
    new_pair = np.ones(hashes.size, dtype=bool)
    new_pair[1:] = (hashes[1:] != hashes[:-1]) | (rows[1:, 0] != rows[:-1, 0])
    pair_hashes = hashes[new_pair]
    unique_hashes, file_counts = np.unique(pair_hashes, return_counts=True)
    common = unique_hashes[file_counts > limit]
    keep = ~np.isin(hashes, common)
    return hashes[keep], rows[keep], common
