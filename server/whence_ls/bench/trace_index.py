"""`whence-ls bench trace`: recall per kind of copy, false positives on code from outside the
corpus, and query latency, on an index built from a real corpus."""

from __future__ import annotations

import math
import random
import sqlite3
import time
from dataclasses import dataclass, field

import numpy as np

from whence_ls.trace import store
from whence_ls.bench.trace_queries import MAKERS, normalised_length
from whence_ls.trace.chunker import chunk_source
from whence_ls.trace.corpus import Corpus, SkipCounts, list_source_files, read_corpus_file
from whence_ls.trace.index import TraceIndex
from whence_ls.trace.tokens import normalise
from whence_ls.trace.winnow import winnow

# spans shorter than this (normalised) are outside the verbatim-recall goal
SPAN_GOAL_CHARS = 40


@dataclass
class Query:
    kind: str
    text: str
    language: str
    path: str | None  # the true source (None for negatives)
    start_line: int = 0
    end_line: int = 0
    normalised_chars: int = 0
    boilerplate: bool = False  # all its fingerprints are common patterns (excluded from recall)


@dataclass
class KindResult:
    queries: int = 0
    at1: int = 0
    at5: int = 0
    shown: int = 0  # queries with at least one hit shown
    latencies_ms: list = field(default_factory=list)

    def row(self) -> dict:
        n = max(self.queries, 1)
        return {"queries": self.queries, "recall@1": self.at1 / n, "recall@5": self.at5 / n,
                "shown": self.shown / n}


def sample_chunks(index: TraceIndex, count: int, rng: random.Random, min_lines: int = 3,
                  max_lines: int = 80) -> list[tuple[str, str, int, int, str]]:
    """(path, language, start line, end line, text) of random function/class chunks."""
    connection = sqlite3.connect(f"file:{index.path / store.METADATA}?mode=ro", uri=True)
    rows = connection.execute(
        "SELECT c.file_id, c.start_line, c.end_line FROM chunks c WHERE c.kind != 'window' "
        "AND c.end_line - c.start_line + 1 BETWEEN ? AND ?", (min_lines, max_lines)).fetchall()
    rng.shuffle(rows)
    texts: dict[int, tuple] = {}
    picked = []
    for file_id, start, end in rows:
        if len(picked) >= count:
            break
        if file_id not in texts:
            path, language, blob = connection.execute(
                "SELECT path, language, text FROM files WHERE id = ?", (file_id,)).fetchone()
            texts[file_id] = (path, language, store.file_text(blob).splitlines(keepends=True))
        path, language, lines = texts[file_id]
        text = "".join(lines[start - 1:end])
        if normalised_length(text, language) >= 80:
            picked.append((path, language, start, end, text))
    connection.close()
    return picked


def negative_queries(roots: list[str], count: int, rng: random.Random) -> list[Query]:
    """Function/class chunks from code outside the corpus."""
    skipped = SkipCounts()
    paths = []
    for root in roots:
        paths += list_source_files(Corpus(root=root), None, skipped)
    rng.shuffle(paths)
    queries = []
    for path in paths:
        if len(queries) >= count:
            break
        corpus_file = read_corpus_file(path, Corpus(root=path), skipped)
        if corpus_file is None:
            continue
        source = corpus_file.text.encode("utf-8")
        chunks = [c for c in chunk_source(source, corpus_file.language)
                  if c.kind != "window" and 3 <= c.end_line - c.start_line + 1 <= 80]
        if not chunks:
            continue
        chunk = rng.choice(chunks)
        text = source[chunk.start_byte:chunk.end_byte].decode("utf-8", "replace")
        if normalised_length(text, corpus_file.language) >= 80:
            queries.append(Query("negative", text, corpus_file.language, None))
    return queries


def make_queries(index: TraceIndex, per_kind: int, rng: random.Random) -> list[Query]:
    queries = []
    chunks = sample_chunks(index, per_kind * 2, rng)
    for kind, maker in MAKERS.items():
        made = 0
        for path, language, start, end, text in chunks:
            if made >= per_kind:
                break
            if kind == "renamed":
                query = maker(text, rng, language)
            else:
                query = maker(text, rng)
            if not query:
                continue
            made_query = Query(kind, query, language, path, start, end,
                               _normalised_length_in_context(query, text, language))
            made_query.boilerplate = kind != "negative" and is_boilerplate(index, made_query)
            queries.append(made_query)
            made += 1
    return queries


def _normalised_length_in_context(query: str, chunk: str, language: str) -> int:
    """Normalised characters of `query` as the index saw them: a span cut from inside a comment
    or docstring is measured with what precedes it, so comment text does not count as code."""
    start = chunk.find(query)
    if start < 0:
        return normalised_length(query, language)
    return (normalised_length(chunk[:start + len(query)], language)
            - normalised_length(chunk[:start], language))


def is_true_source(hit, query: Query, index: TraceIndex | None = None) -> bool:
    """The hit points at the chunk the query was made from or, for copies, at another place
    in the corpus holding the very same normalised text (then it is as true a source)."""
    if (hit.path == query.path and hit.source_start_line <= query.end_line
            and query.start_line <= hit.source_end_line):
        return True
    if index is None or query.kind not in ("exact", "span", "reformatted", "renamed"):
        return False
    stream = "renamed" if query.kind == "renamed" else "exact"
    lines = index.read_source(hit).splitlines(keepends=True)
    region = "".join(lines[max(hit.source_start_line - 3, 0):hit.source_end_line + 2])
    wanted = getattr(normalise(query.text, query.language), stream).text
    return wanted in getattr(normalise(region, query.language), stream).text


