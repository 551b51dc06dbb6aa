"""`whence-ls model install|info`."""

from __future__ import annotations

import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("model", help="provision and inspect models")
    actions = parser.add_subparsers(dest="model_action", metavar="ACTION")
    actions.required = True
    install = actions.add_parser("install", help="fetch and convert the embedded model (idempotent)")
    install.add_argument("name", nargs="?", default=None, help="catalog name (default: the embedded model)")
    install.add_argument("--force", action="store_true", help="reinstall even when installed and intact")
    install.set_defaults(run=_install)
    info = actions.add_parser("info", help="print what is installed")
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=_info)


def _install(args) -> int:
    from whence_ls.engine import provision, registry

    provision.install(args.name or registry.DEFAULT_MODEL, force=args.force)
    return 0


def _info(args) -> int:
    from whence_ls.engine import registry
    from whence_ls.paths import models_dir

    data = registry.read_registry()
    if args.json:
        print(json.dumps({"models_dir": str(models_dir()), **data}, indent=2))
        return 0
    print(f"models directory: {models_dir()}")
    if not data["models"]:
        print("no model installed: run `whence-ls model install`")
        return 1
    for name, entry in data["models"].items():
        default = " (default)" if name == data.get("default") else ""
        print(f"{name}{default}")
        for key in ("title", "source", "license", "dtype", "gguf_sha256", "safetensors_sha256", "installed_at", "verified"):
            if key in entry:
                print(f"  {key}: {entry[key]}")
    return 0
