"""Several model families through the engine: tiny random models built from configs of Llama,
Qwen2, StarCoder2, Gemma 3 (sliding-window layers) and GPT-2 (absolute positions), saved as
safetensors directories and loaded the way users load theirs; Qwen2 and StarCoder2 get their
family's FIM tokens. Each one generates, reuses a prefix while typing (or declines to, where its
cache cannot be cropped), drafts with the same output as without, completes in the middle with
its template, attributes (to lines below the cursor too), and serves a completion over the real
server."""

from __future__ import annotations

import pytest
import torch

from conftest import embedded_model_dir

SOURCE = '''import os


def list_python_files(root):
    """Return the paths of all .py files under root."""
    result = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            if name.endswith(".py"):
                result.append(os.path.join(dirpath, name))
    return result


def count_lines(path):
    with open(path) as handle:
        return sum(1 for _ in handle)


def main():
    files = list_python_files(".")
    total = 0
    for path in files:
        total += count_lines(path)
'''


def _config(family: str, vocab: int, tokenizer):
    from transformers import Gemma3TextConfig, GPT2Config, LlamaConfig, Qwen2Config, Starcoder2Config

    common = dict(vocab_size=vocab, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    if family == "llama":
        return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=2048, **common)
    if family == "qwen2":
        return Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=2048, **common)
    if family == "starcoder2":
        return Starcoder2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, max_position_embeddings=2048, sliding_window=None, **common)
    if family == "gemma3":
        # a sliding window far shorter than the context: the cache forgets, so it is never cropped
        return Gemma3TextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, head_dim=16, max_position_embeddings=2048, sliding_window=32,
                                layer_types=["sliding_attention", "full_attention"], **common)
    if family == "gpt2":
        return GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=2048, **common)
    raise ValueError(family)


FAMILIES = ["llama", "qwen2", "starcoder2", "gemma3", "gpt2"]
# the FIM markers each family's real tokenizers carry (Qwen2.5-Coder, StarCoder2), and the
# template `prompt.fim_template` must detect from them
FIM_TOKENS = {
    "qwen2": (("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>"), "qwen2.5-coder"),
    "starcoder2": (("<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>"), "starcoder"),
}


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from whence_ls.engine.loading import load_model

    tokenizer = AutoTokenizer.from_pretrained(str(embedded_model_dir()))
    if request.param in FIM_TOKENS:
        tokenizer.add_special_tokens({"additional_special_tokens": list(FIM_TOKENS[request.param][0])})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(request.param, len(tokenizer), tokenizer))
    target = tmp_path_factory.mktemp(f"tiny-{request.param}")
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return request.param, target, load_model(str(target), "cpu")


def test_a_faster_precision_is_the_fast_decoders_and_others_keep_their_own(family_model):
    """fp16 (the server's default) runs where the fast decoder does (Llama); another family
    loads and decodes in its own fp32, and its records say so."""
    from whence_ls.engine.context import build_context
    from whence_ls.engine.generation import generate
    from whence_ls.engine.loading import load_model

    family, target, _ = family_model
    lm = load_model(str(target), "cpu", precision="fp16")
    expected = "fp16" if family == "llama" else "fp32"
    assert lm.precision == expected and (lm.decoder is not None) == (family == "llama")
    context = build_context(lm.tokenizer, SOURCE, len(SOURCE), 200)
    assert generate(lm, context, max_new_tokens=2).precision == expected


def test_generation_matches_a_teacher_forced_forward(family_model):
    from whence_ls.engine.context import build_context
    from whence_ls.engine.generation import generate

    family, _, lm = family_model
    context = build_context(lm.tokenizer, SOURCE, len(SOURCE), 512)
    result = generate(lm, context, max_new_tokens=12, draft_tokens=0)
    assert result.tokens, family
    ids = context.token_ids + [t.token_id for t in result.tokens]
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
    n = len(context.token_ids)
    for i, token in enumerate(result.tokens):
        assert token.logprob == pytest.approx(float(logp[n + i - 1][token.token_id]), abs=1e-4), (family, i)


def test_drafts_and_prefix_reuse_leave_the_output_unchanged(family_model):
    from whence_ls.engine.generation import complete_at

    family, _, lm = family_model
    lm.prefix_cache.clear()
    cursor = SOURCE.index("    return result") + len("    return")
    plain = complete_at(lm, SOURCE, cursor, language="python", max_new_tokens=10, draft_tokens=0)
    first = complete_at(lm, SOURCE, cursor - 3, language="python", max_new_tokens=10, reuse_prefix=True)
    typed = complete_at(lm, SOURCE, cursor, language="python", max_new_tokens=10, reuse_prefix=True)
    assert [t.token_id for t in typed.tokens] == [t.token_id for t in plain.tokens], family
    assert first.tokens is not None
    if family == "gemma3":
        assert typed.timings["reused_tokens"] == 0  # a sliding-window cache is never cropped and reused
    else:
        assert typed.timings["reused_tokens"] > 0, family
    # verification copies the context's keys from the cache only where the cache holds them all:
    # not a 32-token sliding window after a longer context
    ids = list(typed.context.token_ids)
    copied = lm.prefix_cache.copy_of_prefix(ids, len(ids) - 1)
    if family == "gemma3":
        assert copied is None
    else:
        assert copied is not None and all(k.shape[2] == len(ids) - 1 for k, _ in copied), family


