"""Model specs: a hub id with a slash loads from the local cache (never the network); a missing
one, a path that is not a model and a broken registry each get a one-line reason."""

from __future__ import annotations

import json
import shutil

import pytest

from whence_ls.errors import WhenceError


def test_a_hub_id_with_a_slash_loads_from_the_local_cache(tiny_model_dir, tmp_path, monkeypatch):
    from whence_ls.engine.loading import load_model

    # the layout huggingface_hub keeps: models--ORG--NAME/{refs/main, snapshots/REV/...}
    repo = tmp_path / "hub" / "models--whence-test--tiny-llama"
    revision = "0" * 40
    shutil.copytree(tiny_model_dir, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("transformers.utils.hub.HF_HUB_CACHE", str(tmp_path / "hub"), raising=False)
    monkeypatch.setattr("transformers.utils.hub.TRANSFORMERS_CACHE", str(tmp_path / "hub"), raising=False)
    lm = load_model("whence-test/tiny-llama", "cpu")
    assert lm.name == "whence-test/tiny-llama"
    with pytest.raises(WhenceError, match="not in the local Hugging Face cache"):
        load_model("whence-test/not-cached", "cpu")


def test_paths_that_are_not_models(tmp_path):
    from whence_ls.engine.loading import load_model

    for spec in ["./missing", str(tmp_path / "a" / "b" / "c"), "~/nothing-here"]:
        with pytest.raises(WhenceError, match="neither a directory nor a .gguf file"):
            load_model(spec, "cpu")


@pytest.mark.parametrize("content", ["[]", '{"models": []}', '{"models": {"x": 3}}', "not json"])
def test_a_broken_registry_gets_a_one_line_reason(tmp_path, monkeypatch, content):
    from whence_ls.engine import registry

    monkeypatch.setattr(registry, "models_dir", lambda: tmp_path)
    (tmp_path / "registry.json").write_text(content)
    with pytest.raises(WhenceError) as exc:
        registry.read_registry()
    assert "\n" not in str(exc.value) and "registry" in str(exc.value) and "model install --force" in str(exc.value)


def test_a_gguf_is_converted_once_then_loaded_from_safetensors(tiny_model_dir, tiny_lm, tmp_path, monkeypatch):
    """The conversion of a GGUF is kept under models/converted/, named by the file's size and
    mtime; the next load reads it and never parses the GGUF again."""
    from whence_ls.engine import loading

    monkeypatch.setenv("WHENCE_HOME", str(tmp_path / "home"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF\x03\x00 not a real gguf: parsing it would fail")
    target = loading.gguf_conversion_dir(gguf)
    assert target.parent.name == "converted" and str(tmp_path / "home") in str(target)
    # what a first load keeps (here from the tiny model, as transformers would hand it over)
    loading._keep_conversion(tiny_lm.model, tiny_lm.tokenizer, target)
    assert (target / "config.json").is_file() and not list(target.parent.glob(".*saving*"))
    lm = loading.load_model(str(gguf), "cpu")
    assert lm.name == str(gguf)
    ids = tiny_lm.tokenizer("def f(x):", return_tensors="pt").input_ids
    import torch

    with torch.no_grad():
        assert torch.allclose(lm.model(ids).logits, tiny_lm.model(ids).logits, atol=1e-5)
    # a changed file is a different model: converted again (here: it cannot be, so it fails)
    gguf.write_bytes(b"GGUF\x03\x00 changed")
    with pytest.raises(WhenceError, match="cannot load model"):
        loading.load_model(str(gguf), "cpu")


def test_a_model_that_is_not_there_is_named_without_importing_torch(tmp_path):
    """The server says a model setting names nothing before it imports torch (a minute on a
    busy machine): the check itself imports nothing heavy."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from whence_ls.engine.model_spec import missing_model\n"
        f"print(missing_model({str(tmp_path / 'nothing')!r}))\n"
        f"print(missing_model({str(tmp_path / 'nothing.gguf')!r}))\n"
        f"print(missing_model({str(tmp_path)!r}))\n"
        "print(missing_model('HuggingFaceTB/SmolLM2-135M'))\n"
        "print('torch' in sys.modules)\n"
    )
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert lines[0].startswith("model not found:") and "neither a directory nor a .gguf file" in lines[0]
    assert lines[1].startswith("model file not found:")
    assert lines[2:] == ["None", "None", "False"]
