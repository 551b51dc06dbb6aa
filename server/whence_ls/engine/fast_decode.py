"""A decoding forward for Llama-family models that reads the weights at the memory's speed.

One decoding forward of a small model on a CPU is a chain of matrix-vector products, so its
time is the time to read the weights. transformers' forward reads them at about half the speed
the memory allows (`whence-ls bench generate` shows the rows), for three reasons this module
removes:

- layout: `nn.Linear` keeps a weight as [out, in] and a one-row product then walks short rows
  (576 floats for the embedded model) with a reduction at the end of each; the same product on
  the transposed weight, [in, out], streams long rows and runs ~2x faster on this machine's
  BLAS. Each wide weight (out >= in: q/k/v, o, gate/up, the output head) is therefore stored
  transposed, and the model's own modules are given views of that storage, so nothing is kept
  twice except the output head of a tied model (the embedding needs its rows);
- fusion: q, k and v are one product, gate and up another (fewer, longer rows);
- a KV cache written in place (`KVCache`) instead of concatenated at every step, and an
  attention over it whose softmax is at hand for the live rows (`attribution/live_rows.py`)
  instead of recomputed by hooks.

The arithmetic is the model's own in fp32 (tests compare logits, tokens and scores with
transformers' forward). Two faster precisions read fewer bytes, through torch's x86 quantised
engine (fbgemm): `fp16` stores every weight in fp16 and multiplies in fp32 (half the bytes);
`int8` stores most in int8 (a quarter; see `_Int8` and `_operand`). `whence-ls bench generate`
measures their speed and their divergence from fp32.

Families other than plain Llama (biases, qk-norm, sliding windows, other activations) keep
transformers' forward: `supports` says which.
"""

from __future__ import annotations

import torch

# forwards feeding more tokens than this (prefill chunks) use the fused attention kernel; the
# shorter ones (one token, or one plus its drafts) compute their softmax here, where the live
# rows can read it for free
MANUAL_ATTENTION_TOKENS = 16
PRECISIONS = ("fp32", "fp16", "int8")
# a fixed text whose activations set int8's smoothing scales (see `_Int8`): code of this package,
# not any benchmark's prompt
CALIBRATION_TOKENS = 512


def supports(model) -> str | None:
    """Why the fast forward cannot run `model` (None: it can)."""
    config = getattr(model, "config", None)
    if type(model).__name__ != "LlamaForCausalLM" or config is None:
        return f"{type(model).__name__} is not a plain Llama"
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return "the model has biases"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act}"
    if getattr(config, "sliding_window", None):
        return "sliding-window attention"
    if getattr(config, "pretraining_tp", 1) != 1:
        return "tensor-parallel pretraining layout"
    return None


class _KVLayer:
    """One layer's view of a `KVCache`, shaped like transformers' cache layers ([1, kv, L, d])."""

    def __init__(self, cache: "KVCache", index: int) -> None:
        self._cache, self._index = cache, index

    @property
    def keys(self) -> torch.Tensor:
        return self._cache.keys[self._index, :, : self._cache.length].unsqueeze(0)

    @property
    def values(self) -> torch.Tensor:
        return self._cache.values[self._index, :, : self._cache.length].unsqueeze(0)


class KVCache:
    """Keys and values of every layer, preallocated and written in place; grows by doubling.

    The subset of transformers' cache API that generation and the prefix cache use:
    `get_seq_length`, `crop(-n)` (dropping the newest entries is exact), `layers[i].keys`."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, *, dtype: torch.dtype, device: torch.device,
                 capacity: int = 512) -> None:
        self.keys = torch.zeros(layers, kv_heads, capacity, head_dim, dtype=dtype, device=device)
        self.values = torch.zeros_like(self.keys)
        self.length = 0
        self.layers = [_KVLayer(self, i) for i in range(layers)]

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, count: int) -> None:
        """transformers' convention: a negative count removes that many newest entries."""
        if count >= 0:
            raise ValueError("crop takes a negative count (the entries to remove)")
        self.length = max(0, self.length + count)

    def prefix_copy(self, length: int) -> "KVCache":
        """A new cache holding this one's first `length` positions, with room to grow past them."""
        layers, kv_heads, _, head_dim = self.keys.shape
        copied = KVCache(layers, kv_heads, head_dim, dtype=self.keys.dtype, device=self.keys.device,
                         capacity=length + 256)  # a completion's tail and its tokens; `reserve` grows it
        copied.keys[:, :, :length] = self.keys[:, :, :length]
        copied.values[:, :, :length] = self.values[:, :, :length]
        copied.length = length
        return copied

    def reserve(self, length: int) -> None:
        capacity = self.keys.shape[2]
        if length <= capacity:
            return
        while capacity < length:
            capacity *= 2
        grown = torch.zeros(*self.keys.shape[:2], capacity, self.keys.shape[3], dtype=self.keys.dtype, device=self.keys.device)
        grown_values = torch.zeros_like(grown)
        grown[:, :, : self.length] = self.keys[:, :, : self.length]
        grown_values[:, :, : self.length] = self.values[:, :, : self.length]
        self.keys, self.values = grown, grown_values


