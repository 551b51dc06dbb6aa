"""`whence-ls model install|info|calibrate|train-sae`."""

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
    sae = actions.add_parser("train-sae", help="train sparse autoencoders on attention-layer outputs (stdlib tokens) and index "
                                               "their features' top snippets")
    sae.add_argument("--model", default=None, help="model directory, .gguf file or cached hub id (default: embedded)")
    sae.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sae.add_argument("--layers", type=int, nargs="+", default=None, help="layers (0-based; default: one at a third, one at two thirds)")
    sae.add_argument("--tokens", type=int, default=120_000, help="standard-library tokens read (a tenth is held out)")
    sae.add_argument("--width-factor", type=int, default=4, help="features per input dimension (default 4)")
    sae.add_argument("--k", type=int, default=32, help="active features per token (TopK; default 32)")
    sae.add_argument("--steps", type=int, default=800, help="optimiser steps per layer (default 800)")
    sae.add_argument("--batch", type=int, default=2048)
    sae.add_argument("--seed", type=int, default=0)
    sae.add_argument("--ship", action="store_true", help="write the set into the package (float16), where a fresh clone finds it")
    sae.add_argument("--reindex", action="store_true", help="keep the trained set; only rebuild its feature index (top snippets, labels)")
    sae.set_defaults(run=_train_sae)


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


def _train_sae(args) -> int:
    import sys

    from whence_ls.engine.loading import load_model
    import torch

    from whence_ls.engine.sae import sae_dir, shipped_dir
    from whence_ls.engine.sae.features import build_feature_index, save_feature_index
    from whence_ls.engine.sae.model import save_sae_set
    from whence_ls.engine.sae.train import train_saes

    lm = load_model(args.model, args.device)
    last = [""]

    def progress(stage: str, share: float) -> None:
        bar = "#" * int(30 * share)
        line = f"\r{stage:<36} [{bar:<30}] {share:4.0%}"
        if line != last[0]:
            print(line, end="", file=sys.stderr, flush=True)
            last[0] = line
        if share >= 1.0:
            print(file=sys.stderr)

    directory = shipped_dir(lm) if args.ship else sae_dir(lm)
    if args.reindex:
        from whence_ls.engine.sae.model import load_sae_set
        from whence_ls.engine.sae.train import collect

        sae_set = load_sae_set(directory)
        activations, found, where = collect(lm, sorted(sae_set.saes), args.tokens, seed=args.seed, progress=progress)
    else:
        sae_set, found, where, activations = train_saes(
            lm, args.layers, tokens=args.tokens, width_factor=args.width_factor, k=args.k, steps=args.steps, batch=args.batch,
            seed=args.seed, progress=progress)
        print(file=sys.stderr)
        save_sae_set(sae_set, directory, dtype=torch.float16 if args.ship else torch.float32)
    progress("indexing top snippets", 0.0)
    save_feature_index(build_feature_index(lm, sae_set, found, where, activations), directory)
    progress("indexing top snippets", 1.0)
    for layer, metrics in sorted(sae_set.metrics.items(), key=lambda kv: int(kv[0])):
        print(f"layer {layer}: explained variance {metrics['explained_variance']:.3f}, L0 {metrics['l0']}, "
              f"dead {metrics['dead_share']:.1%}, loss {metrics['loss_clean']:.3f} -> {metrics['loss_spliced']:.3f} spliced "
              f"({metrics['loss_zero_ablated']:.3f} zero-ablated: {metrics['loss_recovered']:.1%} recovered)")
    print(f"saved to {directory}")
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
