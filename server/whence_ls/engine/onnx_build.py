"""Build, once, the ONNX graph that `onnx_decode.py` runs, and keep it beside the model.

onnxruntime-genai's model builder turns a local Hugging Face folder (safetensors, no remote code)
into a graph of onnxruntime's fused CPU operators: one GroupQueryAttention per layer (rotary,
the KV cache write and the attention in one kernel), SkipSimplifiedLayerNormalization (the
residual add and the norm), and MatMulNBits for int8 weights. That fusion is the point: a
one-token step of the embedded model is ~30 small operations per layer in eager torch, and
their dispatch is more than half of a step (docs/benchmarks.md, "where a one-token step's time
goes").

Changes to the builder's graph, made here:
- the output head runs only on the last `logits_to_keep` positions (a new int64 input, like
  transformers' argument): a prefill chunk needs one row of logits and a drafted step a few, and
  the head is the largest product of the model;
- the MatMulNBits `accuracy_level` is set per product (see `ACCURACY`);
- in int8, the MLP's products take their weights in blocks of 64 from a second build (see
  `MLP_BLOCK`): the builder has one block size for every product.

The build goes to a temporary folder renamed into place, with a stamp that names what it was
built from, so a crash never leaves half a model and a changed model is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from whence_ls.errors import WhenceError

# weight formats the builder emits for the CPU; fp32 keeps the model's arithmetic (up to the
# order of sums), int8 is MatMulNBits with 8-bit weights in blocks of 32 along the input
ONNX_PRECISIONS = ("fp32", "int8")
# MatMulNBits' arithmetic for its activations: 4 quantises them to int8 per block (the builder's
# CPU default, the fastest), 1 keeps them in fp32 (weights dequantised on the fly). Measured on
# the embedded model (docs/benchmarks.md, issue 22): see `onnx_decode.OnnxDecoder`.
ACCURACY = {"int8": 4}
# the block size of the MLP's int8 products (gate, up, down; the attention's products and the
# output head keep the builder's 32). A block's scale is 4 bytes and its activations are
# quantised together, so larger blocks read fewer bytes and do fewer float operations, at some
# precision. On the embedded model, against fp32 (teacher-forced on 3,000 tokens of this
# project's code; docs/benchmarks.md, issue 22): blocks of 32 everywhere, mean KL 0.0047 nats a
# token; 64 in the MLP, 0.0058 and 1.14x the speed at 300 context tokens, 0.96-1.06x at 1,000
# (paired runs); 64 everywhere, 0.0081 and 1.00-1.11x; 128, 0.0134 (above the 0.01 int8 allows)
MLP_BLOCK = {"int8": 64}
STAMP = "whence-build.json"
# the version of this module's changes to the builder's graph: a new one rebuilds
GRAPH_VERSION = 2


def onnx_folder(model_dir: str | os.PathLike, precision: str, accuracy: int | None = None) -> Path:
    """Where the graph of `model_dir` in `precision` lives: in `models/` (beside the model, for
    an installed one), named by the model folder's name; the stamp tells two models of one name
    apart (the other is then built again)."""
    from whence_ls.paths import models_dir

    suffix = f"-acc{accuracy}" if accuracy is not None and precision != "fp32" else ""
    return models_dir() / f"{Path(model_dir).name}.onnx-{precision}{suffix}"


def ensure_onnx(model_dir: str | os.PathLike, precision: str = "int8", *, accuracy: int | None = None,
                folder: str | os.PathLike | None = None, log=print) -> Path:
    """The folder of a built graph for `model_dir` (a local Hugging Face folder), building it
    when it is missing or was built from other weights or by another version of this module."""
    if precision not in ONNX_PRECISIONS:
        raise WhenceError(f"unknown ONNX precision {precision!r}: use {' or '.join(ONNX_PRECISIONS)}")
    if accuracy is None:
        accuracy = ACCURACY.get(precision)
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise WhenceError(f"{model_dir} is not a Hugging Face model folder (no config.json)")
    target = Path(folder) if folder is not None else onnx_folder(model_dir, precision, accuracy)
    stamp = _stamp(model_dir, precision, accuracy)
    built_from = _stamp_of(target)
    if built_from is not None and all(built_from.get(k) == v for k, v in stamp.items()):
        return target
    _check_builder()
    log(f"building the ONNX graph of {model_dir.name} ({precision}) into {target} (once; ~1 minute)")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        built = scratch / "graph"
        _run_builder(model_dir, built, precision, scratch / "cache")
        block = MLP_BLOCK.get(precision)
        if block is not None:
            other = scratch / f"blocks-{block}"
            try:
                _run_builder(model_dir, other, precision, scratch / "cache", f"block_size={block}")
                stamp["mlp_products_taken"] = take_products(built / "model.onnx", other / "model.onnx", MLP_PART)
            except WhenceError as error:  # a model the builder cannot block so: the first build's 32 everywhere
                log(f"the MLP's blocks of {block} could not be built; keeping blocks of 32 ({str(error)[:200]})")
                stamp["mlp_products_taken"] = 0
            shutil.rmtree(other, ignore_errors=True)
        rewrite_graph(built / "model.onnx", accuracy)
        from importlib.metadata import version

        stamp["onnxruntime_genai"] = version("onnxruntime-genai")  # for the record; a new one does not rebuild
        (built / STAMP).write_text(json.dumps(stamp, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(built, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _run_builder(model_dir: Path, out: Path, precision: str, cache: Path, *extra: str) -> None:
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(model_dir), "-o", str(out),
               "-p", precision, "-e", "cpu", "-c", str(cache)]
    if extra:
        command += ["--extra_options", *extra]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise WhenceError(f"the ONNX model builder failed (exit {done.returncode}):\n{done.stdout[-2000:]}")
    shutil.rmtree(cache, ignore_errors=True)


# the builder names a layer's MLP products "/model/layers.N/mlp/<name>/MatMul..."
MLP_PART = "/mlp/"


def take_products(path: Path, other: Path, part: str) -> int:
    """Give the MatMulNBits products of `path`'s graph whose name contains `part` the weights,
    scales and attributes of the same-named products in `other` (a build of the same model with
    other options), in place; the graph and its external data file are written again. Returns
    how many products were taken."""
    import onnx

    model = onnx.load(str(path))
    donor = onnx.load(str(other))
    tensors = {t.name: t for t in model.graph.initializer}
    donor_tensors = {t.name: t for t in donor.graph.initializer}
    donor_nodes = {n.name: n for n in donor.graph.node if n.op_type == "MatMulNBits"}
    taken = 0
    for node in model.graph.node:
        given = donor_nodes.get(node.name)
        if node.op_type != "MatMulNBits" or part not in node.name or given is None:
            continue
        # inputs 1 and 2: the quantised weights and their scales (the builder's int8 has no zero points)
        for mine, theirs in zip(node.input[1:3], given.input[1:3]):
            tensors[mine].CopyFrom(donor_tensors[theirs])
            tensors[mine].name = mine
        del node.attribute[:]
        node.attribute.extend(given.attribute)
        taken += 1
    if not taken:
        return 0  # a family whose builder names its products otherwise keeps one block size
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name,
              size_threshold=1024)
    data.chmod(0o644)  # onnx writes it readable by its owner alone; the builder's was not
    return taken


def rewrite_graph(path: Path, accuracy: int | None) -> None:
    """The first two changes of the module's docstring, in place (the weights, in the external data
    file beside the graph, are not touched)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    if any(i.name == "logits_to_keep" for i in graph.input):
        return
    head = next((n for n in graph.node if "logits" in n.output), None)
    if head is None:
        raise WhenceError(f"{path}: no node computes the logits; not a graph of the model builder")
    graph.input.append(helper.make_tensor_value_info("logits_to_keep", TensorProto.INT64, [1]))
    hidden = head.input[0]
    graph.initializer.extend([helper.make_tensor("whence_slice_end", TensorProto.INT64, [1], [2**62]),
                              helper.make_tensor("whence_slice_axis", TensorProto.INT64, [1], [1])])
    start = helper.make_node("Neg", ["logits_to_keep"], ["whence_slice_start"], name="/whence/keep_start")
    cut = helper.make_node("Slice", [hidden, "whence_slice_start", "whence_slice_end", "whence_slice_axis"],
                           ["whence_kept_hidden"], name="/whence/keep_slice")
    head.input[0] = "whence_kept_hidden"
    position = list(graph.node).index(head)
    graph.node.insert(position, cut)
    graph.node.insert(position, start)
    logits = next(o for o in graph.output if o.name == "logits")
    logits.type.tensor_type.shape.dim[1].dim_param = "logits_to_keep"
    if accuracy is not None:
        for node in graph.node:
            if node.op_type == "MatMulNBits":
                for attribute in node.attribute:
                    if attribute.name == "accuracy_level":
                        attribute.i = accuracy
    onnx.save(model, str(path))


def _check_builder() -> None:
    try:
        import onnxruntime  # noqa: F401
        import onnxruntime_genai  # noqa: F401
        import onnx_ir  # noqa: F401  (the builder imports it)
    except ImportError as error:
        raise WhenceError(f"the ONNX engine needs the optional extra: pip install 'whence-ls[onnx]' ({error})") from None


def _stamp(model_dir: Path, precision: str, accuracy: int | None) -> dict:
    weights = sorted(model_dir.glob("*.safetensors"))
    if not weights:
        raise WhenceError(f"{model_dir} has no safetensors weights (the ONNX build reads only those)")
    digest = hashlib.sha256()
    for path in weights:  # size and modification time: hashing 540 MB at every start costs ~1 s
        info = path.stat()
        digest.update(f"{path.name}:{info.st_size}:{info.st_mtime_ns}".encode())
    return {"weights": digest.hexdigest()[:16], "precision": precision, "accuracy_level": accuracy,
            "mlp_block_size": MLP_BLOCK.get(precision), "graph_version": GRAPH_VERSION}


def _stamp_of(folder: Path) -> dict | None:
    try:
        return json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
