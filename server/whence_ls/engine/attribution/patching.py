"""Attribution patching on the source mask (AtP*, Kramár et al. 2024): a first-order estimate
of what the reference's ablation does, from one forward and one backward per row.

The reference removes a source's positions from every attention head's keys. For one head at
one query position, with attention share `s` on the source's positions and `v` their
attention-weighted mean value, the softmax renormalises over the positions left, so the head's
output `o` becomes `(o - s v) / (1 - s)`: a change of `s (o - v) / (1 - s)` (AtP*'s fix for
attention: a plain linear patch of the attention pattern would miss the renormalisation). The
change at every head, query position and layer is weighted by the gradient of the token's
log-probability with respect to that head's output, and summed. Query positions inside the
source are left out (once its keys are hidden nobody reads what they compute), except the
token's own position when it is one (the first token after the cursor is read at the last
context token: the reference lets it still attend to itself).

The row's score of a source is the estimated effect of keeping it (minus the estimated change
when it is hidden), in log-odds like the ablation's Lasso coefficients, so the two read alike.
What it misses: second-order effects (a source that matters only together with another one,
and the knock-on change of what later layers attend to).

Not a registered method on its own: in `whence-ls bench attribution-estimators` (24 suite
targets, 154 rows, docs/bench-attribution.md) it ranked better than the calibrated estimator (LDS
0.44 vs 0.40, top-1 52% vs 40%), but a backward per row over the whole context costs ~11
forward-equivalents for a line's 8 rows. The per-line mode (one backward for the line) costs 2.4
but ranks worse (0.29, 38%). The tail mode (`tail=`: only the last context tokens' and the
completion's queries count, the context before them a cache without gradients) ranks as well as
the whole context for a quarter of the cost; mixed with the stacked rows (`stacked_patching.py`)
it was the default until leave-one-out of the stacked rows' top lines ranked better
(`stacked_leave_one_out.py`).
"""

from __future__ import annotations

import torch

from whence_ls.engine.attribution.ablation import ablatable_sources, position_owner
from whence_ls.engine.attribution.base import ALL_ROWS, RawRow, TeacherForced, ensure_no_parameter_grads
from whence_ls.errors import WhenceError
from whence_ls.engine.taps import Preempted, attention_modules, eager_attention

# a query that puts (nearly) all its attention on one source would divide by ~0: the estimate
# is first order anyway, and the ablation keeps the sink, so such shares are capped
MAX_SHARE = 0.99


class AttributionPatching:
    name = "attribution_patching"
    rank_by_abs = False  # signed: a source can argue against the token
    rows_per_batch = ALL_ROWS  # the forward is shared; one (batched) backward per row

    def __init__(self, per_line: bool = False, tail: int | None = None, precision: str = "fp32") -> None:
        # per_line: one backward for all the asked rows together (the gradient of their summed
        # log-odds), so every row gets the same estimate: the line's sources, at the cost of one
        # forward and one backward instead of one backward per row
        self.per_line = per_line
        # tail: only the last `tail` context positions and the completion are queries whose
        # change counts (the verified rows' approximation): the context before them is a cache
        # without gradients, so a row's backward runs over a few dozen positions, not the context
        self.tail = tail
        # "bf16": forward and backward on verification's bf16 copy of the model (`masked_model.py`)
        self.precision = precision

    def compute(self, job: TeacherForced, indices: list[int], unit_map) -> dict[int, RawRow]:
        sources = ablatable_sources(unit_map)
        if not sources:
            return {i: RawRow(unit_scores=torch.zeros(len(unit_map.units), dtype=torch.float64)) for i in indices}
        if job.cancel is not None and job.cancel.is_set():
            return {}
        groups = completion_lines(job, indices) if self.per_line else [indices]
        rows = {}
        model = None
        if self.precision != "fp32":
            from whence_ls.engine.attribution.masked_model import masked_model

            model = masked_model(job.lm, self.precision)
        for group in groups:
            if job.cancel is not None and job.cancel.is_set():
                break
            hide = hidden_source_effects(job, group, unit_map, sources, per_line=self.per_line, tail=self.tail,
                                         model=model)  # [rows, sources], log-odds
            for k, index in enumerate(group):
                scores = torch.zeros(len(unit_map.units), dtype=torch.float64)
                scores[torch.tensor(sources)] = -hide[k]
                rows[index] = RawRow(unit_scores=scores, extra={"per_line": True} if self.per_line else {})
        return rows


