"""The onnxruntime decoding forward (`engine/onnx_build.py`, `engine/onnx_decode.py`) on a tiny
random Llama: its fp32 graph computes the model's own logits through a chunked prefill, drafted
steps and a cropped cache; generation, drafts and the prefix cache on it give transformers'
tokens; int8 stays within its tolerance; the build is made once and kept."""

from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("onnxruntime_genai")
pytest.importorskip("onnx_ir")

from whence_ls.engine.context import build_context  # noqa: E402
from whence_ls.engine.generation import generate  # noqa: E402

SOURCE = '''import os


def read_config(path):
    """Read key=value lines into a dict."""
    settings = {}
    with open(path) as handle:
        for line in handle:
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings


def write_config(path, settings):
    with open(path, "w") as handle:
        for key, value in settings.items():
'''


@pytest.fixture(scope="module")
def plain_lm(tiny_model_dir):
    from whence_ls.engine.loading import load_model

    return load_model(str(tiny_model_dir), "cpu", decoder="transformers")


@pytest.fixture(scope="module")
def graphs(tiny_model_dir, tmp_path_factory):
    """The tiny model's fp32 and int8 graphs, built once for the module."""
    from whence_ls.engine.onnx_build import ensure_onnx

    root = tmp_path_factory.mktemp("onnx")
    return {precision: ensure_onnx(tiny_model_dir, precision, folder=root / precision, log=lambda _: None)
            for precision in ("fp32", "int8")}


def _onnx_lm(plain_lm, folder, precision):
    from whence_ls.engine.onnx_decode import OnnxDecoder
    from whence_ls.engine.prefix_cache import PrefixCache

    return dataclasses.replace(plain_lm, decoder=OnnxDecoder(folder, threads=1, precision=precision),
                               precision=precision, prefix_cache=PrefixCache())


def _ids(lm):
    return lm.tokenizer(SOURCE, add_special_tokens=False).input_ids


def test_the_fp32_graph_computes_the_models_logits(plain_lm, graphs):
    """A prefill in two chunks into a cache that must grow, a drafted three-token step whose
    last two entries are cropped, then the step again: the logits of transformers' forward."""
    lm = _onnx_lm(plain_lm, graphs["fp32"], "onnx-fp32")
    ids = _ids(lm)
    with torch.inference_mode():
        whole = plain_lm.model(input_ids=torch.tensor([ids])).logits[0]
        cache = lm.decoder.new_cache(capacity=8)  # grows (doubling) past its first capacity
        lm.decoder.forward(ids[:20], cache)
        first, _ = lm.decoder.forward(ids[20:-3], cache, logits_to_keep=2)
        assert torch.allclose(first, whole[-5:-3], atol=1e-4)
        drafted, _ = lm.decoder.forward(ids[-3:-1] + [17], cache, logits_to_keep=3)
        assert torch.allclose(drafted[:2], whole[-3:-1], atol=1e-4)
        cache.crop(-2)  # keep ids[-3] only, as generation does with rejected drafts
        assert cache.get_seq_length() == len(ids) - 2
        again, _ = lm.decoder.forward(ids[-2:], cache, logits_to_keep=2)
        assert torch.allclose(again, whole[-2:], atol=1e-4)
        # the cache holds the model's keys: the prefix cache copies them out per layer
        assert cache.layers[0].keys.shape == (1, plain_lm.model.config.num_key_value_heads, len(ids), 16)


def test_generation_drafts_and_the_prefix_cache_on_the_graph(plain_lm, graphs):
    """Greedy tokens and their scores are transformers' with and without drafts, and a second
    completion that shares the context reuses the cached keys and gives the same tokens."""
    lm = _onnx_lm(plain_lm, graphs["fp32"], "onnx-fp32")
    context = build_context(lm.tokenizer, SOURCE, len(SOURCE), 200)
    reference = generate(plain_lm, context, max_new_tokens=12, draft_tokens=0)
    for draft_tokens in (0, 4):
        result = generate(lm, context, max_new_tokens=12, draft_tokens=draft_tokens)
        assert [t.token_id for t in result.tokens] == [t.token_id for t in reference.tokens]
        for mine, theirs in zip(result.tokens, reference.tokens):
            assert mine.logprob == pytest.approx(theirs.logprob, abs=1e-4)
        assert result.precision == "onnx-fp32"
    generate(lm, context, max_new_tokens=12, prefix_cache=lm.prefix_cache)
    reused = generate(lm, context, max_new_tokens=12, prefix_cache=lm.prefix_cache)
    assert reused.timings["reused_tokens"] > 0
    assert [t.token_id for t in reused.tokens] == [t.token_id for t in reference.tokens]


def test_the_graph_gives_no_live_attention(plain_lm, graphs):
    """Live rows need the attention of a forward; the graph keeps it, and says so."""
    lm = _onnx_lm(plain_lm, graphs["fp32"], "onnx-fp32")
    with pytest.raises(ValueError, match="attention"):
        lm.decoder.forward(_ids(lm)[:5], lm.decoder.new_cache(), hidden_states=True)


