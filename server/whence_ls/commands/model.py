"""`whence-ls model install|info|calibrate`."""

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
    calibrate = actions.add_parser(
        "calibrate", help="fit the attention estimator's head weights to random-subset ablation (stdlib targets)"
    )
    calibrate.add_argument("--model", default=None, help="model directory, .gguf file or cached hub id (default: embedded)")
    calibrate.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    calibrate.add_argument("--targets", type=int, default=32, help="standard-library lines to fit on (default 32)")
    calibrate.add_argument("--heldout", type=int, default=8, help="further lines that only score the fit (default 8)")
    calibrate.add_argument("--masks", type=int, default=32, help="random ablation masks per target (default 32)")
    calibrate.add_argument("--context-tokens", type=int, default=320)
    calibrate.add_argument("--out", default=None, help="write here instead of models/calibrations/NAME.json")
    calibrate.set_defaults(run=_calibrate)


def _install(args) -> int:
    from whence_ls.engine import provision, registry

    from whence_ls.engine.attribution.calibration import record_shipped_calibration

    name = args.name or registry.DEFAULT_MODEL
    provision.install(name, force=args.force)
    record_shipped_calibration(name)
    return 0


def _calibrate(args) -> int:
    import sys
    import time
    from pathlib import Path

    from whence_ls.engine.attribution.calibration import calibrate, record_calibration, save_calibration
    from whence_ls.engine.loading import load_model

    lm = load_model(args.model, args.device)
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {message}", file=sys.stderr, flush=True)

    result = calibrate(lm, targets=args.targets, heldout=args.heldout, masks=args.masks,
                       context_tokens=args.context_tokens, progress=progress)
    path = save_calibration(lm, result, Path(args.out) if args.out else None)
    record_calibration(lm.name, path, result)
    info = result.info
    print(f"calibrated {lm.name}: {result.layers} layers x {result.heads} heads, held-out LDS {info['heldout_lds']} "
          f"({info['train_targets']} targets fitted, {info['heldout_targets']} held out, {info['seconds']} s)")
    print(f"copy heads: {len(result.induction_heads)} induction, {len(result.duplicate_heads)} duplicate-token")
    print(f"written to {path}")
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
        for key in ("title", "source", "license", "dtype", "gguf_sha256", "safetensors_sha256", "installed_at", "verified", "calibration"):
            if key in entry:
                print(f"  {key}: {entry[key]}")
    return 0
