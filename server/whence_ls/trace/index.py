"""`TraceIndex`: open an index directory and trace a piece of code to its sources."""

from __future__ import annotations

import collections
import sqlite3
import threading
from pathlib import Path

import numpy as np

from whence_ls.errors import WhenceError
from whence_ls.trace import store
from whence_ls.trace.embedder import make_embedder
from whence_ls.trace.fingerprints import STREAMS
from whence_ls.trace.hit import TraceHit
from whence_ls.trace.matching import QueryPrints, StreamIndex, match_stream
from whence_ls.trace.fusion import CandidateSet
from whence_ls.trace.scoring import SHOW_THRESHOLD
from whence_ls.trace.tokens import normalise
from whence_ls.trace.winnow import WinnowParams, winnow

# Nearest chunks asked of the vector index per query (more than k: some fall on one file).
VECTOR_CANDIDATES = 20
# Queries shorter than this (normalised characters) are too short to attribute.
MIN_QUERY_CHARS = 20
# Candidates checked against their source text, for queries up to this normalised length.
VERIFY_CANDIDATES = 12
VERIFY_MAX_CHARS = 4000
TEXT_CACHE_FILES = 256  # decompressed source files kept for verification


def index_present(path) -> bool:
    """Whether an index is at `path`, after restoring one that a build killed mid-swap left
    only as its backup (as `open_index` would)."""
    path = Path(path).expanduser()
    try:
        store.restore_interrupted_swap(path)
    except OSError:  # not ours to rename (permissions): open_index says why
        pass
    return path.exists()


def open_index(path) -> "TraceIndex":
    """Open the index at `path`; WhenceError when it is missing, foreign, old or corrupt."""
    return TraceIndex(Path(path).expanduser())


