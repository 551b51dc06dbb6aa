"""The fast decoding forward (`engine/fast_decode.py`): the model's own arithmetic in fp32, the
faster precisions within their measured tolerance, and everything generation builds on it
(cache growth and cropping, drafts, the model's own forward left as it was)."""

from __future__ import annotations

import pytest
import torch

from whence_ls.engine.context import build_context
from whence_ls.engine.fast_decode import FastDecoder, KVCache, supports
from whence_ls.engine.generation import generate

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
    """The same tiny model with transformers' own forward, untouched."""
    from whence_ls.engine.loading import load_model

    lm = load_model(str(tiny_model_dir), "cpu", decoder="transformers")
    assert lm.decoder is None
    return lm


def _ids(lm, n=None):
    ids = lm.tokenizer(SOURCE, add_special_tokens=False).input_ids
    return ids[:n] if n else ids


def test_the_fp32_forward_is_the_models_own(tiny_lm, plain_lm):
    """Logits and hidden states of a prefill, then of a three-token step after the cache (drafts),
    equal transformers' forward; the model's own forward, now reading the rearranged weights,
    is unchanged too."""
    assert isinstance(tiny_lm.decoder, FastDecoder) and tiny_lm.precision == "fp32"
    ids = _ids(tiny_lm)
    cache = tiny_lm.decoder.new_cache(capacity=8)  # grows (doubling) past its first capacity
    with torch.inference_mode():
        logits, hidden = tiny_lm.decoder.forward(ids[:-3], cache, logits_to_keep=4, hidden_states=True)
        reference = plain_lm.model(input_ids=torch.tensor([ids[:-3]]), logits_to_keep=4, output_hidden_states=True)
        assert torch.allclose(logits, reference.logits[0], atol=1e-5)
        assert len(hidden) == len(reference.hidden_states)
        for mine, theirs in zip(hidden, reference.hidden_states):
            assert torch.allclose(mine, theirs, atol=1e-5)
        step, _ = tiny_lm.decoder.forward(ids[-3:], cache, logits_to_keep=3)
        whole = plain_lm.model(input_ids=torch.tensor([ids])).logits[0]
        assert torch.allclose(step, whole[-3:], atol=1e-5)
        assert cache.get_seq_length() == len(ids)
        # the model's own forward reads the same storage, and still computes the same thing
        assert torch.allclose(tiny_lm.model(input_ids=torch.tensor([ids])).logits[0], whole, atol=1e-5)


def test_q_k_v_share_the_fused_storage(tiny_lm):
    """Nothing is kept twice: the model's q, k and v weights are views of the decoder's fused
    operand (only a tied output head gets a copy, because the embedding needs its rows)."""
    attention = tiny_lm.model.model.layers[0].self_attn
    fused = tiny_lm.decoder.qkv[0]
    start, end = fused.data_ptr(), fused.data_ptr() + fused.numel() * fused.element_size()
    for projection in (attention.q_proj, attention.k_proj, attention.v_proj):
        assert start <= projection.weight.data_ptr() < end


def test_cropping_the_cache_drops_exactly_the_newest_entries(tiny_lm):
    ids = _ids(tiny_lm, 40)
    with torch.inference_mode():
        cache = tiny_lm.decoder.new_cache()
        tiny_lm.decoder.forward(ids[:30], cache)
        tiny_lm.decoder.forward([5, 6, 7], cache)  # three drafts, all rejected
        cache.crop(-3)
        after, _ = tiny_lm.decoder.forward(ids[30:], cache)
        fresh, _ = tiny_lm.decoder.forward(ids, tiny_lm.decoder.new_cache())
    assert torch.allclose(after, fresh, atol=1e-5)
    with pytest.raises(ValueError):
        KVCache(1, 1, 2, dtype=torch.float32, device=torch.device("cpu")).crop(2)


def test_generation_on_the_fast_forward_is_transformers_generation(tiny_lm, plain_lm):
    """The same greedy tokens and scores, with and without drafts, with a cut prefill."""
    context = build_context(tiny_lm.tokenizer, SOURCE * 4, len(SOURCE * 4), 700)
    reference = generate(plain_lm, context, max_new_tokens=20, draft_tokens=0)
    for drafts in (0, 4):
        result = generate(tiny_lm, context, max_new_tokens=20, draft_tokens=drafts)
        assert [t.token_id for t in result.tokens] == [t.token_id for t in reference.tokens]
        for mine, theirs in zip(result.tokens, reference.tokens):
            assert mine.logprob == pytest.approx(theirs.logprob, abs=1e-4)
    assert result.precision == "fp32"


