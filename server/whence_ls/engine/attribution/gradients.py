"""One teacher-forced forward over context + completion whose graph serves every gradient row.

The forward computes, for every completion token at once, its log-probability and its logit
margin over the runner-up; a row is then one backward from one of those scalars. Backwards run
batched (`is_grads_batched`: a vmapped backward over several one-hot output gradients) and the
graph is kept for the most recent record, so a hover that asks for one more row later pays one
backward, not a forward and a backward.
"""

from __future__ import annotations

import threading

import torch

from whence_ls.engine.attribution.base import TeacherForced, ensure_no_parameter_grads


class GradientGraph:
    def __init__(self, job: TeacherForced):
        model = job.lm.model
        ensure_no_parameter_grads(model)
        count = len(job.record.tokens)
        positions = torch.arange(job.context_len - 1, job.context_len - 1 + count, device=job.lm.device)
        targets = job.ids[job.context_len :]
        with torch.enable_grad():
            embeds = job.embedding(job.ids).detach().requires_grad_(True)
            out = model(inputs_embeds=embeds.unsqueeze(0), use_cache=False, logits_to_keep=positions)
            logits = out.logits[0].float()  # [count, vocab]
            logp = torch.log_softmax(logits, dim=-1)
            chosen = torch.arange(count, device=logits.device)
            self.logprob = logp[chosen, targets]
            runner = torch.tensor(
                [job.runner_up_id(i) if job.runner_up_id(i) is not None else -1 for i in range(count)], device=logits.device
            )
            # where the record has no runner-up, take the best other token from these logits
            masked = logits.detach().clone()
            masked[chosen, targets] = float("-inf")
            runner = torch.where(runner >= 0, runner, masked.argmax(dim=-1))
            self.margin = logits[chosen, targets] - logits[chosen, runner]
        self.embeds = embeds
        self.context_len = job.context_len
        self.runner_ids = runner.tolist()
        self._vmap_ok = True

    def gradients(self, objective: str, indices: list[int]) -> torch.Tensor:
        """d objective[i] / d embeddings for each i in `indices`: [len(indices), L, d]."""
        values = self.logprob if objective == "logprob" else self.margin
        selected = values[torch.tensor(indices, device=values.device)]
        with torch.enable_grad():
            if self._vmap_ok and len(indices) > 1:
                try:
                    eye = torch.eye(len(indices), dtype=selected.dtype, device=selected.device)
                    (grads,) = torch.autograd.grad(selected, self.embeds, grad_outputs=eye, is_grads_batched=True, retain_graph=True)
                    return grads
                except RuntimeError:
                    # some attention kernels have no batching rule for their backward; a loop of
                    # single backwards over the same graph still avoids a second forward
                    self._vmap_ok = False
            rows = [torch.autograd.grad(selected[k], self.embeds, retain_graph=True)[0] for k in range(len(indices))]
            return torch.stack(rows)


# The graph of the most recent record: the hover on a token of the completion just shown then
# costs one backward. Only one is kept: a graph holds every activation of the forward.
_LOCK = threading.Lock()
_CURRENT: dict[str, object] = {}


def graph_for(job: TeacherForced) -> GradientGraph:
    key = (job.record.id, int(job.ids.numel()), job.lm.name)
    with _LOCK:
        if _CURRENT.get("key") == key:
            return _CURRENT["graph"]  # type: ignore[return-value]
        _CURRENT.clear()  # free the old activations before building new ones
    graph = GradientGraph(job)
    with _LOCK:
        _CURRENT["key"] = key
        _CURRENT["graph"] = graph
    return graph


def release_graph(record_id: str | None = None) -> None:
    """Drop the kept graph (all of them, or only `record_id`'s) to give its memory back."""
    with _LOCK:
        key = _CURRENT.get("key")
        if record_id is None or (key is not None and key[0] == record_id):
            _CURRENT.clear()


def sequence_scores(grads: torch.Tensor, embeds: torch.Tensor, kind: str) -> torch.Tensor:
    """Per position scores from gradients [n, L, d]: input x gradient (signed) or the gradient
    norm (magnitude)."""
    if kind == "input_x_gradient":
        return (grads * embeds.detach().unsqueeze(0)).sum(-1)
    return grads.norm(dim=-1)
