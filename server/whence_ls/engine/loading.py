"""Load a causal LM for whence-ls: safetensors or GGUF only, never pickle, never remote code."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from whence_ls.errors import WhenceError
from whence_ls.engine import registry
from whence_ls.engine.model_spec import missing_model, names_a_path
from whence_ls.engine.prefill_rate import PrefillRate
from whence_ls.engine.prefix_cache import PrefixCache

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name: str  # what the user sees: registry name, directory or hub id
    spec: str
    device: torch.device
    dtype: torch.dtype
    supports_fim: bool
    max_context: int
    load_seconds: float

    _token_texts: list[str] | None = None
    _special_ids: frozenset[int] | None = None
    cache_argument: str = "cache"
    # the fast forward (`fast_decode.py`) that generation uses, None where it does not run
    decoder: object | None = None
    precision: str = "fp32"  # of the decoding forward; the model's own forward stays fp32 on a CPU
    prefix_cache: PrefixCache = field(default_factory=PrefixCache)  # for callers that opt in
    prefill_rate: PrefillRate = field(default_factory=PrefillRate)  # measured by every prefill

    def token_texts(self) -> list[str]:
        """Every vocabulary entry decoded on its own (for token healing), computed once."""
        if self._token_texts is None:
            decode = self.tokenizer.decode
            self._token_texts = [decode([i], clean_up_tokenization_spaces=False) for i in range(len(self.tokenizer))]
        return self._token_texts

    def special_token_ids(self) -> frozenset[int]:
        """Every special or added-special token (EOS, chat markers, repository and FIM tokens):
        their text is markup for the model and must never reach the user's code."""
        if self._special_ids is None:
            ids = set(getattr(self.tokenizer, "all_special_ids", []) or [])
            decoder = getattr(self.tokenizer, "added_tokens_decoder", {}) or {}
            ids.update(i for i, token in decoder.items() if getattr(token, "special", False))
            self._special_ids = frozenset(ids)
        return self._special_ids

    @property
    def device_label(self) -> str:
        return self.device.type

    @property
    def eos_token_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(source)
        return ids


def pick_device(device: str) -> torch.device:
    if device not in ("auto", "cpu", "cuda"):
        raise WhenceError(f"unknown device {device!r}: use auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise WhenceError("device cuda requested but no CUDA GPU is available to torch")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# The largest model a GPU holds in fp32 (4 bytes a parameter) rather than bf16. `whence-ls bench
# gpu` on an H200 with the embedded 135M model: bf16 changed 3 of 59 greedy tokens against the
# cpu's fp32 (mean KL 0.001-0.002 nats a token), fp32 on cuda none (KL 5e-5); decoding a model
# this small is bound by kernel launches, not by reading the weights. Above this size bf16's
# halved memory matters more.
FP32_ON_GPU_MAX_PARAMS = 1_000_000_000


def pick_dtype(device: torch.device, parameters: int | None = None) -> torch.dtype:
    # GPU: fp32 up to FP32_ON_GPU_MAX_PARAMS parameters (the scores are specified in fp32, and a
    # calibration fitted on fp32 applies), bf16 above it or when the size is unknown.
    # CPU: fp32. Without AMX, CPUs emulate bf16 matmuls and run them slower than fp32 (bench
    # generate shows it), and the per-token log-probabilities and attribution checks are
    # specified in fp32; the embedded model is small enough that fp32 costs only memory.
    if device.type == "cuda":
        small = parameters is not None and parameters <= FP32_ON_GPU_MAX_PARAMS
        return torch.float32 if small else torch.bfloat16
    return torch.float32


def count_parameters(model_source: str, load_kwargs: dict) -> int | None:
    """The model's parameter count from its config alone (built on the meta device: no memory,
    no weights read), or None where the config cannot be read that way (a GGUF file)."""
    if "gguf_file" in load_kwargs:
        return None
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model_source, trust_remote_code=False,
                                            **{k: v for k, v in load_kwargs.items() if k == "local_files_only"})
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except Exception:  # noqa: BLE001 - an unknown size only means the safe (smaller) dtype
        return None
    return sum(p.numel() for p in skeleton.parameters())


