"""A decoding forward on onnxruntime: the graph `onnx_build.py` makes, behind `FastDecoder`'s
interface (`new_cache`, `forward`), over the same in-place `KVCache`.

The cache's storage is handed to onnxruntime as both the past and the present keys and values of
every layer (one buffer: GroupQueryAttention then writes the new positions in place and reads
the first `length` ones, which the attention mask's length tells it). So the prefix cache, the
drafts' crop of unused positions and `copy_of_prefix` work on it unchanged: `KVCache.crop` only
moves `length`, and the next forward writes over what was dropped.

What it does not give: the hidden states and the attention of a forward (GroupQueryAttention
keeps its softmax to itself), so generation reads no live rows from it; a record's rows then
come from the fp32 model's forward afterwards, as for any model without live rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy
import torch

from whence_ls.engine.fast_decode import KVCache


class OnnxDecoder:
    """One onnxruntime session over a built graph; `threads`: its intra-op threads."""

    def __init__(self, folder: str | Path, *, threads: int = 1, precision: str = "onnx") -> None:
        import onnxruntime

        folder = Path(folder)
        config = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))["model"]
        decoder = config["decoder"]
        self.layers = int(decoder["num_hidden_layers"])
        self.kv_heads = int(decoder["num_key_value_heads"])
        self.head_dim = int(decoder["head_size"])
        self.vocab = int(config["vocab_size"])
        self.precision = precision
        self.threads = threads
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        # idle intra-op threads sleep instead of spinning: a spinning thread takes a core from
        # the editor and whatever else runs (the torch decoder's GOMP_SPINCOUNT, for the same reason)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0" if threads > 1 else "1")
        self.session = onnxruntime.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        self._logits = torch.empty(0)

    def new_cache(self, capacity: int = 512) -> KVCache:
        return KVCache(self.layers, self.kv_heads, self.head_dim, dtype=torch.float32, device=torch.device("cpu"),
                       capacity=capacity)

    def forward(self, ids: list[int], cache: KVCache, *, logits_to_keep: int = 1, hidden_states: bool = False,
                live=None) -> tuple[torch.Tensor, None]:
        """`FastDecoder.forward`'s contract, less the hidden states and the live attention."""
        if hidden_states or live is not None:
            raise ValueError("the ONNX decoder gives neither hidden states nor attention")
        fed, start = len(ids), cache.length
        keep = max(1, min(logits_to_keep, fed))
        cache.reserve(start + fed)
        binding = self._binding(cache)
        binding.bind_cpu_input("input_ids", numpy.asarray([ids], dtype=numpy.int64))
        binding.bind_cpu_input("attention_mask", numpy.ones((1, start + fed), dtype=numpy.int64))
        binding.bind_cpu_input("logits_to_keep", numpy.asarray([keep], dtype=numpy.int64))
        if self._logits.numel() < keep * self.vocab:
            self._logits = torch.empty(keep * self.vocab, dtype=torch.float32)
        binding.bind_output("logits", "cpu", 0, numpy.float32, [1, keep, self.vocab], self._logits.data_ptr())
        self.session.run_with_iobinding(binding)
        cache.length = start + fed
        # a copy: the next forward writes the same buffer, and callers keep rows of logits
        return self._logits[: keep * self.vocab].view(keep, self.vocab).clone(), None

    def _binding(self, cache: KVCache):
        """The session's binding of `cache`'s storage, made again when the cache has grown."""
        bound = getattr(cache, "_onnx_binding", None)
        pointer = (cache.keys.data_ptr(), cache.values.data_ptr(), cache.keys.shape[2])
        if bound is not None and bound[0] == pointer and bound[1] is self.session:
            return bound[2]
        binding = self.session.io_binding()
        shape = [1, self.kv_heads, cache.keys.shape[2], self.head_dim]
        for i in range(self.layers):
            for kind, storage in (("key", cache.keys[i]), ("value", cache.values[i])):
                binding.bind_input(f"past_key_values.{i}.{kind}", "cpu", 0, numpy.float32, shape, storage.data_ptr())
                binding.bind_output(f"present.{i}.{kind}", "cpu", 0, numpy.float32, shape, storage.data_ptr())
        cache._onnx_binding = (pointer, self.session, binding)
        return binding
