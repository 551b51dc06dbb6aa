"""Training the SAEs of a model on its attention outputs over standard-library code, and
measuring them on held-out windows: explained variance, L0, the share of features that never
fire, and what splicing the reconstruction in costs the model's next-token loss."""

from __future__ import annotations

import threading
import time
from typing import Callable

import torch

from whence_ls.engine.loading import LoadedModel
from whence_ls.engine.sae.activations import Window, captured_z, stdlib_files, windows
from whence_ls.engine.sae.model import SaeSet, TopKSAE
from whence_ls.errors import WhenceError

WINDOW_TOKENS = 128
# the first positions of a window are attention sinks whatever they hold; their outputs are
# outliers that would take over the reconstruction loss
SKIP_POSITIONS = 4
HELD_OUT_SHARE = 0.1


def default_layers(lm: LoadedModel) -> list[int]:
    """An early-middle and a late-middle layer: short- and long-range context features (the
    paper's finding is that the middle layers hold most of the interpretable ones)."""
    count = int(getattr(lm.model.config, "num_hidden_layers", 2))
    return sorted({max(0, count // 3), max(0, (2 * count) // 3)})


def collect(lm: LoadedModel, layers: list[int], tokens: int, *, seed: int = 0, batch_windows: int = 8,
            progress: Callable[[str, float], None] | None = None, cancel: threading.Event | None = None):
    """(activations by layer [N, d], the windows, position index [N, 2] = (window, position))."""
    root, files = stdlib_files(seed)
    found: list[Window] = list(windows(lm.tokenizer, root, files, WINDOW_TOKENS, tokens))
    if not found:
        raise WhenceError("no standard-library source to train on was found")
    per_layer: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    where: list[torch.Tensor] = []
    with torch.inference_mode(), captured_z(lm.model, layers) as store:
        for start in range(0, len(found), batch_windows):
            if cancel is not None and cancel.is_set():
                raise WhenceError("cancelled")
            batch = found[start : start + batch_windows]
            ids = torch.tensor([w.ids for w in batch], device=lm.device)
            lm.model(input_ids=ids, use_cache=False, logits_to_keep=1)
            for layer in layers:
                per_layer[layer].append(store[layer][:, SKIP_POSITIONS:].reshape(-1, store[layer].shape[-1]).float().cpu())
            positions = torch.arange(SKIP_POSITIONS, WINDOW_TOKENS)
            for k in range(len(batch)):
                where.append(torch.stack([torch.full_like(positions, start + k), positions], dim=1))
            if progress is not None:
                progress("reading activations", min(1.0, (start + len(batch)) / len(found)))
    return {layer: torch.cat(chunks) for layer, chunks in per_layer.items()}, found, torch.cat(where)


def train_layer(x: torch.Tensor, *, width: int, k: int, steps: int, batch: int, lr: float, seed: int,
                progress: Callable[[float], None] | None = None, cancel: threading.Event | None = None) -> TopKSAE:
    generator = torch.Generator().manual_seed(seed)
    sae = TopKSAE(x.shape[1], width, k)
    sae.initialise(generator)
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(dim=0))  # the data's centre: the codes then explain deviations from it
    variance = float(((x - x.mean(dim=0)) ** 2).sum(dim=1).mean())
    optimiser = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999))
    for step in range(steps):
        if cancel is not None and cancel.is_set():
            raise WhenceError("cancelled")
        rows = torch.randint(0, x.shape[0], (batch,), generator=generator)
        sample = x[rows]
        reconstruction, _ = sae(sample)
        loss = ((reconstruction - sample) ** 2).sum(dim=1).mean() / variance
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        # the decoder rows stay unit vectors: remove the gradient along them, then renormalise
        with torch.no_grad():
            grad = sae.W_dec.grad
            grad -= (grad * sae.W_dec).sum(dim=1, keepdim=True) * sae.W_dec
        optimiser.step()
        sae.normalise_decoder()
        if progress is not None and (step % 20 == 0 or step == steps - 1):
            progress((step + 1) / steps)
    return sae.eval().requires_grad_(False)