def _has_fim_tokens(tokenizer) -> bool:
    vocab = tokenizer.get_vocab()
    return all(t in vocab for t in ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"))


# a Hugging Face hub id, `org/name` (or `name`): a path with one slash is one too, unless it exists


DECODERS = ("fast", "transformers")
# precisions of the onnxruntime engine (`onnx_decode.py`, the optional extra `whence-ls[onnx]`)
ONNX_PRECISIONS = ("onnx-int8", "onnx-fp32")


def _onnx_decoder(model_source: str, precision: str):
    """The onnxruntime decoder of a local model folder, its graph built on first use; a model
    that is not a local folder (a hub id), or a missing extra, is a clear error."""
    from whence_ls.engine import onnx_decode

    folder = Path(model_source)
    if not (folder / "config.json").is_file():
        raise WhenceError(f"precision {precision} builds its graph from a local model folder; {model_source} is not one")
    return onnx_decode.for_model(folder, precision, log=log.info)


def load_model(spec: str | None = None, device: str = "auto", *, attn_implementation: str = "sdpa",
               decoder: str = "fast", precision: str = "fp32") -> LoadedModel:
    """Load `spec`: None (embedded default), a model directory, a .gguf file, or a hub id
    already in the local cache (whence-ls never downloads at run time).

    `decoder`: "fast" decodes with `fast_decode.FastDecoder` where it runs the model (a Llama on
    a CPU), in `precision` ("fp32", "fp16" or "int8"; elsewhere the model's own, fp32 on a CPU);
    "transformers" always with the model's own forward (the bench's baseline)."""
    from whence_ls.engine import fast_decode

    if decoder not in DECODERS:
        raise WhenceError(f"unknown decoder {decoder!r}: use {' or '.join(DECODERS)}")
    precisions = fast_decode.PRECISIONS + ONNX_PRECISIONS
    if precision not in precisions:
        raise WhenceError(f"unknown precision {precision!r}: use {', '.join(precisions)}")
    import inspect

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the server's stdout is the LSP channel; CLI users need no bars
    started = time.perf_counter()
    target = pick_device(device)
    entry = None
    if spec is None or spec in registry.known_names():
        entry = registry.installed_entry(spec or registry.DEFAULT_MODEL)
        path = Path(entry["path"])
        load_kwargs: dict = {}
        tok_source, model_source = str(path), str(path)
        name = entry["name"]
    else:
        path = Path(spec).expanduser()
        name = spec
        missing = missing_model(spec)
        if missing is not None:
            raise WhenceError(missing)
        if path.suffix == ".gguf":
            converted = gguf_conversion_dir(path)
            if (converted / "config.json").is_file() and any(converted.glob("*.safetensors")):
                # converted once already: loading the safetensors takes seconds, not minutes
                tok_source = model_source = str(converted)
                load_kwargs = {"use_safetensors": True}
            else:
                tok_source = model_source = str(path.parent)
                load_kwargs = {"gguf_file": path.name}
        elif path.is_dir():
            _check_safetensors_dir(path)
            tok_source = model_source = str(path)
            load_kwargs = {"use_safetensors": True}
        elif names_a_path(spec):
            raise WhenceError(missing_model(spec) or f"model not found: {spec}")
        else:
            # a hub id: only what is already cached; whence-ls is offline at run time
            tok_source = model_source = spec
            load_kwargs = {"use_safetensors": True, "local_files_only": True}
    dtype = pick_dtype(target, count_parameters(model_source, load_kwargs) if target.type == "cuda" else None)
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_source, trust_remote_code=False, **{k: v for k, v in load_kwargs.items() if k != "use_safetensors"})
        model = AutoModelForCausalLM.from_pretrained(
            model_source,
            dtype=dtype,
            trust_remote_code=False,
            attn_implementation=attn_implementation,
            **load_kwargs,
        )
    except WhenceError:
        raise
    except OSError as exc:
        if "local_files_only" in load_kwargs:
            raise WhenceError(f"model not found: {spec} is not a directory here, and not in the local Hugging Face "
                              f"cache (whence-ls never downloads at run time) ({_first_line(exc)})") from exc
        raise WhenceError(f"cannot load model {name}: {_first_line(exc)}") from exc
    except Exception as exc:  # corrupt weights, unknown architecture, bad config
        raise WhenceError(f"cannot load model {name}: {type(exc).__name__}: {_first_line(exc)}") from exc
    if "gguf_file" in load_kwargs:
        _keep_conversion(model, tokenizer, gguf_conversion_dir(path))
    model.to(target)
    model.eval()
    # transformers 5.2x renamed the KV-cache argument; older 5.x releases and custom classes
    # still take `past_key_values`
    forward_parameters = inspect.signature(model.forward).parameters
    cache_argument = "cache" if "cache" in forward_parameters else "past_key_values"
    max_context = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
    fast = None
    if decoder == "fast" and target.type == "cpu":
        reason = fast_decode.supports(model)
        if reason is None and precision in ONNX_PRECISIONS:
            fast = _onnx_decoder(model_source, precision)
        elif reason is None:
            fast = fast_decode.FastDecoder(model, precision, _calibration_ids(tokenizer) if precision == "int8" else None)
        else:
            log.info("decoding with transformers' forward: %s", reason)
    if precision != "fp32" and fast is None:
        # the faster precisions are the fast decoder's; a model it does not run decodes in its
        # own arithmetic (and every record then says fp32), rather than not at all
        log.info("%s decodes in the model's own precision: the fast decoder does not run it here (%s)", name,
                 fast_decode.supports(model) or f"device {target.type}" if decoder == "fast" else "decoder transformers")
        precision = "fp32"
    if dtype == torch.bfloat16:
        precision = "bf16"  # a large model on a GPU: what a hover says it was decoded in
    return LoadedModel(
        decoder=fast,
        precision=precision,
        model=model,
        tokenizer=tokenizer,
        name=name,
        spec=spec or name,
        device=target,
        dtype=dtype,
        supports_fim=bool(entry["fim"]) if entry else _has_fim_tokens(tokenizer),
        max_context=max_context,
        load_seconds=time.perf_counter() - started,
        cache_argument=cache_argument,
    )


