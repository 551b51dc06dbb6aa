"""The default: a calibrated attention estimator (AT2's idea). A token's score on a context
position is the weighted sum, over every attention head, of the attention the head puts there
from the token's own position, with per-head weights fitted to random-subset ablation
(`calibration.py`). One forward gives every row of a completion.

A lexical prior is added on top: the line of the most recent earlier occurrence of the token's
identifier (`LATEST_OCCURRENCE_PRIOR`).

The same forward gives two more findings, kept in the row's `extra`:
- copies: when the model's induction heads (found at calibration) put most of their attention on
  an earlier position that holds this very token, the token was copied from there;
- the logit lens: at which layer the token became the model's top prediction, and what the
  layers before preferred.
"""

from __future__ import annotations

import torch

from whence_ls.engine.attribution.ablation import ablatable_sources
from whence_ls.engine.attribution.attention_probe import attention_rows
from whence_ls.engine.taps import Preempted
from whence_ls.engine.attribution.base import ALL_ROWS, RawRow, TeacherForced
from whence_ls.engine.attribution.calibration import load_calibration
from whence_ls.engine.attribution.units import COMMON_WORDS
from whence_ls.errors import WhenceError

# the induction heads must put at least this share of their attention on the copied-from
# position (averaged over the copy heads) for the row to say "copied"
COPY_ATTENTION = 0.3
# The lexical copy prior: when the identifier a token is part of occurs earlier in the context,
# the line of its most recent occurrence gets this much added to its normalised score. In
# `whence-ls bench attribution-estimators` (24 suite targets, 154 rows, docs/bench-attribution.md)
# the top line is then an earlier occurrence in 96% of copy cases instead of 62%, with LDS,
# top-1 and top-3 no lower (weights chosen on one half of the targets, measured on the other:
# 0.3 and 1.0 were chosen; 0.5 is the best on all 24).
LATEST_OCCURRENCE_PRIOR = 0.5


class CalibratedAttention:
    name = "calibrated_attention"
    rank_by_abs = False  # signed: a negative head weight can make a source argue against the token
    rows_per_batch = ALL_ROWS  # one forward serves every row

    def __init__(self, logit_lens: bool = True, occurrence_prior: float = LATEST_OCCURRENCE_PRIOR) -> None:
        self.logit_lens = logit_lens
        self.occurrence_prior = occurrence_prior

    def compute(self, job: TeacherForced, indices: list[int], unit_map) -> dict[int, RawRow]:
        calibration = load_calibration(job.lm)
        if calibration is None:
            raise WhenceError(
                f"model {job.lm.name} is not calibrated for attribution: run `whence-ls model calibrate`"
            )
        live = job.record.live_rows
        if live and all(index in live for index in indices):
            return self._from_live(job, indices, unit_map)  # read while generating: no forward
        try:
            rows = attention_rows(job, indices, hidden_states=self.logit_lens)
        except Preempted:
            return {}  # no rows: the caller requeues them
        if rows.weights.shape[1] != len(calibration.weights):
            raise WhenceError("the calibration does not match this model's heads: run `whence-ls model calibrate`")
        head_weights = torch.tensor(calibration.weights, dtype=torch.float32, device=rows.weights.device)
        scores = torch.einsum("nhp,h->np", rows.weights, head_weights)  # [rows, end]
        lens = logit_lens(job, indices, rows.hidden) if rows.hidden is not None else {}
        induction = calibration.induction_heads
        copies = [rows.weights[k][torch.tensor(induction)].mean(0) if induction else None for k in range(len(indices))]
        return self._rows(job, indices, unit_map, [scores[k, : rows.positions[k] + 1] for k in range(len(indices))], copies, lens)

    def _from_live(self, job: TeacherForced, indices: list[int], unit_map) -> dict[int, RawRow]:
        live = [job.record.live_rows[index] for index in indices]
        tops = [row.lens_top for row in live]
        lens = lens_rows(job, indices, torch.stack(tops)) if self.logit_lens and all(t is not None for t in tops) else {}
        return self._rows(job, indices, unit_map, [row.scores for row in live], [row.copy_attention for row in live], lens)

    def _rows(self, job: TeacherForced, indices: list[int], unit_map, scores: list, copies: list, lens: dict) -> dict[int, RawRow]:
        """Rows from each token's calibrated attention over positions [0, its position] and
        the copy heads' mean attention there."""
        result = {}
        for k, index in enumerate(indices):
            position = job.target_position(index)
            extra = copy_and_lens_extra(job, index, copies[k], unit_map, lens)
            bonus = {}
            occurrence = latest_occurrence(job, index, unit_map)
            if occurrence is not None and self.occurrence_prior:
                extra["latest_occurrence_unit"] = occurrence
                bonus[occurrence] = self.occurrence_prior
            result[index] = RawRow(position_scores=scores[k][: position + 1].double(), extra=extra, unit_bonus=bonus)
        return result


def latest_occurrence(job: TeacherForced, index: int, unit_map) -> int | None:
    """The last context source holding an earlier occurrence of the identifier the token is
    part of (at least 2 characters, not a number, not a keyword or common builtin), or None."""
    text = job.record.text
    token = job.record.tokens[index]
    left = token.start
    while left < token.end and not (text[left].isalnum() or text[left] == "_"):
        left += 1
    if left >= token.end:
        return None
    right = left
    while left > 0 and (text[left - 1].isalnum() or text[left - 1] == "_"):
        left -= 1
    while right < len(text) and (text[right].isalnum() or text[right] == "_"):
        right += 1
    word = text[left:right]
    if len(word) < 2 or word in COMMON_WORDS or word.isdigit():
        return None
    holding = [u for u in ablatable_sources(unit_map) if any(i.text == word for i in unit_map.units[u].identifiers)]
    return max(holding) if holding else None


