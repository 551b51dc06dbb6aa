"""The features of a trained SAE set, for people: each feature's top-activating snippets from
the training corpus and a label taken from them, and, for a token of a record, its strongest
features with the context lines their activation came from.

Labels come from the snippets only (no other model): the token the feature fires on when most
of its top snippets share it (`return`), else the two commonest (`self` / `cls`), and the token
before it when that is what they share (after `.`). A feature is marked "induction" when at
three quarters of its top snippets the next token can be copied: the pair (this token, next
token) already occurred earlier in the window, which is where induction heads act.

Where a feature's activation comes from is exact, not estimated: the SAE reads hook_z, each
head's output is its attention-weighted sum of value vectors, so the pre-activation splits into
one term per (head, context position), which the record's units sum into lines.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch

from whence_ls.engine.sae.activations import Window, attention_layers
from whence_ls.engine.sae.model import SaeSet

TOP_EXAMPLES = 8
# share of a feature's top snippets that must be copy places for an "induction" mark: about one
# position in five of standard-library code is one, so a half would mark features that merely
# live in repetitive code (tables, encodings)
INDUCTION_SHARE = 0.75
INDEX_FILE = "features.json.gz"  # ~10x smaller than the JSON: it ships with the package


def build_feature_index(lm, sae_set: SaeSet, found: list[Window], where: torch.Tensor, activations: dict[int, torch.Tensor],
                        top: int = TOP_EXAMPLES) -> dict:
    """{"layers": {layer: [feature entry, ...]}}: per feature its label, induction mark, firing
    frequency and top examples (path, 1-based line, the line's code, the token, activation)."""
    tokenizer = lm.tokenizer
    result: dict = {"layers": {}}
    for layer, sae in sae_set.saes.items():
        x = activations[layer]
        best_values = torch.full((top, sae.width), -1.0)
        best_rows = torch.zeros((top, sae.width), dtype=torch.long)
        fired = torch.zeros(sae.width)
        with torch.no_grad():
            for start in range(0, x.shape[0], 4096):
                codes = sae.encode(x[start : start + 4096])
                fired += (codes > 0).sum(dim=0)
                values = torch.cat([best_values, codes], dim=0)
                rows = torch.cat([best_rows, torch.arange(start, start + codes.shape[0]).unsqueeze(1).expand(-1, sae.width)], dim=0)
                kept = torch.topk(values, top, dim=0)
                best_values, best_rows = kept.values, torch.gather(rows, 0, kept.indices)
        entries = []
        for feature in range(sae.width):
            examples = []
            tokens, befores, copies = [], [], 0
            for k in range(top):
                value = float(best_values[k, feature])
                if value <= 0:
                    break
                window_index, position = (int(v) for v in where[int(best_rows[k, feature])])
                window = found[window_index]
                examples.append(_example(tokenizer, window, position, value))
                tokens.append(_visible(examples[-1]["token"]))
                befores.append(_visible(tokenizer.decode([window.ids[position - 1]])) if position > 0 else "")
                copies += _copyable(window.ids, position)
            entries.append({
                "label": _label(tokens, befores),
                "induction": bool(examples) and copies / len(examples) >= INDUCTION_SHARE,
                "frequency": round(float(fired[feature]) / max(1, x.shape[0]), 6),
                "examples": examples,
            })
        result["layers"][str(layer)] = entries
    return result


def _example(tokenizer, window: Window, position: int, value: float) -> dict:
    start, _ = window.offsets[position]
    line_start = window.text.rfind("\n", 0, start) + 1
    line_end = window.text.find("\n", start)
    line_end = len(window.text) if line_end == -1 else line_end
    return {"path": window.path, "line": window.text.count("\n", 0, start) + 1,
            "code": window.text[line_start:line_end].strip()[:160], "token": tokenizer.decode([window.ids[position]]),
            "activation": round(value, 3)}


def _copyable(ids: list[int], position: int) -> int:
    """1 when (ids[position], ids[position + 1]) occurs earlier in the window."""
    if position + 1 >= len(ids):
        return 0
    pair = (ids[position], ids[position + 1])
    return int(any((ids[j], ids[j + 1]) == pair for j in range(position - 1)))


def _visible(text: str) -> str:
    """Whitespace a reader can see in a label: a newline as ⏎, indentation as ·."""
    return text.strip() or text.replace("\n", "⏎").replace(" ", "·").replace("\t", "→") or "∅"


def _label(tokens: list[str], befores: list[str]) -> str:
    if not tokens:
        return "(never fires)"
    common = Counter(tokens).most_common(2)
    token, count = common[0]
    label = f"`{token}`" if count * 2 >= len(tokens) else " / ".join(f"`{t}`" for t, _ in common)
    before, before_count = Counter(befores).most_common(1)[0]
    if before and before_count * 2 >= len(befores) and before_count >= 2:
        label += f" after `{before}`"
    return label


def save_feature_index(index: dict, directory: Path) -> None:
    import gzip

    target = directory / INDEX_FILE
    temporary = target.with_name(INDEX_FILE + ".saving")
    # mtime 0: the same index gives the same bytes (a shipped file does not change in git for nothing)
    with gzip.GzipFile(temporary, "wb", mtime=0) as handle:
        handle.write(json.dumps(index).encode("utf-8"))
    temporary.replace(target)


def load_feature_index(directory: Path) -> dict | None:
    import gzip

    try:
        with gzip.open(directory / INDEX_FILE, "rb") as handle:
            return json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError, EOFError):
        return None


