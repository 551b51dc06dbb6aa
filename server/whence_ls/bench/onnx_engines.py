"""The onnxruntime rows of `whence-ls bench generate`: the model's graph built by
`engine/onnx_build.py` and run by `engine/onnx_decode.py`, as a `LoadedModel` whose decoding
forward is that graph (everything else, the tokenizer and the fp32 model, is the fp32 engine's)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

# variant -> (precision of the build, MatMulNBits accuracy level, the row's label)
VARIANTS = {
    "fp32": ("fp32", None, "onnxruntime fp32"),
    "int8": ("int8", 4, "onnxruntime int8 (int8 activations)"),
    "int8-acc1": ("int8", 1, "onnxruntime int8 (fp32 activations)"),
}
# a variant with this suffix runs with spinning intra-op threads (what the server does while
# every core is free: `threads.all_cores_free`); without it, sleeping ones (a busy machine's)
SPIN_SUFFIX = "-spin"
CHOICES = [*VARIANTS, *(f"{v}{SPIN_SUFFIX}" for v in VARIANTS)]


def available() -> str | None:
    """Why the rows cannot be measured here (None: they can)."""
    try:
        import onnxruntime  # noqa: F401
        import onnxruntime_genai  # noqa: F401
    except ImportError as error:
        return f"onnxruntime rows: not measured (pip install 'whence-ls[onnx]': {error})"
    return None


def onnx_engines(lm, variants: list[str], threads: int) -> dict[str, tuple[str, object]]:
    """variant -> (row label, a LoadedModel decoding with that graph), built on first use into
    the folder beside the model (`onnx_build.onnx_folder`)."""
    from whence_ls.engine.onnx_build import ensure_onnx
    from whence_ls.engine.onnx_decode import OnnxDecoder
    from whence_ls.engine.prefix_cache import PrefixCache

    model_dir = Path(lm.model.name_or_path)
    engines = {}
    for variant in variants:
        spin = variant.endswith(SPIN_SUFFIX)
        base = variant.removesuffix(SPIN_SUFFIX)
        precision, accuracy, label = VARIANTS[base]
        folder = ensure_onnx(model_dir, precision, accuracy=accuracy)
        decoder = OnnxDecoder(folder, threads=threads, precision=f"onnx-{base}", spin=spin)
        how = "spinning" if spin and threads > 1 else "sleeping"
        engines[variant] = (f"{label}, {threads} threads ({how})", dataclasses.replace(
            lm, decoder=decoder, precision=f"onnx-{base}", prefix_cache=PrefixCache()))
    return engines