def test_fill_in_the_middle_with_the_family_template(family_model):
    from whence_ls.engine.attribution import attribute_rows, context_units
    from whence_ls.engine.generation import complete_at

    family, _, lm = family_model
    cursor = SOURCE.index("    return result") + len("    return")
    record = complete_at(lm, SOURCE, cursor, language="python", max_new_tokens=6)
    expected = FIM_TOKENS.get(family, (None, "prefix"))[1]
    assert record.context.prompt_format == expected, family
    if family not in FIM_TOKENS:
        return
    units = context_units(lm, record, "python")
    below = [u for u in units if u.role == "suffix"]
    assert below and all(u.start >= cursor for u in below), family
    if record.tokens:
        row = attribute_rows(lm, record, [0], "gradient_norm", language="python")[0]
        assert sum(abs(row.scores[i]) for i, u in enumerate(units) if u.role == "suffix") > 0, family


def test_attribution_rows_for_every_family(family_model):
    from whence_ls.engine.attribution import attribute_rows
    from whence_ls.engine.explain import explain_line

    family, _, lm = family_model
    record = explain_line(lm, SOURCE, SOURCE.count("\n") - 1, "python")
    indices = list(range(len(record.tokens)))
    for method in ("gradient_norm", "attention_rollout"):
        rows = attribute_rows(lm, record, indices, method, None, language="python")
        assert set(rows) == set(indices), (family, method)
        for row in rows.values():
            assert abs(sum(abs(s) for s in row.scores) - 1.0) < 1e-3 or not any(row.scores), (family, method)


def test_the_server_completes_with_every_family(family_model, tmp_path):
    from raw_rpc import RawServer

    family, model_dir, _ = family_model
    raw = RawServer(tmp_path)
    try:
        raw.initialize(tmp_path, {"model": str(model_dir), "device": "cpu", "maxNewTokens": 6})
        status = raw.wait_ready()
        assert status["state"] == "ready", status
        uri = (tmp_path / "main.py").as_uri()
        raw.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": SOURCE}})
        lines = SOURCE.split("\n")
        line = len(lines) - 2
        answer = raw.call("textDocument/inlineCompletion", {"textDocument": {"uri": uri}, "position": {"line": line, "character": len(lines[line])},
                                                            "context": {"triggerKind": 1}})
        assert "result" in answer, (family, answer)
        hover = raw.call("textDocument/hover", {"textDocument": {"uri": uri}, "position": {"line": 3, "character": 5}})
        assert "result" in hover, (family, hover)
    finally:
        raw.close()


def test_verified_rows_equal_plain_masked_forwards_for_every_family(family_model):
    """The exact verification reruns masks over cached keys; a sliding-window cache (Gemma 3,
    window 32 here, far shorter than the context) holds only its last positions, so there every
    mask is rerun from the start."""
    import numpy as np

    from whence_ls.engine.attribution.ablation import log_odds, masked_logprobs
    from whence_ls.engine.attribution.base import TeacherForced
    from whence_ls.engine.attribution.units import build_unit_map
    from whence_ls.engine.attribution.verification import advance, start
    from whence_ls.engine.explain import explain_line

    family, _, lm = family_model
    record = explain_line(lm, SOURCE, SOURCE.split("\n").index("    return result"), "python")
    assert len(record.context.token_ids) > 64, family  # longer than Gemma 3's window
    units = build_unit_map(record.context, "python")
    indices = list(range(len(record.tokens)))
    state = start(lm, record, indices, units, masks=6, seed=1, tail=None)
    assert advance(lm, record, state, units)
    plain = log_odds(masked_logprobs(TeacherForced.of(lm, record), indices, units, state.sources, state.masks))
    np.testing.assert_allclose(np.stack([state.outcomes[m] for m in range(6)]), plain, atol=1e-4, err_msg=family)
    assert state.from_start == (family == "gemma3")


def test_attribution_patching_over_a_tail_for_every_family(family_model):
    """The default's patching half runs the body from a cache of the context and the output head
    on its own: every family's body and head (GPT-2's, Gemma 3's soft cap) take that path."""
    import copy

    import numpy as np

    from whence_ls.engine.attribution import attribute_rows
    from whence_ls.engine.attribution.patching import AttributionPatching
    from whence_ls.engine.explain import explain_line
    from whence_ls.errors import WhenceError

    family, _, lm = family_model
    record = explain_line(lm, SOURCE, SOURCE.count("\n") - 1, "python")
    indices = list(range(len(record.tokens)))
    for method in (AttributionPatching(), AttributionPatching(tail=4)):
        fresh = copy.copy(record)
        fresh.attribution = {}
        if family == "gpt2":  # fused attention projections: a clear error, never a wrong row
            with pytest.raises(WhenceError, match="v_proj"):
                attribute_rows(lm, fresh, indices, method, None, language="python")
            continue
        rows = attribute_rows(lm, fresh, indices, method, None, language="python")
        assert set(rows) == set(indices), family
        assert all(np.all(np.isfinite(row.scores)) and any(row.scores) for row in rows.values()), family