def token_features(lm, sae_set: SaeSet, index: dict | None, record, token_index: int, units, top: int = 3,
                   cancel=None) -> list[dict] | None:
    """The strongest features at the position that predicted token `token_index` of `record`,
    each with its label, one top snippet and the context lines its activation came from; None
    when `cancel` was set during its forwards (they stop at the next layer)."""
    from whence_ls.engine.attribution.attention_probe import _stopper, attention_rows
    from whence_ls.engine.taps import Preempted
    from whence_ls.engine.attribution.base import TeacherForced

    job = TeacherForced.of(lm, record, cancel)
    position = job.target_position(token_index)
    layers = sorted(sae_set.saes)
    modules = attention_layers(lm.model)
    values: dict[int, torch.Tensor] = {}
    hooks = [modules[layer].v_proj.register_forward_hook(lambda _m, _a, out, layer=layer: values.__setitem__(layer, out.detach()))
             for layer in layers]
    hooks += [module.register_forward_pre_hook(_stopper(job)) for module in modules]
    from whence_ls.engine.sae.activations import captured_z

    try:
        with torch.inference_mode(), captured_z(lm.model, layers) as store:
            lm.model(input_ids=job.ids[: position + 1].unsqueeze(0), use_cache=False, logits_to_keep=1)
        weights = attention_rows(job, [token_index]).weights[0]  # [layers * heads, end]
    except Preempted:
        return None
    finally:
        for hook in hooks:
            hook.remove()
    candidates = []
    for layer in layers:
        sae = sae_set.saes[layer]
        z = store[layer][0, position].float()
        codes = sae.encode(z.unsqueeze(0))[0]
        for feature in torch.nonzero(codes > 0).flatten().tolist():
            candidates.append((float(codes[feature]), layer, feature))
    candidates.sort(reverse=True)
    results = []
    for activation, layer, feature in candidates[:top]:
        entry = (index or {}).get("layers", {}).get(str(layer), [])
        info = entry[feature] if feature < len(entry) else {}
        contributions = _position_contributions(lm, modules[layer], sae_set.saes[layer], feature, values[layer][0].float(),
                                                weights, layer, position)
        results.append({
            "layer": layer, "feature": feature, "activation": round(activation, 3),
            "label": info.get("label", "(no feature index: run `whence-ls model train-sae`)"),
            "induction": bool(info.get("induction", False)),
            "example": (info.get("examples") or [None])[0],
            "sources": _sources(contributions, units, job.context_len),
        })
    return results


def _position_contributions(lm, module, sae, feature: int, v: torch.Tensor, weights: torch.Tensor, layer: int, position: int) -> torch.Tensor:
    """Per context position, its term of the feature's pre-activation: sum over heads h of
    attention(h, position -> s) * (value(h, s) . encoder slice of h)."""
    head_dim = int(module.head_dim)
    heads = module.o_proj.in_features // head_dim
    kv_heads = v.shape[-1] // head_dim
    per_layer = weights.shape[0] // len(attention_layers(lm.model))
    attention = weights[layer * per_layer : layer * per_layer + heads, : position + 1].float()  # [heads, T]
    encoder = sae.W_enc[:, feature].detach().float().view(heads, head_dim)
    values = v[: position + 1].view(position + 1, kv_heads, head_dim)
    group = heads // kv_heads
    per_head = torch.einsum("tkd,hd->hkt", values, encoder)  # [heads, kv, T]
    chosen = torch.stack([per_head[h, h // group] for h in range(heads)])  # [heads, T]
    return (attention * chosen).sum(dim=0)  # [T]


def _sources(contributions: torch.Tensor, units, context_len: int, top: int = 3) -> list[dict]:
    scores = units.aggregate(torch.nn.functional.pad(contributions[:context_len], (0, max(0, context_len - contributions.shape[0])))[:context_len])
    positive = scores.clamp_min(0)
    total = float(positive.sum()) + float(contributions[context_len:].clamp_min(0).sum())
    order = torch.argsort(positive, descending=True)[:top].tolist()
    return [{"unit": int(u), "share": round(float(positive[u]) / total, 3)} for u in order if total > 0 and float(positive[u]) > 0]