def is_boilerplate(index: TraceIndex, query: Query) -> bool:
    """Every fingerprint of the query is a common pattern: by design it attributes nothing."""
    name = "renamed" if query.kind == "renamed" else "exact"
    stream = getattr(normalise(query.text, query.language), name)
    prints = winnow(stream.text, index._params[name])
    return bool(prints.hashes.size) and bool(np.isin(prints.hashes, index._streams[name].common).all())


def evaluate(index: TraceIndex, queries: list[Query], k: int = 5) -> dict[str, KindResult]:
    results: dict[str, KindResult] = {}
    for query in queries:
        started = time.perf_counter()
        hits = index.search(query.text, language=query.language, k=k)
        elapsed = (time.perf_counter() - started) * 1000
        for kind in _result_kinds(query):
            result = results.setdefault(kind, KindResult())
            result.queries += 1
            result.latencies_ms.append(elapsed)
            result.shown += bool(hits)
            if query.path is not None:
                found = [is_true_source(hit, query, index) for hit in hits]
                result.at1 += bool(found[:1] and found[0])
                result.at5 += any(found[:5])
    return results


def _result_kinds(query: Query) -> list[str]:
    if query.boilerplate:
        return ["boilerplate"]
    if query.kind == "span":
        return ["span", "span>=40"] if query.normalised_chars >= SPAN_GOAL_CHARS else ["span"]
    return [query.kind]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(math.ceil(share * len(ordered))) - 1)] if ordered else 0.0


def fit_calibration(index: TraceIndex, queries: list[Query]):
    """Logistic regressions of "this candidate is the true source": one on the fingerprint
    features of candidates that share fingerprints with the query, one on the cosine of those
    found by embedding alone. Returns both coefficient tuples and the sample counts."""
    from sklearn.linear_model import LogisticRegression

    with_prints, with_prints_labels, cosine_only, cosine_only_labels = [], [], [], []
    for query in queries:
        for hit, evidence in index.candidates(query.text, query.language, with_evidence=True)[:10]:
            label = 1 if query.path is not None and is_true_source(hit, query, index) else 0
            if evidence.has_fingerprints():
                with_prints.append(evidence.features()[1:])
                with_prints_labels.append(label)
            else:
                cosine_only.append([evidence.cosine])
                cosine_only_labels.append(label)
    fingerprint_model = LogisticRegression(C=10.0, max_iter=2000)
    fingerprint_model.fit(np.array(with_prints), np.array(with_prints_labels))
    negatives_top = [max((e.cosine for _, e in index.candidates(q.text, q.language, with_evidence=True)
                          if not e.has_fingerprints()), default=0.0)
                     for q in queries if q.path is None]
    similar_model = LogisticRegression(C=10.0, max_iter=2000)
    similar_model.fit(np.array(cosine_only), np.array(cosine_only_labels))
    return ((float(fingerprint_model.intercept_[0]), *map(float, fingerprint_model.coef_[0])),
            (float(similar_model.intercept_[0]), float(similar_model.coef_[0][0])),
            {"fingerprint_candidates": len(with_prints_labels), "fingerprint_true": int(sum(with_prints_labels)),
             "embedding_only_candidates": len(cosine_only_labels), "embedding_only_true": int(sum(cosine_only_labels)),
             "negatives_top_embedding_only_cosine": {
                 "p99": round(float(np.percentile(negatives_top, 99)), 3) if negatives_top else None,
                 "max": round(float(max(negatives_top, default=0.0)), 3)}})


def scale_up(index: TraceIndex, chunks: int, rng: random.Random) -> dict:
    """Grow the loaded index to `chunks` chunks for latency: the vectors are the real ones
    repeated with noise (so the HNSW graph sees real neighbourhoods), the fingerprint tables
    grow in proportion with random hashes. Returns build facts."""
    from whence_ls.trace.matching import StreamIndex
    from whence_ls.trace.vectors import make_vector_index

    real = index._vectors.reconstruct_n(0, index._vectors.ntotal)
    repeats = math.ceil(chunks / real.shape[0])
    noise_rng = np.random.default_rng(rng.randrange(2**32))
    tiled = np.concatenate([real] + [
        real + noise_rng.normal(0, 0.02, real.shape).astype(np.float32) for _ in range(repeats - 1)])[:chunks]
    tiled /= np.linalg.norm(tiled, axis=1, keepdims=True)
    started = time.perf_counter()
    vectors, kind = make_vector_index(tiled)
    build_seconds = time.perf_counter() - started
    import faiss

    faiss.omp_set_num_threads(1)
    index._vectors = vectors
    factor = chunks / real.shape[0]
    for name, stream in list(index._streams.items()):
        extra = int(stream.hashes.size * (factor - 1))
        hashes = np.concatenate([np.asarray(stream.hashes),
                                 noise_rng.integers(0, 2**63, extra, dtype=np.uint64)])
        rows = np.concatenate([np.asarray(stream.rows),
                               np.tile(np.asarray(stream.rows[:1]), (extra, 1))])
        order = np.argsort(hashes, kind="stable")
        index._streams[name] = StreamIndex(hashes[order], rows[order], stream.common, stream.k)
    return {"chunks": chunks, "vector_index": kind, "vector_build_seconds": round(build_seconds, 1),
            "fingerprints": {n: int(s.hashes.size) for n, s in index._streams.items()}}