@pytest.mark.parametrize("precision, tolerance", [("fp16", 1e-3), ("int8", 0.05)])
def test_the_faster_precisions_stay_near_fp32(tiny_model_dir, plain_lm, precision, tolerance):
    """fp16 and int8 diverge from fp32, measurably but within their tolerance (mean KL per
    token, teacher-forced), and a record says which precision produced it."""
    from whence_ls.bench.divergence import fp32_logprobs, kl_of_engine
    from whence_ls.engine.loading import load_model

    lm = load_model(str(tiny_model_dir), "cpu", precision=precision)
    ids = _ids(lm)
    truth = fp32_logprobs(plain_lm, ids[:40], ids[40:])
    divergence = kl_of_engine(lm, ids[:40], ids[40:], truth)
    assert 0 <= divergence.mean_kl < tolerance
    with torch.inference_mode():  # and the faster arithmetic did run: not fp32's logits bit for bit
        fast, _ = lm.decoder.forward(ids[:-1], lm.decoder.new_cache(), logits_to_keep=len(ids) - 40)
    assert 0 < (torch.log_softmax(fast, -1) - truth).abs().max() < 0.5
    context = build_context(lm.tokenizer, SOURCE, len(SOURCE), 200)
    assert generate(lm, context, max_new_tokens=3).precision == precision


def test_int8_on_the_embedded_model_is_within_the_goal(embedded_lm):
    """On the real model and code the calibration never saw, int8's mean KL per token from fp32
    is under the issue's 0.01 nats, and its greedy choice differs at few positions."""
    from whence_ls.bench.divergence import fp32_logprobs, kl_of_engine
    from whence_ls.engine.loading import load_model

    import textwrap

    source = open(textwrap.__file__, encoding="utf-8").read()
    int8 = load_model(None, "cpu", precision="int8")
    ids = int8.tokenizer(source, add_special_tokens=False).input_ids[:400]
    truth = fp32_logprobs(embedded_lm, ids[:300], ids[300:])
    divergence = kl_of_engine(int8, ids[:300], ids[300:], truth)
    assert divergence.mean_kl < 0.01
    assert divergence.argmax_changed <= 10


def test_other_families_keep_transformers_forward():
    """A family the fast forward does not reproduce is named, and generation keeps the model's
    own forward for it."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2)
    reason = supports(Qwen2ForCausalLM(config))
    assert reason is not None and "Llama" in reason


def test_a_steps_products_alone_read_the_same_weights_as_the_step(tiny_lm):
    """`products_only` (the floor `whence-ls bench generate` sets beside whole steps) multiplies
    with the step's own operands: its last product is the output head's on its constant input,
    and the bench's row for the engine comes out of it."""
    from whence_ls.bench.decode_floor import step_floor

    decoder = tiny_lm.decoder
    with torch.inference_mode():
        logits = decoder.products_only()
        hidden = decoder.embed.weight.shape[1]
        expected = torch.full((1, hidden), 0.01) @ decoder.model.lm_head.weight.t()
    assert logits.shape == (1, decoder.model.config.vocab_size)
    assert torch.allclose(logits, expected, atol=1e-5)
    rows = step_floor({"fp32": tiny_lm}, _ids(tiny_lm, 30), steps=2, repeats=1)
    assert len(rows) == 1 and rows[0].startswith("| fp32 | ") and rows[0].endswith("% |")


def test_the_bandwidth_share_counts_the_kv_cache_a_step_reads(tiny_lm):
    """`bench generate`'s bytes a decode step reads include the keys and values of every position
    so far: per position, what the model's own cache holds after a forward."""
    from whence_ls.bench.generate import kv_bytes_per_position

    ids = torch.arange(5, 17).unsqueeze(0)
    with torch.inference_mode():
        cache = tiny_lm.model(input_ids=ids, use_cache=True).past_key_values
    held = sum(layer.keys.numel() * layer.keys.element_size() + layer.values.numel() * layer.values.element_size()
               for layer in cache.layers)
    assert kv_bytes_per_position(tiny_lm) == held / ids.shape[1]
    assert kv_bytes_per_position(tiny_lm, 2) == held / ids.shape[1] / 2


def test_bench_generate_runs_each_llama_row_beside_the_row_held_against_it():
    """int8 is held against Q8_0 and fp32 against F32 (by the GGUF's name), each pair runs side by
    side, in alternating order from one repeat to the next; rows without a partner keep their place."""
    from whence_ls.bench.generate import _paired_order, llama_partners

    labels = ["smollm2-f32.gguf, 2 threads", "smollm2-q8_0.gguf, 2 threads", "smollm2-q4_k_m.gguf, 2 threads"]
    partners = llama_partners(["int8-spin", "fp32-spin", "int8-acc1"], labels)
    # a llama.cpp row runs once a repeat: beside the first row held against it only
    assert partners == {"onnx-int8-spin-none": "llama1", "onnx-fp32-spin-none": "llama0"}
    partners = llama_partners(["int8-spin", "fp32-spin"], labels)
    keys = ["fp32-none", "onnx-int8-spin-none", "onnx-int8-spin-drafts", "onnx-fp32-spin-none", "plain", "llama0", "llama1", "llama2"]
    rows = [(key.upper(), key, None) for key in keys]
    assert [row[1] for row in _paired_order(rows, partners, flip=False)] == [
        "fp32-none", "onnx-int8-spin-none", "llama1", "onnx-int8-spin-drafts", "onnx-fp32-spin-none", "llama0", "plain", "llama2"]
    assert [row[1] for row in _paired_order(rows, partners, flip=True)] == [
        "fp32-none", "llama1", "onnx-int8-spin-none", "onnx-int8-spin-drafts", "llama0", "onnx-fp32-spin-none", "plain", "llama2"]