def evaluate(lm: LoadedModel, sae_set: SaeSet, held_out: dict[int, torch.Tensor], held_windows: list[Window]) -> None:
    """Fill `sae_set.metrics` per layer from held-out activations and windows."""
    for layer, sae in sae_set.saes.items():
        x = held_out[layer]
        with torch.no_grad():
            reconstruction, codes = sae(x)
        residual = ((x - reconstruction) ** 2).sum()
        total = ((x - x.mean(dim=0)) ** 2).sum()
        fired = (codes > 0).any(dim=0)
        clean, spliced, zeroed = _losses(lm, layer, sae, held_windows)
        recovered = (zeroed - spliced) / (zeroed - clean) if zeroed > clean else float("nan")
        sae_set.metrics[str(layer)] = {
            "explained_variance": round(float(1 - residual / total), 4),
            "l0": round(float((codes > 0).sum(dim=1).float().mean()), 2),
            "dead_share": round(float(1 - fired.float().mean()), 4),
            "loss_clean": round(clean, 4),
            "loss_spliced": round(spliced, 4),
            "loss_zero_ablated": round(zeroed, 4),
            "loss_recovered": round(recovered, 4),
            "held_out_tokens": int(x.shape[0]),
        }


def _losses(lm: LoadedModel, layer: int, sae: TopKSAE, held: list[Window]) -> tuple[float, float, float]:
    """Mean next-token loss on `held`: as the model is, with the layer's hook_z replaced by the
    SAE's reconstruction, and replaced by zeros (the bound "recovered" is measured against)."""
    results = []
    for replace in (None, lambda z: sae(z.float())[0].to(z.dtype), torch.zeros_like):
        total, count = 0.0, 0
        with torch.inference_mode(), captured_z(lm.model, [layer], replace={layer: replace} if replace else None):
            for start in range(0, len(held), 8):
                ids = torch.tensor([w.ids for w in held[start : start + 8]], device=lm.device)
                logits = lm.model(input_ids=ids, use_cache=False).logits[:, SKIP_POSITIONS:-1].float()
                target = ids[:, SKIP_POSITIONS + 1 :]
                total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum"))
                count += target.numel()
        results.append(total / max(1, count))
    return results[0], results[1], results[2]


def train_saes(lm: LoadedModel, layers: list[int] | None = None, *, tokens: int = 120_000, width_factor: int = 4, k: int = 32,
               steps: int = 800, batch: int = 2048, lr: float = 1e-3, seed: int = 0,
               progress: Callable[[str, float], None] | None = None, cancel: threading.Event | None = None):
    """Train one SAE per layer; returns (the set, the training windows, their position index,
    the training activations by layer) so the feature index can be built without another pass."""
    from whence_ls.engine.attribution.calibration import fingerprint

    layers = layers if layers is not None else default_layers(lm)
    count = len(_layers_of(lm))
    for layer in layers:
        if not 0 <= layer < count:
            raise WhenceError(f"layer {layer} does not exist: the model has layers 0-{count - 1}")
    started = time.perf_counter()
    activations, found, where = collect(lm, layers, tokens, seed=seed, progress=progress, cancel=cancel)
    held_count = max(1, int(len(found) * HELD_OUT_SHARE))
    train_rows = where[:, 0] >= held_count  # the first windows are held out
    held_windows = found[:held_count]
    d_in = next(iter(activations.values())).shape[1]
    sae_set = SaeSet(model=lm.name, fingerprint=fingerprint(lm), k=k, width=width_factor * d_in, saes={},
                     corpus="Python standard library", tokens=int(train_rows.sum()))
    for n, layer in enumerate(layers):
        def report(share: float, n=n, layer=layer) -> None:
            if progress is not None:
                progress(f"training layer {layer} ({n + 1}/{len(layers)})", share)

        sae_set.saes[layer] = train_layer(activations[layer][train_rows], width=width_factor * d_in, k=k, steps=steps,
                                          batch=batch, lr=lr, seed=seed + layer, progress=report, cancel=cancel)
    if progress is not None:
        progress("measuring on held-out code", 0.0)
    evaluate(lm, sae_set, {layer: activations[layer][~train_rows] for layer in layers}, held_windows)
    for layer in layers:
        sae_set.metrics[str(layer)]["train_seconds"] = round(time.perf_counter() - started, 1)
    return sae_set, found, where, activations


def _layers_of(lm: LoadedModel) -> list:
    from whence_ls.engine.sae.activations import attention_layers

    return attention_layers(lm.model)