def _calibration_ids(tokenizer) -> list[int]:
    """The text whose activations set int8's smoothing scales: code of this package (not a
    benchmark's prompt), the same tokens every start."""
    from whence_ls.engine import fast_decode, stopping

    text = Path(stopping.__file__).read_text(encoding="utf-8")
    return tokenizer(text, add_special_tokens=False).input_ids[: fast_decode.CALIBRATION_TOKENS]


def gguf_conversion_dir(path: Path) -> Path:
    """Where the safetensors conversion of a GGUF file is kept: under models/, named by the
    file's name, size and modification time (a changed file is converted again)."""
    from whence_ls.paths import models_dir

    stat = path.stat()
    return models_dir() / "converted" / f"{path.stem}-{stat.st_size}-{stat.st_mtime_ns}"


def _keep_conversion(model, tokenizer, target: Path) -> None:
    """Save what transformers dequantised from a GGUF, so the next start loads safetensors
    (Gemma 3 270M took 114 s to convert on 2 quiet cores, at every start). Written to a temporary
    sibling and renamed, so a killed save never leaves a half model that looks whole."""
    import shutil

    temporary = target.with_name(f".{target.name}.saving-{os.getpid()}")
    # the weights are plain tensors now (dequantised), but transformers still marks the model
    # as GGUF-quantised and refuses to save it; the saved copy is a plain model
    model.hf_quantizer = None
    for marker in ("quantization_config", "_is_quantized"):
        if marker in vars(model.config):
            delattr(model.config, marker)
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:
            pass
    try:
        shutil.rmtree(temporary, ignore_errors=True)
        # contiguous: a model the fast decoder has rearranged holds its weights as views
        # (`fast_decode.py`), which safetensors cannot write as they are
        state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
        model.save_pretrained(temporary, safe_serialization=True, state_dict=state)
        tokenizer.save_pretrained(temporary)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(temporary, target)
    except Exception as exc:  # a read-only models/, say: it only costs the next start another conversion
        log.warning("could not keep the conversion of the GGUF in %s: %s", target, exc)
        shutil.rmtree(temporary, ignore_errors=True)


def _check_safetensors_dir(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise WhenceError(f"{path} is not a model directory (no config.json)")
    if not any(path.glob("*.safetensors")):
        pickled = [p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        if pickled:
            raise WhenceError(
                f"{path} has only pickle weights ({', '.join(pickled[:3])}); whence-ls loads safetensors only"
            )
        raise WhenceError(f"{path} has no *.safetensors weights")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