class TraceIndex:
    def __init__(self, path: Path):
        self.path = path.resolve() if path.exists() else path
        self.manifest = store.read_manifest(path)
        try:
            self._connection = sqlite3.connect(f"file:{path / store.METADATA}?mode=ro", uri=True,
                                               check_same_thread=False)
            chunk_rows = np.array(self._connection.execute(
                "SELECT file_id, start_line, end_line FROM chunks ORDER BY id").fetchall(),
                dtype=np.int64).reshape(-1, 3)
            self._file_rows = {
                row[0]: row[1:] for row in self._connection.execute(
                    "SELECT id, path, repository, git_commit, license, language FROM files")}
        except sqlite3.Error as exc:
            raise WhenceError(f"corrupt trace index at {path}: metadata unreadable ({exc})") from None
        self._chunk_file = chunk_rows[:, 0]
        self._chunk_start = chunk_rows[:, 1]
        self._chunk_end = chunk_rows[:, 2]
        self._lock = threading.Lock()
        self._text_cache: collections.OrderedDict[int, list[str]] = collections.OrderedDict()
        try:  # queries are fingerprinted exactly as this index's corpus was
            self._params = {name: WinnowParams(**self.manifest["winnowing"][name]) for name in STREAMS}
        except (KeyError, TypeError):
            raise WhenceError(f"corrupt trace index at {path}: no winnowing parameters in its manifest") from None
        self._streams = {name: self._load_stream(path, name) for name in STREAMS}
        try:
            from whence_ls.trace.vectors import read_vector_index

            self._vectors = read_vector_index(path / store.VECTORS)
        except (RuntimeError, OSError) as exc:
            raise WhenceError(f"corrupt trace index at {path}: {store.VECTORS} unreadable "
                              f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        if self._vectors.ntotal != chunk_rows.shape[0] or len(self._file_rows) != self.manifest.get("files"):
            raise WhenceError(f"corrupt trace index at {path}: its parts disagree "
                              f"({self._vectors.ntotal} vectors, {chunk_rows.shape[0]} chunks)")
        self._embedder = self._load_embedder(path)
        languages = self.manifest.get("languages") or {"python": 1}
        self._default_language = max(languages, key=languages.get)

    def _load_embedder(self, path: Path):
        kind = self.manifest.get("embedding", "static")
        idf = None
        if kind == "static":
            try:
                idf = np.load(path / store.IDF, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise WhenceError(f"corrupt trace index at {path}: {store.IDF} unreadable ({exc})") from None
        return make_embedder(kind, int(self.manifest.get("embedding_max_tokens", 64)), idf)

    def _load_stream(self, path: Path, name: str) -> StreamIndex:
        hashes_name, rows_name, common_name = store.fingerprint_files(name)
        try:
            hashes = np.load(path / hashes_name, mmap_mode="r", allow_pickle=False)
            rows = np.load(path / rows_name, mmap_mode="r", allow_pickle=False)
            common = np.load(path / common_name, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise WhenceError(f"corrupt trace index at {path}: {name} fingerprints unreadable ({exc})") from None
        if hashes.dtype != np.uint64 or rows.ndim != 2 or rows.shape != (hashes.shape[0], 4):
            raise WhenceError(f"corrupt trace index at {path}: {name} fingerprints malformed")
        return StreamIndex(hashes=hashes, rows=rows, common=common, k=self._params[name].k)

    # -- search ---------------------------------------------------------------------------

    def search(self, code: str, language: str | None = None, k: int = 5,
               first_line: int = 1) -> list[TraceHit]:
        """The traced sources of `code`, best first, only those above the shown threshold.
        `first_line` is the line number of code's first line in its document."""
        return [hit for hit in self.candidates(code, language, first_line)
                if hit.score >= SHOW_THRESHOLD][:k]

    def candidates(self, code: str, language: str | None = None, first_line: int = 1,
                   with_evidence: bool = False) -> list:
        """Every candidate, scored and ranked, shown or not (for calibration and benchmarks).
        With `with_evidence`, (hit, Evidence) pairs."""
        language = language or self._default_language
        normalised = normalise(code, language, first_line)
        if len(normalised.exact.text) < MIN_QUERY_CHARS:
            return []
        query_lines = (first_line, first_line + code.rstrip("\n").count("\n"))
        regions = {}
        for name in STREAMS:
            stream = getattr(normalised, name)
            prints = winnow(stream.text, self._params[name])
            if name == "exact" and prints.hashes.size and \
                    np.isin(prints.hashes, self._streams[name].common).all():
                # the query is nothing but common patterns (boilerplate): it attributes nothing,
                # not even by meaning, since it means the same thing in many files
                return []
            k = self._params[name].k
            query = QueryPrints(prints.hashes, prints.positions, stream.lines[prints.positions],
                                stream.lines[np.minimum(prints.positions + k - 1, len(stream.text) - 1)],
                                len(stream.text))
            regions[name] = match_stream(query, self._streams[name])

        candidates = CandidateSet(self._hit)
        for region in regions["exact"]:
            candidates.add_exact(region)
        for region in regions["renamed"]:
            candidates.add_renamed(region)
        wanted = normalised.exact.text
        if len(wanted) <= VERIFY_MAX_CHARS:
            last_line = first_line + code.rstrip("\n").count("\n")
            candidates.verify(len(wanted), query_lines,
                              lambda hit: self._locate(hit, wanted, language, last_line - first_line + 1),
                              VERIFY_CANDIDATES)
        query_vector = self._embedder.embed([code])
        scores, ids = self._vectors.search(query_vector, VECTOR_CANDIDATES)
        for cosine, vector_id in zip(scores[0], ids[0]):
            if vector_id < 0:
                continue
            # vector row i is chunk i; a benchmark's synthetic scale-up repeats the chunks
            chunk = int(vector_id) % self._chunk_file.size
            candidates.add_neighbour(int(self._chunk_file[chunk]), int(self._chunk_start[chunk]),
                                     int(self._chunk_end[chunk]), query_lines, float(cosine))
        ranked = candidates.ranked(lambda hit: self._cosine_near(query_vector[0], hit))
        return ranked if with_evidence else [hit for hit, _ in ranked]

    def _cosine_near(self, query_vector: np.ndarray, hit: TraceHit) -> float:
        """Cosine between the query and the innermost chunk holding the hit's source span."""
        # chunks are stored file by file, so a file's chunks are one contiguous range
        lo = int(np.searchsorted(self._chunk_file, hit.file_id, side="left"))
        hi = int(np.searchsorted(self._chunk_file, hit.file_id, side="right"))
        starts, ends = self._chunk_start[lo:hi], self._chunk_end[lo:hi]
        rows = np.flatnonzero((starts <= hit.source_start_line) & (ends >= hit.source_end_line))
        if rows.size == 0:
            rows = np.flatnonzero((starts <= hit.source_end_line) & (ends >= hit.source_start_line))
            if rows.size == 0:
                return 0.0
        innermost = lo + int(rows[np.argmin(ends[rows] - starts[rows])])
        return float(self._vectors.reconstruct(innermost) @ query_vector)

    def _locate(self, hit: TraceHit, wanted: str, language: str, query_line_count: int):
        """The source lines holding the whole normalised query near the hit, or None."""
        lines = self._file_lines(hit.file_id)
        pad = query_line_count + 2
        first = max(hit.source_start_line - 1 - pad, 0)
        window = "".join(lines[first:hit.source_end_line + pad])
        stream = normalise(window, language, first + 1).exact
        found = stream.text.find(wanted)
        if found < 0:
            return None
        return int(stream.lines[found]), int(stream.lines[found + len(wanted) - 1])

    def _file_lines(self, file_id: int) -> list[str]:
        with self._lock:
            cached = self._text_cache.get(file_id)
            if cached is not None:
                self._text_cache.move_to_end(file_id)
                return cached
            row = self._connection.execute("SELECT text FROM files WHERE id = ?", (file_id,)).fetchone()
        lines = store.file_text(row[0]).splitlines(keepends=True) if row else []
        with self._lock:
            self._text_cache[file_id] = lines
            while len(self._text_cache) > TEXT_CACHE_FILES:
                self._text_cache.popitem(last=False)
        return lines

    def _hit(self, file_id: int, start: int, end: int, q_start: int, q_end: int) -> TraceHit:
        path, repository, commit, license_id, language = self._file_rows[file_id]
        return TraceHit(path=path, repository=repository, commit=commit, source_start_line=start,
                        source_end_line=end, query_start_line=q_start, query_end_line=q_end,
                        license=license_id, kind="similar", matched_fraction=0.0, score=0.0,
                        language=language, file_id=file_id)

    # -- sources and stats ----------------------------------------------------------------

    def read_source(self, hit: TraceHit) -> str:
        """The full text of the matched source file, as it was indexed."""
        with self._lock:
            try:
                row = self._connection.execute(
                    "SELECT text FROM files WHERE path = ?", (hit.path,)).fetchone()
            except sqlite3.Error as exc:
                raise WhenceError(f"trace index unreadable: {exc}") from None
        if row is None:
            raise WhenceError(f"{hit.path} is not in the trace index at {self.path}")
        try:
            return store.file_text(row[0])
        except Exception:
            raise WhenceError(f"corrupt trace index at {self.path}: text of {hit.path} unreadable") from None

    def stats(self) -> dict:
        keys = ("files", "chunks", "chunk_kinds", "languages", "licenses", "skipped",
                "fingerprints", "winnowing", "common_min_files", "embedding_model",
                "embedding_max_tokens", "vector_index", "engine", "repositories", "seconds",
                "chunks_per_second", "version", "format")
        body = {key: self.manifest.get(key) for key in keys if key in self.manifest}
        body["path"] = str(self.path)
        body["size_bytes"] = sum(p.stat().st_size for p in Path(self.path).iterdir() if p.is_file())
        return body