def test_int8_stays_near_fp32(plain_lm, graphs):
    """int8 weights (MatMulNBits) diverge from fp32 measurably but within a tolerance."""
    from whence_ls.bench.divergence import fp32_logprobs, kl_of_engine

    lm = _onnx_lm(plain_lm, graphs["int8"], "onnx-int8")
    ids = _ids(lm)
    truth = fp32_logprobs(plain_lm, ids[:40], ids[40:])
    divergence = kl_of_engine(lm, ids[:40], ids[40:], truth)
    assert 0 < divergence.mean_kl < 0.05


def test_the_int8_mlp_products_take_blocks_of_64_and_the_others_32(graphs):
    """The MLP's products come from the second build (blocks of 64, `onnx_build.MLP_BLOCK`),
    with their weights and scales shaped for it; the attention's and the head's keep 32."""
    import onnx

    model = onnx.load(str(graphs["int8"] / "model.onnx"))
    tensors = {t.name: t for t in model.graph.initializer}
    seen = {}
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        attributes = {a.name: a.i for a in node.attribute}
        blocks = -(-attributes["K"] // attributes["block_size"])
        # the weights are [N, blocks, block_size] bytes, the scales one per block
        assert list(tensors[node.input[1]].dims) == [attributes["N"], blocks, attributes["block_size"]]
        assert list(tensors[node.input[2]].dims) in ([attributes["N"], blocks], [attributes["N"] * blocks])
        part = "mlp" if "/mlp/" in node.name else "head" if "lm_head" in node.name else "attention"
        seen.setdefault(part, set()).add(attributes["block_size"])
    assert seen == {"mlp": {64}, "attention": {32}, "head": {32}}
    import json

    stamp = json.loads((graphs["int8"] / "whence-build.json").read_text())
    assert stamp["mlp_products_taken"] == sum(1 for n in model.graph.node if n.op_type == "MatMulNBits" and "/mlp/" in n.name)


def test_the_build_is_kept_until_the_weights_change(tiny_model_dir, graphs, monkeypatch):
    """A second call finds the stamped build and runs no builder; other weights would rebuild."""
    import subprocess

    from whence_ls.engine import onnx_build

    def no_builder(*args, **kwargs):
        raise AssertionError("the builder ran again")

    monkeypatch.setattr(subprocess, "run", no_builder)
    folder = graphs["int8"]
    assert onnx_build.ensure_onnx(tiny_model_dir, "int8", folder=folder, log=lambda _: None) == folder
    stamp = onnx_build._stamp(tiny_model_dir, "int8", onnx_build.ACCURACY["int8"])
    assert onnx_build._stamp_of(folder)["weights"] == stamp["weights"]
    weights = next(tiny_model_dir.glob("*.safetensors"))
    info = weights.stat()
    try:
        import os

        os.utime(weights, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))
        assert onnx_build._stamp(tiny_model_dir, "int8", 4)["weights"] != stamp["weights"]
    finally:
        os.utime(weights, ns=(info.st_atime_ns, info.st_mtime_ns))


def test_load_model_decodes_with_the_graph(tiny_model_dir, graphs, monkeypatch):
    """`precision="onnx-fp32"` gives a model whose decoding forward is the graph (found where
    it was built, not built again); its records say so, and it asks for no live rows."""
    from whence_ls.engine import onnx_build
    from whence_ls.engine.attribution.live_rows import LiveAttention
    from whence_ls.engine.loading import load_model
    from whence_ls.engine.onnx_decode import OnnxDecoder

    monkeypatch.setattr(onnx_build, "onnx_folder", lambda *args, **kwargs: graphs["fp32"])
    lm = load_model(str(tiny_model_dir), "cpu", precision="onnx-fp32")
    assert isinstance(lm.decoder, OnnxDecoder) and lm.precision == "onnx-fp32"
    assert LiveAttention.for_model(lm) is None
    context = build_context(lm.tokenizer, SOURCE, len(SOURCE), 200)
    result = generate(lm, context, max_new_tokens=4, live_rows=True)
    assert result.precision == "onnx-fp32" and result.live_rows == {}


def test_threads_spin_only_while_every_core_is_free_and_give_the_same_logits(plain_lm, graphs, monkeypatch):
    """Two intra-op threads: a session whose idle threads spin while `threads.all_cores_free()`,
    one whose threads sleep otherwise; both compute the same logits."""
    from whence_ls.engine import threads as threads_module
    from whence_ls.engine.onnx_decode import OnnxDecoder

    decoder = OnnxDecoder(graphs["int8"], threads=2, precision="onnx-int8")
    ids = _ids(plain_lm)
    logits = {}
    for free in (True, False):
        monkeypatch.setattr(threads_module, "_all_cores_free", free)
        assert decoder.spinning() is free
        cache = decoder.new_cache()
        logits[free], _ = decoder.forward(ids, cache)
        session = decoder.session_for(2, free)
        assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == ("1" if free else "0")
    assert set(decoder._sessions) >= {(2, True), (2, False)}
    assert torch.equal(logits[True], logits[False])
    # one thread has no pool to spin, whatever the cores
    assert decoder.session_for(1, True) is decoder.session_for(1, False)
