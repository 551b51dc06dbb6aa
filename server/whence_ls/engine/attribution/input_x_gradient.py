"""Input x gradient: d log p(token) / d embedding, dotted with the embedding, per position.

The whole matrix costs one forward plus batched backwards over its graph (see
`gradients.GradientGraph`), and single rows reuse the kept graph. Gradient norm and contrastive
share the same graph; gradient norm is the default (see `api.DEFAULT_METHOD`).
"""

from __future__ import annotations

from whence_ls.engine.attribution.base import RawRow, TeacherForced
from whence_ls.engine.attribution.gradients import graph_for, sequence_scores


class InputXGradient:
    name = "input_x_gradient"
    rank_by_abs = True
    # vmapped backwards: 8 rows hold 8 gradient copies of the activations; more buys little on
    # CPU and costs memory on long contexts
    rows_per_batch = 8
    objective = "logprob"
    score_kind = "input_x_gradient"

    def compute(self, job: TeacherForced, indices: list[int], unit_map) -> dict[int, RawRow]:
        graph = graph_for(job)
        grads = graph.gradients(self.objective, indices)
        scores = sequence_scores(grads, graph.embeds, self.score_kind).detach()
        rows = {}
        for k, index in enumerate(indices):
            end = job.target_position(index) + 1
            extra = {"runner_up_id": graph.runner_ids[index]} if self.objective == "margin" else {}
            rows[index] = RawRow(position_scores=scores[k, :end].cpu(), extra=extra)
        return rows
