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
from whence_ls.engine.threads import all_cores_free

# the engine's precisions as `load_model` and `whence.precision` name them -> the graph's build
# (`onnx_build.ensure_onnx`: weights' precision, MatMulNBits accuracy level)
PRECISIONS = {"onnx-int8": ("int8", 4), "onnx-fp32": ("fp32", None)}


def for_model(model_dir: str | Path, precision: str, log=None) -> "OnnxDecoder":
    """The decoder of `model_dir` (a local safetensors folder) in `precision`, building its graph
    into `models/` on first use (`onnx_build.py`)."""
    from whence_ls.engine.onnx_build import ensure_onnx

    weights, accuracy = PRECISIONS[precision]
    folder = ensure_onnx(model_dir, weights, accuracy=accuracy, **({"log": log} if log else {}))
    return OnnxDecoder(folder, precision=precision)


class OnnxDecoder:
    """onnxruntime sessions over a built graph. `threads`: their intra-op threads; None follows
    torch's thread count at each forward (`threads.py` sets it to the cores other processes leave
    free). `spin`: whether idle intra-op threads spin between operations; None spins only while
    `threads.all_cores_free()`. One session per (count, spin) met, made when first needed: a
    session's threads are fixed when it is made."""

    # generation reads no live attention rows from this decoder (see the module's docstring)
    gives_attention = False

    def __init__(self, folder: str | Path, *, threads: int | None = None, precision: str = "onnx",
                 spin: bool | None = None) -> None:
        folder = Path(folder)
        config = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))["model"]
        decoder = config["decoder"]
        self.layers = int(decoder["num_hidden_layers"])
        self.kv_heads = int(decoder["num_key_value_heads"])
        self.head_dim = int(decoder["head_size"])
        self.vocab = int(config["vocab_size"])
        self.precision = precision
        self.threads = threads
        self.spin = spin
        self.graph = folder / "model.onnx"
        self._sessions: dict[tuple[int, bool], object] = {}
        self._logits = torch.empty(0)
        self.session_for(threads or torch.get_num_threads())  # a broken graph fails here, at load

    def session_for(self, threads: int, spin: bool = False):
        spin = spin and threads > 1  # one thread has no pool to spin
        session = self._sessions.get((threads, spin))
        if session is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
            # idle intra-op threads sleep unless told to spin: with other processes on the
            # cores (2 cores, load ~3), 2 spinning threads decoded at half the speed of 2 that
            # sleep, and a spinning thread takes a core from the editor; on free cores spinning
            # is ~1.2x faster (`threads.SPIN_BELOW`, docs/benchmarks.md, issue 22)
            options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
            session = onnxruntime.InferenceSession(str(self.graph), options, providers=["CPUExecutionProvider"])
            self._sessions[(threads, spin)] = session
        return session

    def spinning(self) -> bool:
        """Whether the next forward's intra-op threads spin (see the class)."""
        return self.spin if self.spin is not None else all_cores_free()

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
        session = self.session_for(self.threads or torch.get_num_threads(), self.spinning())
        binding = self._binding(cache, session)
        binding.bind_cpu_input("input_ids", numpy.asarray([ids], dtype=numpy.int64))
        binding.bind_cpu_input("attention_mask", numpy.ones((1, start + fed), dtype=numpy.int64))
        binding.bind_cpu_input("logits_to_keep", numpy.asarray([keep], dtype=numpy.int64))
        if self._logits.numel() < keep * self.vocab:
            self._logits = torch.empty(keep * self.vocab, dtype=torch.float32)
        binding.bind_output("logits", "cpu", 0, numpy.float32, [1, keep, self.vocab], self._logits.data_ptr())
        session.run_with_iobinding(binding)
        cache.length = start + fed
        # a copy: the next forward writes the same buffer, and callers keep rows of logits; numpy's,
        # on this thread (torch's clone of 49k numbers went to its thread pool and, on a busy
        # machine, waited ~7 ms a token for a descheduled thread)
        return torch.from_numpy(self._logits[: keep * self.vocab].numpy().copy()).view(keep, self.vocab), None

    def _binding(self, cache: KVCache, session):
        """`session`'s binding of `cache`'s storage, made again when the cache has grown."""
        bound = getattr(cache, "_onnx_binding", None)
        pointer = (cache.keys.data_ptr(), cache.values.data_ptr(), cache.keys.shape[2])
        if bound is not None and bound[0] == pointer and bound[1] is session:
            return bound[2]
        binding = session.io_binding()
        shape = [1, self.kv_heads, cache.keys.shape[2], self.head_dim]
        for i in range(self.layers):
            for kind, storage in (("key", cache.keys[i]), ("value", cache.values[i])):
                binding.bind_input(f"past_key_values.{i}.{kind}", "cpu", 0, numpy.float32, shape, storage.data_ptr())
                binding.bind_output(f"present.{i}.{kind}", "cpu", 0, numpy.float32, shape, storage.data_ptr())
        cache._onnx_binding = (pointer, session, binding)
        return binding
