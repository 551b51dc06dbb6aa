"""Shared fixtures: a tiny randomly initialised model with the embedded tokenizer.

The tiny model is built from a config (no download) and saved as a real safetensors model
directory, so tests load it through the same `load_model` path (and the same `--model DIR`
option of the CLI and server) that users take with real models.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# tests never reach a hub; everything comes from local files
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]


def embedded_model_dir() -> Path:
    """The installed embedded model; WHENCE_TEST_TOKENIZER_DIR stands in for it where only its
    tokenizer travelled (the GPU machine of scripts/gpu-check.sh's tiny-model tests)."""
    from whence_ls.engine import registry

    if os.environ.get("WHENCE_TEST_TOKENIZER_DIR"):
        return Path(os.environ["WHENCE_TEST_TOKENIZER_DIR"])

    return Path(registry.installed_entry(registry.DEFAULT_MODEL)["path"])


def build_tiny_model_dir(target: Path, *, seed: int = 0, layers: int = 2, extra_special: tuple[str, ...] = ()) -> Path:
    """`extra_special`: special tokens added to the tokenizer (a family's FIM markers, say)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(embedded_model_dir()))
    if extra_special:
        tokenizer.add_special_tokens({"additional_special_tokens": list(extra_special)})
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny random Llama with the embedded model's tokenizer."""
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_fim_lm(tmp_path_factory):
    """A tiny random Llama whose tokenizer has StarCoder's FIM markers."""
    from whence_ls.engine.loading import load_model

    target = build_tiny_model_dir(tmp_path_factory.mktemp("tiny-fim"), extra_special=STARCODER_FIM)
    return load_model(str(target), "cpu")


STARCODER_FIM = ("<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>")


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    from whence_ls.engine.loading import load_model

    return load_model(str(tiny_model_dir), "cpu")


@pytest.fixture(scope="session")
def embedded_lm():
    from whence_ls.engine.loading import load_model

    return load_model(None, "cpu")
