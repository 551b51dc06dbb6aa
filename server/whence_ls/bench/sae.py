"""`whence-ls bench sae`: how good the model's sparse autoencoders are, on standard-library
windows they were not trained on (the files at the other end of the training order).

Per layer: explained variance of hook_z, L0, the share of features that never fire, the
model's next-token loss clean / with the reconstruction spliced in / with the layer zeroed (and
the share of that gap the SAE recovers), and how often a token's strongest feature is an
induction feature on copy cases (the next token already followed this one earlier in the
window) versus the other tokens.
"""

from __future__ import annotations

import statistics
import time

import torch


def run(args) -> int:
    from whence_ls.engine.loading import load_model
    from whence_ls.engine.sae import load_for
    from whence_ls.engine.sae.activations import captured_z, stdlib_files, windows
    from whence_ls.engine.sae.features import _copyable
    from whence_ls.engine.sae.train import SKIP_POSITIONS, WINDOW_TOKENS, evaluate
    from whence_ls.errors import WhenceError

    lm = load_model(args.model, args.device)
    sae_set, index = load_for(lm)
    if sae_set is None:
        raise WhenceError(f"no sparse autoencoders for {lm.name}: train them with `whence-ls model train-sae`")
    started = time.perf_counter()
    root, files = stdlib_files(0)
    held = list(windows(lm.tokenizer, root, list(reversed(files)), WINDOW_TOKENS, args.tokens))
    layers = sorted(sae_set.saes)
    activations: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    copy_flags: list[int] = []
    with torch.inference_mode(), captured_z(lm.model, layers) as store:
        for start in range(0, len(held), 8):
            batch = held[start : start + 8]
            lm.model(input_ids=torch.tensor([w.ids for w in batch], device=lm.device), use_cache=False, logits_to_keep=1)
            for layer in layers:
                activations[layer].append(store[layer][:, SKIP_POSITIONS:].reshape(-1, store[layer].shape[-1]).float().cpu())
            for window in batch:
                copy_flags += [_copyable(window.ids, p) for p in range(SKIP_POSITIONS, WINDOW_TOKENS)]
    x = {layer: torch.cat(chunks) for layer, chunks in activations.items()}
    measured = type(sae_set)(model=sae_set.model, fingerprint=sae_set.fingerprint, k=sae_set.k, width=sae_set.width, saes=sae_set.saes)
    evaluate(lm, measured, x, held)
    copies = torch.tensor(copy_flags, dtype=torch.bool)
    print(f"model: {lm.name}; SAEs: TopK k={sae_set.k}, width {sae_set.width}, layers {layers}, trained on {sae_set.tokens} "
          f"tokens of the {sae_set.corpus}; held out: {len(held)} windows of {WINDOW_TOKENS} tokens ({copies.sum()} copy cases "
          f"of {copies.numel()} positions); {time.perf_counter() - started:.0f} s")
    print("| layer | explained variance | L0 | dead features | loss clean | spliced | zero-ablated | loss recovered | "
          "top feature is induction: copy cases | other tokens |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for layer in layers:
        m = measured.metrics[str(layer)]
        induction = [bool(e.get("induction")) for e in (index or {}).get("layers", {}).get(str(layer), [])]
        with torch.no_grad():
            codes = sae_set.saes[layer].encode(x[layer])
        top = codes.argmax(dim=1)
        fired = codes.max(dim=1).values > 0
        marks = torch.tensor([induction[i] if i < len(induction) else False for i in top.tolist()]) & fired
        on_copy = float(marks[copies].float().mean()) if copies.any() else float("nan")
        on_other = float(marks[~copies].float().mean()) if (~copies).any() else float("nan")
        print(f"| {layer} | {m['explained_variance']:.3f} | {m['l0']:.1f} | {m['dead_share']:.1%} | {m['loss_clean']:.3f} | "
              f"{m['loss_spliced']:.3f} | {m['loss_zero_ablated']:.3f} | {m['loss_recovered']:.1%} | {on_copy:.1%} | {on_other:.1%} |")
    shares = [statistics.mean(bool(e.get("induction")) for e in entries) for entries in (index or {}).get("layers", {}).values() if entries]
    if shares:
        print(f"induction-marked features: {', '.join(f'{s:.1%}' for s in shares)} of each layer's features")
    return 0