class _Fp16:
    """A weight stored in fp16 and multiplied in fp32 (torch's x86 engine, fbgemm): half the
    bytes of fp32, and a rounding of each weight to 11 significant bits."""

    def __init__(self, weight: torch.Tensor) -> None:  # weight: [out, in]
        self.packed = torch.ops.quantized.linear_prepack_fp16(weight.detach().float().contiguous(), None)

    def times(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic_fp16(x, self.packed)


class _Int8:
    """A weight in int8 with a scale per output channel, multiplied with activations quantised to
    8 bits per row at each product (torch's x86 engine, fbgemm), a quarter of fp32's bytes.

    A few activation channels are far larger than the rest (after a norm especially), and one
    scale per row then leaves the others a handful of levels. SmoothQuant's remedy (Xiao et
    al. 2023): divide each input channel by s_j = max|x_j|^a / max|w_j|^(1-a) and multiply the
    weight's column by it, the same product with the range moved into the weight. `act_max`
    (max |x_j| over a calibration text) comes from `FastDecoder`."""

    ALPHA = 0.8  # measured: 0.5 and 0.8 on the embedded model, 0.8 diverged least

    def __init__(self, weight: torch.Tensor, act_max: torch.Tensor) -> None:
        weight = weight.detach().float()
        smooth = (act_max.float().clamp(min=1e-5) ** self.ALPHA / weight.abs().amax(dim=0).clamp(min=1e-5) ** (1 - self.ALPHA))
        smooth = smooth.clamp(min=1e-5)
        self.inverse = (1.0 / smooth).to(weight.dtype)
        weight = weight * smooth
        scales = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
        quantised = torch.quantize_per_channel(weight, scales.double(), torch.zeros(weight.shape[0], dtype=torch.long),
                                               0, torch.qint8)
        self.packed = torch.ops.quantized.linear_prepack(quantised, None)

    def times(self, x: torch.Tensor) -> torch.Tensor:
        # full 8-bit activations: 7 (reduce_range) diverged 4x more from fp32 on the embedded model
        return torch.ops.quantized.linear_dynamic(x * self.inverse, self.packed, False)


def _mm(x: torch.Tensor, weight) -> torch.Tensor:
    return weight.times(x) if isinstance(weight, (_Int8, _Fp16)) else x @ weight


class FastDecoder:
    """The model's forward, rebuilt from its own weights (see the module's docstring)."""

    def __init__(self, model, precision: str = "fp32", calibration_ids: list[int] | None = None) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}: use {' or '.join(PRECISIONS)}")
        reason = supports(model)
        if reason is not None:
            raise ValueError(f"the fast forward does not run this model: {reason}")
        if precision == "int8" and not calibration_ids:
            raise ValueError("int8 needs calibration_ids: a text whose activations set its smoothing scales")
        config = model.config
        self.model = model
        self.precision = precision
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scaling = self.head_dim ** -0.5
        self.intermediate = config.intermediate_size
        inner = model.model
        self.embed = inner.embed_tokens
        self.norm = inner.norm
        self.rotary = inner.rotary_emb
        self.layers = list(inner.layers)
        self.qkv, self.o, self.gate_up, self.down = [], [], [], []
        kinds = {"qkv": lambda l: (l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj),
                 "o": lambda l: (l.self_attn.o_proj,), "gate_up": lambda l: (l.mlp.gate_proj, l.mlp.up_proj),
                 "down": lambda l: (l.mlp.down_proj,)}
        maxima = _activation_maxima(model, calibration_ids) if precision == "int8" else None
        with torch.no_grad():
            for i, layer in enumerate(self.layers):
                for kind, modules in kinds.items():
                    getattr(self, kind).append(_operand(precision, kind, modules(layer), maxima[kind][i] if maxima else None))
            self.head = _operand(precision, "head", (model.lm_head,), None, keep_embedding=self.embed.weight)

    def new_cache(self, capacity: int = 512) -> KVCache:
        weight = self.embed.weight
        return KVCache(len(self.layers), self.kv_heads, self.head_dim, dtype=weight.dtype, device=weight.device, capacity=capacity)

    def forward(self, ids: list[int], cache: KVCache, *, logits_to_keep: int = 1, hidden_states: bool = False,
                live=None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Run `ids` after what `cache` holds; returns the logits of the last `logits_to_keep`
        positions, [keep, vocab], and, when asked, the hidden states as transformers gives them
        (the embeddings, then every layer's output, the last one after the final norm), each
        [1, len(ids), hidden]. `live`: a `LiveAttention` that receives each layer's softmax of
        the trailing positions."""
        fed = len(ids)
        start = cache.length
        cache.reserve(start + fed)
        device = self.embed.weight.device
        h = self.embed(torch.tensor(ids, device=device))  # [T, hidden]
        positions = torch.arange(start, start + fed, device=device)
        cos, sin = self.rotary(h[None], positions[None])
        cos, sin = cos[0].to(h.dtype), sin[0].to(h.dtype)  # [T, d]
        states = [h[None]] if hidden_states else None
        end = start + fed
        mask = None
        if 1 < fed:
            mask = torch.arange(end, device=device)[None, :] <= positions[:, None]  # [T, L]: causal, after the cache
        q_size, kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
        for i, layer in enumerate(self.layers):
            x = _rms_norm(h, layer.input_layernorm)
            qkv = _mm(x, self.qkv[i])
            # q and k rotated together: half the small operations of rotating each (a one-token
            # forward is as much these operations' overhead as it is reading weights)
            qk = qkv[:, : q_size + kv_size].view(fed, self.heads + self.kv_heads, self.head_dim).transpose(0, 1)
            qk = qk * cos + _rotate_half(qk) * sin
            q = qk[: self.heads]
            v = qkv[:, q_size + kv_size :].view(fed, self.kv_heads, self.head_dim).transpose(0, 1)
            cache.keys[i, :, start:end] = qk[self.heads :]
            cache.values[i, :, start:end] = v
            keys, values = cache.keys[i, :, :end], cache.values[i, :, :end]
            attended = self._attention(q, keys, values, mask, fed, live, i)  # [T, heads * d]
            h = h + _mm(attended, self.o[i])
            x = _rms_norm(h, layer.post_attention_layernorm)
            gate_up = _mm(x, self.gate_up[i])
            h = h + _mm(torch.nn.functional.silu(gate_up[:, : self.intermediate]) * gate_up[:, self.intermediate :], self.down[i])
            if states is not None and i < len(self.layers) - 1:
                states.append(h[None])
        cache.length = end
        h = _rms_norm(h[-max(logits_to_keep, 1):] if states is None else h, self.norm)
        if states is not None:
            states.append(h[None])
            h = h[-max(logits_to_keep, 1):]
        return _mm(h, self.head), (tuple(states) if states is not None else None)

    def products_only(self) -> torch.Tensor:
        """Every product of a one-token decoding step, in a step's order, on a constant input and
        without the attention, norms, rotations and additions between them: the time of reading
        the weights once, the floor of a step (`whence-ls bench generate` sets it beside whole
        steps, which says how much of a step is anything but reading weights)."""
        hidden = self.embed.weight.shape[1]
        x = torch.full((1, hidden), 0.01, dtype=self.embed.weight.dtype, device=self.embed.weight.device)
        wide = torch.full((1, self.intermediate), 0.01, dtype=x.dtype, device=x.device)
        for i in range(len(self.layers)):
            _mm(x, self.qkv[i])
            _mm(x, self.o[i])
            _mm(x, self.gate_up[i])
            _mm(wide, self.down[i])
        return _mm(x, self.head)

    def _attention(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None,
                   fed: int, live, layer: int) -> torch.Tensor:
        heads, kv_heads, d = self.heads, self.kv_heads, self.head_dim
        length = keys.shape[1]
        if fed > MANUAL_ATTENTION_TOKENS:
            out = torch.nn.functional.scaled_dot_product_attention(
                q[None], keys[None], values[None], attn_mask=mask, enable_gqa=kv_heads != heads, scale=self.scaling)[0]
            if live is not None:
                tail = min(live.trailing, fed)
                live.observe(layer, self._softmax(q[:, -tail:], keys, None if mask is None else mask[-tail:], tail))
            return out.transpose(0, 1).reshape(fed, heads * d)
        probs = self._softmax(q, keys, mask, fed)  # [T, heads, L]
        if live is not None:
            live.observe(layer, probs[-min(live.trailing, fed):])
        # query heads come in groups that share one key head (head h reads key head h // group)
        grouped = probs.transpose(0, 1).reshape(kv_heads, (heads // kv_heads) * fed, length)
        out = (grouped @ values).view(heads, fed, d)
        return out.transpose(0, 1).reshape(fed, heads * d)

    def _softmax(self, q: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None, fed: int) -> torch.Tensor:
        """softmax(q k^T * scaling) of `fed` query positions over every key: [fed, heads, L]."""
        heads, kv_heads = self.heads, self.kv_heads
        length = keys.shape[1]
        grouped = q.reshape(kv_heads, (heads // kv_heads) * fed, self.head_dim)
        scores = (grouped @ keys.transpose(-1, -2)).view(heads, fed, length) * self.scaling
        if mask is not None:
            scores = scores.masked_fill(~mask[None], float("-inf"))
        return torch.softmax(scores.float(), dim=-1).to(q.dtype).transpose(0, 1)


def _rms_norm(x: torch.Tensor, norm) -> torch.Tensor:
    """The model's RMSNorm as torch's one fused operation (fewer calls than transformers' eight);
    it differs from transformers' in the last bits of fp32 (the tests' tolerance holds)."""
    return torch.nn.functional.rms_norm(x, norm.weight.shape, norm.weight, norm.variance_epsilon)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _operand(precision: str, kind: str, modules, act_max: torch.Tensor | None, keep_embedding: torch.Tensor | None = None):
    """The right-hand operand of one product for `precision`: fp32 as `_fused` lays it out; fp16
    everywhere; int8 for q/k/v, o and gate/up, and fp16 for down and the output head, whose
    inputs (the MLP's products; the last hidden state) quantise worst: measured on the embedded
    model, int8 there alone diverged from fp32 ten times more than all the others together."""
    if precision == "fp32":
        return _fused(*modules, keep_embedding=keep_embedding)
    weight = torch.cat([m.weight for m in modules]) if len(modules) > 1 else modules[0].weight
    if precision == "int8" and kind not in ("down", "head"):
        return _Int8(weight, act_max)
    return _Fp16(weight)


def _activation_maxima(model, ids: list[int]) -> dict[str, list[torch.Tensor]]:
    """max |x_j| of each product's input channels over one forward of `ids` (the model's own)."""
    inputs = {"qkv": "self_attn.q_proj", "o": "self_attn.o_proj", "gate_up": "mlp.gate_proj", "down": "mlp.down_proj"}
    layers = list(model.model.layers)
    maxima: dict[str, list] = {kind: [None] * len(layers) for kind in inputs}
    hooks = []
    for i, layer in enumerate(layers):
        for kind, name in inputs.items():
            def record(_module, args, kind=kind, i=i):
                x = args[0].detach()
                maxima[kind][i] = x.abs().reshape(-1, x.shape[-1]).amax(dim=0).float()
            hooks.append(layer.get_submodule(name).register_forward_pre_hook(record))
    try:
        with torch.inference_mode():
            model(input_ids=torch.tensor([ids], device=model.device), use_cache=False, logits_to_keep=1)
    finally:
        for hook in hooks:
            hook.remove()
    return maxima


def _fused(*modules: torch.nn.Linear, keep_embedding: torch.Tensor | None = None):
    weights = [m.weight for m in modules]
    rows = sum(w.shape[0] for w in weights)
    if rows < weights[0].shape[1]:
        return (torch.cat(weights) if len(weights) > 1 else weights[0]).detach().t()
    transposed = torch.cat([w.detach() for w in weights]).t().contiguous()  # [in, sum of out]
    offset = 0
    for module, weight in zip(modules, weights):
        out = weight.shape[0]
        if keep_embedding is None or weight.data_ptr() != keep_embedding.data_ptr():
            module.weight = torch.nn.Parameter(transposed[:, offset : offset + out].t(), requires_grad=weight.requires_grad)
        offset += out
    return transposed