def copy_and_lens_extra(job: TeacherForced, index: int, copy_attention: torch.Tensor | None, unit_map,
                        lens: dict[int, dict]) -> dict:
    """A row's `extra` from one forward: where the copy heads say the token was copied from (a
    context unit, or earlier in the completion) and its logit lens. Shared by the estimators
    that read the same forward (this one and `stacked_attention`)."""
    extra: dict = {}
    copied = copied_position(job, index, copy_attention)
    if copied is not None:
        extra["copied_from_position"] = copied
        if copied < job.context_len and float(unit_map.weights[copied].sum()) > 0:
            extra["copied_from_unit"] = int(unit_map.weights[copied].argmax())
        elif copied >= job.context_len:
            extra["copied_from_completion"] = True
    if index in lens:
        extra["logit_lens"] = lens[index]
    return extra


def copied_position(job: TeacherForced, index: int, copy_attention: torch.Tensor | None) -> int | None:
    """The earlier position the copy heads read this token from, when they agree on one that
    holds the same token id (an induction head attends to the token after the earlier occurrence
    of the current one: that token is what gets copied). `copy_attention` is the copy heads'
    mean attention from the token's position (None: the model has no copy heads)."""
    if copy_attention is None:
        return None
    position = job.target_position(index)
    attention = copy_attention[: position + 1].clone()
    attention[0] = 0.0  # the sink
    best = int(attention.argmax())
    if float(attention[best]) < COPY_ATTENTION or best >= len(job.ids):
        return None
    return best if int(job.ids[best]) == job.target_id(index) else None


# the logit lens ranks each layer's prediction among the final layer's strongest candidates:
# a full-vocabulary projection of every layer would cost most of a forward at this model size
LENS_CANDIDATES = 64


def logit_lens(job: TeacherForced, indices: list[int], hidden: torch.Tensor) -> dict[int, dict]:
    """Per row: the first layer from which the token stays the top prediction, and what a few
    earlier layers preferred (the final norm and the output head applied to each layer's residual
    stream, over the final layer's top LENS_CANDIDATES tokens)."""
    top = lens_top_ids(job.lm, hidden)
    return lens_rows(job, indices, top) if top is not None else {}


def lens_top_ids(lm, hidden: torch.Tensor, final_logits: torch.Tensor | None = None) -> torch.Tensor | None:
    """Each layer's top token among the final layer's LENS_CANDIDATES strongest, [rows, layers]
    (None: the model has no final norm or output head to read layers with). `final_logits`:
    the model's own logits at those rows, when the caller has them (generation does), instead
    of projecting the last layer again."""
    model = lm.model
    norm = getattr(getattr(model, "model", model), "norm", None)
    head = model.get_output_embeddings()
    if norm is None or head is None:
        return None
    with torch.inference_mode():
        device = head.weight.device
        hidden = hidden.to(device=device, dtype=head.weight.dtype)
        states = norm(hidden)  # [rows, layers, hidden]
        if _last_layer_normed(lm):  # the model's own output already went through the final norm
            states[:, -1] = hidden[:, -1]
        final = final_logits.float() if final_logits is not None else head(states[:, -1]).float()  # [rows, vocab]
        candidates = final.topk(min(LENS_CANDIDATES, final.shape[-1]), dim=-1).indices  # [rows, C]
        weights = head.weight[candidates]  # [rows, C, hidden]
        scores = torch.einsum("rld,rcd->rlc", states.float(), weights.float())  # [rows, layers, C]
        if head.bias is not None:
            scores = scores + head.bias[candidates].float().unsqueeze(1)
        return candidates.gather(1, scores.argmax(-1)).cpu()  # [rows, layers] token ids


def _last_layer_normed(lm) -> bool:
    """Whether the model's last `hidden_states` entry has the final norm applied already (so the
    output head alone gives the logits), as transformers 5 Llama's has; decided once per model."""
    known = getattr(lm, "_whence_last_hidden_normed", None)
    if known is None:
        model = lm.model
        ids = torch.tensor([[1, 2, 3, 4]], device=lm.device)
        with torch.inference_mode():
            out = model(input_ids=ids, output_hidden_states=True)
            head = model.get_output_embeddings()
            known = bool(torch.allclose(head(out.hidden_states[-1]).float(), out.logits.float(), atol=1e-3))
        lm._whence_last_hidden_normed = known
    return known


def lens_rows(job: TeacherForced, indices: list[int], top: torch.Tensor) -> dict[int, dict]:
    """The logit lens finding of each row from its layers' top tokens."""
    layers = top.shape[1]
    result = {}
    decode = job.lm.tokenizer.decode
    for k, index in enumerate(indices):
        target = job.target_id(index)
        hits = (top[k] == target).tolist()
        settled = layers  # never top: reported as after the last layer
        for layer in range(layers - 1, -1, -1):
            if not hits[layer]:
                break
            settled = layer
        earlier = []
        for layer in sorted({max(0, settled // 2), max(0, settled - 1)}):
            if layer < settled:
                earlier.append({"layer": layer + 1, "text": decode([int(top[k, layer])], clean_up_tokenization_spaces=False)})
        result[index] = {"layers": layers, "top_from_layer": settled + 1 if settled < layers else None, "earlier": earlier}
    return result
