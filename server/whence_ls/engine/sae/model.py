"""A TopK sparse autoencoder over one attention layer's output, and how it is stored.

TopK (Gao et al., "Scaling and evaluating sparse autoencoders", 2024) rather than ReLU with an
L1 penalty: the sparsity is the `k` we choose, not a penalty weight to tune per layer and model
(there is no time for a sweep on 2 cores), and it shrinks no activation towards zero. The input
is the layer's `hook_z`: every head's output concatenated, before the output projection (as in
Kissane et al., "Interpreting Attention Layer Outputs with Sparse Autoencoders"), so a
feature's pre-activation splits exactly over heads, and through their attention, over the
context positions the heads read.

Stored as one safetensors file per layer beside a manifest (layers, width, k, and the measured
reconstruction, sparsity, dead share and loss increase), under `models/sae/<model>/`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

FORMAT = "whence-sae-1"


class TopKSAE(torch.nn.Module):
    def __init__(self, d_in: int, width: int, k: int) -> None:
        super().__init__()
        self.d_in, self.width, self.k = d_in, width, k
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in))
        self.W_enc = torch.nn.Parameter(torch.empty(d_in, width))
        self.b_enc = torch.nn.Parameter(torch.zeros(width))
        self.W_dec = torch.nn.Parameter(torch.empty(width, d_in))

    def initialise(self, generator: torch.Generator) -> None:
        with torch.no_grad():
            self.W_dec.copy_(torch.randn(self.width, self.d_in, generator=generator))
            self.normalise_decoder()
            self.W_enc.copy_(self.W_dec.T)  # the encoder starts as the decoder's transpose

    def normalise_decoder(self) -> None:
        with torch.no_grad():
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Sparse codes: the k largest positive pre-activations of each row, the rest zero."""
        pre = torch.relu(self.pre_activations(x))
        values, indices = torch.topk(pre, self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, indices, values)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = self.encode(x)
        return self.decode(codes), codes


@dataclass
class SaeSet:
    """The SAEs of one model, by layer, and what was measured when they were trained."""

    model: str
    fingerprint: str
    k: int
    width: int
    saes: dict[int, TopKSAE]
    metrics: dict[str, dict] = field(default_factory=dict)  # per layer (as str): ev, l0, dead, loss...
    corpus: str = ""
    tokens: int = 0

    def manifest(self) -> dict:
        return {"format": FORMAT, "model": self.model, "fingerprint": self.fingerprint, "k": self.k, "width": self.width,
                "layers": sorted(self.saes), "metrics": self.metrics, "corpus": self.corpus, "tokens": self.tokens,
                "kind": "topk", "input": "hook_z (every head's output, before o_proj)"}


def save_sae_set(sae_set: SaeSet, directory: Path, *, dtype: torch.dtype = torch.float32) -> None:
    """Written beside, then renamed over: a killed save never leaves a half set that looks whole.
    `dtype` float16 halves a shipped set's size; it is read back as float32."""
    import os
    import shutil

    from safetensors.torch import save_file

    temporary = directory.with_name(f".{directory.name}.saving-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    for layer, sae in sae_set.saes.items():
        tensors = {name: parameter.detach().to(dtype).contiguous() for name, parameter in sae.named_parameters()}
        save_file(tensors, str(temporary / f"layer{layer}.safetensors"))
    (temporary / "manifest.json").write_text(json.dumps(sae_set.manifest(), indent=1), encoding="utf-8")
    shutil.rmtree(directory, ignore_errors=True)  # the old feature index goes with the old set
    os.replace(temporary, directory)


def load_sae_set(directory: Path) -> SaeSet:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from whence_ls.errors import WhenceError

    manifest_path = directory / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}")
        saes = {}
        for layer in manifest["layers"]:
            tensors = {name: t.float() for name, t in load_file(str(directory / f"layer{layer}.safetensors")).items()}
            d_in, width = tensors["W_enc"].shape
            sae = TopKSAE(d_in, width, int(manifest["k"]))
            sae.load_state_dict(tensors)
            saes[int(layer)] = sae.eval().requires_grad_(False)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
        raise WhenceError(f"the sparse autoencoders in {directory} cannot be read ({exc}): train them again with "
                          "`whence-ls model train-sae`") from exc
    return SaeSet(model=manifest["model"], fingerprint=manifest["fingerprint"], k=int(manifest["k"]), width=int(manifest["width"]),
                  saes=saes, metrics=manifest.get("metrics", {}), corpus=manifest.get("corpus", ""), tokens=int(manifest.get("tokens", 0)))
