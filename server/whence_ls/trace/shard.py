"""Index one shard of the corpus: read, chunk, fingerprint and embed its files.

A shard is the unit of work of both engines: the local engine runs the shards one after the
other in-process and Ray runs them as tasks, so the two builds compute the very same pieces and
merge them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from whence_ls.trace.chunker import chunk_source
from whence_ls.trace.corpus import Corpus, CorpusFile, SkipCounts, read_corpus_file
from whence_ls.trace.fingerprints import STREAMS, file_fingerprints

_EMBEDDERS: dict = {}  # one model per process, reused across the shards a worker runs


@dataclass
class ShardInput:
    corpus: Corpus
    paths: list[str]
    embedding: str  # "static" | "minilm"
    max_tokens: int


@dataclass
class ShardResult:
    files: list[CorpusFile]
    # per chunk: file index (into `files`), kind, name, start line, end line
    chunks: list[tuple[int, str, str, int, int]]
    fingerprints: dict  # stream -> (hashes uint64[n], rows int32[n, 4]: file, pos, start, end)
    # "minilm": float32 [len(chunks), dim]; "static": sparse word-piece counts, turned into
    # vectors at the merge, where the corpus-wide IDF is known
    vectors: object
    skipped: SkipCounts = field(default_factory=SkipCounts)


def embedder_for(kind: str, max_tokens: int):
    from whence_ls.trace.embedder import make_embedder

    if (kind, max_tokens) not in _EMBEDDERS:
        _EMBEDDERS[kind, max_tokens] = make_embedder(kind, max_tokens)
    return _EMBEDDERS[kind, max_tokens]


def build_shard(shard: ShardInput) -> ShardResult:
    skipped = SkipCounts()
    files: list[CorpusFile] = []
    chunks: list[tuple[int, str, str, int, int]] = []
    chunk_texts: list[str] = []
    per_stream: dict[str, list] = {name: [] for name in STREAMS}
    for path in shard.paths:
        corpus_file = read_corpus_file(path, shard.corpus, skipped)
        if corpus_file is None:
            continue
        source = corpus_file.text.encode("utf-8")
        file_chunks = chunk_source(source, corpus_file.language)
        if not file_chunks:
            skipped.add("no-chunks", path)
            continue
        file_index = len(files)
        files.append(corpus_file)
        for chunk in file_chunks:
            chunks.append((file_index, chunk.kind, chunk.name, chunk.start_line, chunk.end_line))
            chunk_texts.append(source[chunk.start_byte:chunk.end_byte].decode("utf-8", "replace"))
        for name, (hashes, rows) in file_fingerprints(corpus_file.text, corpus_file.language).items():
            rows[:, 0] = file_index
            per_stream[name].append((hashes, rows))
    fingerprints = {}
    for name, parts in per_stream.items():
        if parts:
            fingerprints[name] = (np.concatenate([p[0] for p in parts]),
                                  np.concatenate([p[1] for p in parts]))
        else:
            fingerprints[name] = (np.empty(0, np.uint64), np.empty((0, 4), np.int32))
    embedder = embedder_for(shard.embedding, shard.max_tokens)
    vectors = embedder.bags(chunk_texts) if shard.embedding == "static" else embedder.embed(chunk_texts)
    return ShardResult(files=files, chunks=chunks, fingerprints=fingerprints, vectors=vectors,
                       skipped=skipped)