def completion_lines(job: TeacherForced, indices: list[int]) -> list[list[int]]:
    """The asked rows grouped by the completion line their token starts on, in order."""
    text = job.record.text
    groups: dict[int, list[int]] = {}
    for index in indices:
        groups.setdefault(text.count("\n", 0, job.record.tokens[index].start), []).append(index)
    return list(groups.values())


def source_matrix(unit_map, sources: list[int], length: int) -> torch.Tensor:
    """[length, sources] one-hot: which source removing takes each position away (none for
    sinks, special tokens and the completion)."""
    owner = position_owner(unit_map)
    column = {s: c for c, s in enumerate(sources)}
    matrix = torch.zeros(length, len(sources))
    for position, unit in enumerate(owner[:length]):
        if unit in column:
            matrix[position, column[unit]] = 1.0
    return matrix


def head_output_change(attention: torch.Tensor, values: torch.Tensor, grads: torch.Tensor, sources: torch.Tensor,
                       first_query: int = 0, positions_of: list[torch.Tensor] | None = None) -> torch.Tensor:
    """grad . (change of each head's output when each source's keys are hidden), summed over
    heads and query positions: [rows, sources].

    attention [H, Q, L] (query, key); values [H, L, d]; grads [rows, H, Q, d] (d metric / d head
    output); sources [L, S] one-hot position -> source; the queries are positions
    `first_query ..` of the L. The change at query q is
    (s o - sum_k a_qk v_k [k in S]) / (1 - s), o = sum_k a_qk v_k, s = sum_k a_qk [k in S].
    `positions_of`: each source's positions (`source_positions(sources)`), when the caller has them.
    """
    output = attention @ values  # [H, Q, d]
    share = (attention @ sources).clamp(max=MAX_SHARE)  # [H, Q, S]
    grad_output = (grads * output.unsqueeze(0)).sum(-1)  # [rows, H, Q]
    # each source's part of every head's output, sum over its keys of a_qk v_k: a product per
    # source over its own positions (H x Q x L x d in all), then one contraction with the rows'
    # gradients, instead of every row's gradient against every key (rows x H x Q x L x d)
    positions_of = source_positions(sources) if positions_of is None else positions_of
    parts = torch.stack([attention[:, :, at] @ values[:, at, :] for at in positions_of], dim=2)  # [H, Q, S, d]
    hidden_part = torch.einsum("rhqd,hqsd->rhqs", grads, parts)
    change = (share.unsqueeze(0) * grad_output.unsqueeze(-1) - hidden_part) / (1.0 - share.unsqueeze(0))
    # a query inside the source: nobody reads it once the source is hidden
    reads = 1.0 - sources[first_query:first_query + attention.shape[1]]
    return (change * reads.unsqueeze(0).unsqueeze(0)).sum(dim=(1, 2))


def source_positions(sources: torch.Tensor) -> list[torch.Tensor]:
    """Each source's positions, from the one-hot [L, S] matrix."""
    return [torch.nonzero(sources[:, column]).flatten() for column in range(sources.shape[1])]


def own_position_change(attention: torch.Tensor, values: torch.Tensor, grads: torch.Tensor, sources: torch.Tensor,
                        positions: list[int], first_query: int = 0) -> torch.Tensor:
    """The part `head_output_change` leaves out for a row whose own position lies inside a
    source (the first token after the cursor is read at the last context token): that query's
    output is the logit's, so it is read, and the reference keeps its attention to itself while
    hiding the rest of the source. [rows, sources], nonzero only in that source's column.
    `first_query`: the position of attention's and grads' first query (as in `head_output_change`)."""
    result = torch.zeros(grads.shape[0], sources.shape[1], dtype=grads.dtype, device=grads.device)
    for k, position in enumerate(positions):
        inside = torch.nonzero(sources[position]).flatten()
        if inside.numel() == 0:
            continue
        column = int(inside[0])
        hidden = sources[:, column].clone()
        hidden[position] = 0.0  # the removed query still attends to itself
        query = position - first_query
        row = attention[:, query]  # [H, L]
        share = (row @ hidden).clamp(max=MAX_SHARE)  # [H]
        output = torch.einsum("hl,hld->hd", row, values)
        hidden_part = torch.einsum("hl,hld->hd", row * hidden, values)
        change = (share.unsqueeze(-1) * output - hidden_part) / (1.0 - share.unsqueeze(-1))
        result[k, column] = (grads[k, :, query] * change).sum()
    return result


def hidden_source_effects(job: TeacherForced, indices: list[int], unit_map, sources: list[int], *,
                          per_line: bool = False, tail: int | None = None, prefix: list | None = None,
                          first: int | None = None, model=None) -> torch.Tensor:
    """[rows, sources]: the first-order change of each row's log-odds when each source is hidden
    from attention (the reference's removal of one source). `per_line`: of the rows' summed
    log-odds, one backward, the same for every row. `tail`: only the last `tail` context
    positions and the completion count as queries (the rest is a cache without gradients);
    `prefix`: the unmasked keys and values per layer that cache is made of (`prefix_kv.py`), else
    a forward of its own; `first`: the first query that counts, given (rows asked a few at a time
    keep the queries they would have had asked together), else `tail_start`; `model`: the model to
    run (verification's bf16 copy, `masked_model.py`), else the record's."""
    model = job.lm.model if model is None else model
    ensure_no_parameter_grads(model)
    modules = attention_modules(model)
    positions = [job.target_position(i) for i in indices]
    end = max(positions) + 1
    first = tail_start(job, indices, tail) if first is None else first
    values: list[torch.Tensor | None] = [None] * len(modules)
    weights: list[torch.Tensor | None] = [None] * len(modules)
    deltas: list[torch.Tensor | None] = [None] * len(modules)
    hooks = []

    def keep_values(layer: int):
        def hook(_module, _inputs, output):
            values[layer] = output.detach()[0]  # [Q, kv_heads * head_dim]

        return hook

    def keep_weights(layer: int):
        def hook(_module, _inputs, output):
            found = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if found is None:
                raise WhenceError("attribution patching: the attention module returned no weights (eager attention needed)")
            weights[layer] = found.detach()[0]  # [H, Q, L]

        return hook

    def open_output(layer: int):
        # a zero added to the heads' concatenated output before o_proj: its gradient is the
        # gradient with respect to every head's output at every position, through all later layers
        def hook(_module, args):
            delta = torch.zeros_like(args[0], requires_grad=True)
            if job.cancel is not None:
                delta.register_hook(stop_if_cancelled)
            deltas[layer] = delta
            return (args[0] + delta,)

        return hook

    def stop_if_cancelled(grad):
        # the backward stops at the next layer too (`stops_at_a_layer` stops the forward)
        if job.cancel.is_set():
            raise Preempted()
        return grad

    device = job.ids.device
    cache = None
    if first > 0:
        from transformers import DynamicCache

        from whence_ls.engine.attribution.prefix_kv import prefix_forward

        kept = prefix if prefix is not None else prefix_forward(job, model, first)
        if all(keys.shape[2] >= first for keys, _ in kept):
            # copies outside inference mode: the tail's forward saves the keys for its backward
            kept = [(keys[:, :, :first].clone(), values_[:, :, :first].clone()) for keys, values_ in kept]
            context_values = [values_[0] for _, values_ in kept]  # [kv_heads, first, d]
            cache = DynamicCache(ddp_cache_data=kept)
        else:
            first = 0  # a sliding-window layer kept only its last positions: the whole sequence runs
    head = model.get_output_embeddings()
    for layer, attention in enumerate(modules):
        hooks.append(attention.v_proj.register_forward_hook(keep_values(layer)))
        hooks.append(attention.register_forward_hook(keep_weights(layer)))
        hooks.append(attention.o_proj.register_forward_pre_hook(open_output(layer)))
    targets = torch.tensor([job.target_id(i) for i in indices], device=device)
    try:
        with eager_attention(model), torch.enable_grad():
            cached = {getattr(job.lm, "cache_argument", "past_key_values"): cache} if cache is not None else {}
            # the body alone (its final norm included): the head runs once, in `_head_gradients`
            out = model.base_model(input_ids=job.ids[first:end].unsqueeze(0), use_cache=cache is not None, **cached)
            hidden = out.last_hidden_state[0, torch.tensor([p - first for p in positions], device=device)]  # [rows, D]
            # each row's log p depends on its own position's hidden state alone: its gradient
            # there comes from one small backward through the output head, and the rows' batched
            # backward starts below the head (through the head it would cost rows x rows x vocab)
            grad_hidden, logp = _head_gradients(model, head, hidden, targets)
            # d log-odds = d log p / (1 - p): the ablation's Lasso fits log-odds
            odds_scale = 1.0 / (-torch.expm1(logp.double().clamp(max=-1e-6)))
            if per_line:
                line = grad_hidden * odds_scale.to(grad_hidden.dtype).unsqueeze(1)
                grads = [g.unsqueeze(0) for g in torch.autograd.grad(hidden, deltas, grad_outputs=line)]  # per layer [1, Q, H * d]
            else:
                grads = _row_gradients(hidden, grad_hidden, deltas)  # per layer [rows, Q, H * d]
    finally:
        for hook in hooks:
            hook.remove()
    rows = 1 if per_line else len(indices)
    queries = end - first
    odds_scale = torch.ones(1, dtype=torch.float64) if per_line else odds_scale.cpu()
    own = positions if not per_line else None
    matrix = source_matrix(unit_map, sources, end).to(device)
    positions_of = source_positions(matrix)
    total = torch.zeros(rows, len(sources), dtype=torch.float64)
    for layer, module in enumerate(modules):
        attention = weights[layer].float()
        heads, head_dim = attention.shape[0], module.head_dim
        value = values[layer].float().view(queries, -1, head_dim).transpose(0, 1)  # [kv_heads, Q, d]
        if first > 0:
            value = torch.cat([context_values[layer].float(), value], dim=1)
        value = value.repeat_interleave(heads // value.shape[0], dim=0)  # [H, L, d]
        grad = grads[layer].float().view(rows, queries, heads, head_dim).transpose(1, 2)  # [rows, H, Q, d]
        change = head_output_change(attention, value, grad, matrix, first, positions_of)
        if own is not None:
            change = change + own_position_change(attention, value, grad, matrix, own, first)
        else:  # the line's gradient: each row's own position counts where it lies in a source
            change = change + own_position_change(attention, value, grad.expand(len(positions), -1, -1, -1), matrix,
                                                  positions, first).sum(0, keepdim=True)
        total += change.double().cpu()
    total = total * odds_scale.unsqueeze(1)
    return total.expand(len(indices), -1) if per_line else total


def tail_start(job: TeacherForced, indices: list[int], tail: int | None) -> int:
    """The first query whose change counts: 0 (every position), or `tail` positions before the
    first row's (never 0 then: the context before it comes from a cache)."""
    if tail is None:
        return 0
    return max(1, min(job.target_position(i) for i in indices) + 1 - tail)


def _head_gradients(model, head, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """d log p(target) / d hidden per row ([rows, D], each at its own position) and log p
    ([rows], detached): the output head (with the family's final soft cap, where it has one) run
    again on a detached copy of the hidden states."""
    loose = hidden.detach().requires_grad_(True)
    logits = head(loose).float()
    cap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    logp = torch.log_softmax(logits, dim=-1)[torch.arange(len(targets), device=targets.device), targets]
    (grad,) = torch.autograd.grad(logp.sum(), loose)
    return grad.to(hidden.dtype), logp.detach()


def _row_gradients(hidden: torch.Tensor, grad_hidden: torch.Tensor, deltas: list) -> list[torch.Tensor]:
    """d logp[k] / d delta, for every row k and layer, from each row's gradient at its own hidden
    state (`grad_hidden[k]` at position k): one batched backward (a vmapped backward), or a loop
    of backwards where batching has no rule."""
    count = hidden.shape[0]
    outputs = torch.zeros(count, *hidden.shape, dtype=hidden.dtype, device=hidden.device)  # [rows, rows, D]
    outputs[torch.arange(count), torch.arange(count)] = grad_hidden
    if count > 1:
        try:
            found = torch.autograd.grad(hidden, deltas, grad_outputs=outputs, is_grads_batched=True, retain_graph=True)
            return [g[:, 0] for g in found]
        except RuntimeError:
            pass
    per_row = [torch.autograd.grad(hidden, deltas, grad_outputs=outputs[k], retain_graph=k < count - 1) for k in range(count)]
    return [torch.stack([row[layer][0] for row in per_row]) for layer in range(len(deltas))]
