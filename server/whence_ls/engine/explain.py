"""Explain a line already in the file: score each of its tokens teacher-forced against the code
above it, giving the same record (and the same token fields) as a completion.

The line is tokenised on its own, after a context that ends at the line start: that is how the
model would have met it had it generated the line from a cursor at column 1, and it keeps every
token's span inside the line. All tokens are scored from one forward pass.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from whence_ls.engine.context import build_context
from whence_ls.engine.generation import TOP_K
from whence_ls.engine.token_scores import top_alternatives
from whence_ls.engine.loading import LoadedModel
from whence_ls.engine.records import ContextWindow, ScoredText, ScoredToken
from whence_ls.errors import WhenceError
from whence_ls.sourcefile import line_starts


def explain_line(
    lm: LoadedModel,
    text: str,
    line_index0: int,
    language: str | None = None,
    context_tokens: int = 1024,
    *,
    top_k: int = TOP_K,
) -> ScoredText:
    """A ScoredText of kind "explanation" for line `line_index0` (0-based) of `text`."""
    started = time.perf_counter()
    starts = line_starts(text)
    if not 0 <= line_index0 < len(starts):
        raise WhenceError(f"line {line_index0 + 1} is outside the file (it has {len(starts)} lines)")
    line_start = starts[line_index0]
    line_end = starts[line_index0 + 1] - 1 if line_index0 + 1 < len(starts) else len(text)
    if text[line_start:line_end].endswith("\r"):
        line_end -= 1
    line = text[line_start:line_end]
    if not line.strip():
        raise WhenceError(f"line {line_index0 + 1} is blank: there is nothing to explain")
    encoded = lm.tokenizer(line, add_special_tokens=False, return_offsets_mapping=True)
    line_ids, line_offsets = list(encoded["input_ids"]), list(encoded["offset_mapping"])
    if len(line_ids) >= lm.max_context:
        raise WhenceError(f"line {line_index0 + 1} is {len(line_ids)} tokens, longer than the model's window")
    budget = max(1, min(context_tokens, lm.max_context - len(line_ids)))
    context = build_context(lm.tokenizer, text, line_start, budget)
    if not context.token_ids and text[:line_start].strip():
        # the budget is smaller than the line above: build_context found no whole line to start
        # at, so keep the budget's worth of tokens from mid-line rather than no context at all
        context = _tail_context(lm.tokenizer, text, line_start, budget)
    if not context.token_ids:
        raise WhenceError(
            f"line {line_index0 + 1} has no code above it: the model needs context to score its first token"
        )
    context = dataclasses.replace(context, language=language)  # scoring needs no grammar; its sources do
    ids = torch.tensor([context.token_ids + line_ids], device=lm.device)
    first = len(context.token_ids) - 1
    positions = torch.arange(first, first + len(line_ids), device=lm.device)
    with torch.inference_mode():
        logits = lm.model(input_ids=ids, use_cache=False, logits_to_keep=positions).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    top = torch.topk(logp, top_k, dim=-1)
    tokens = []
    previous_end = 0
    for k, (token_id, (start, end)) in enumerate(zip(line_ids, line_offsets)):
        # byte-level BPE can split one character over two tokens, whose offsets then overlap:
        # the character belongs to the first, so spans stay disjoint and texts join to the line
        start = max(start, previous_end)
        end = max(end, start)
        previous_end = end
        tokens.append(
            ScoredToken(
                token_id=token_id,
                text=line[start:end],
                start=start,
                end=end,
                logprob=float(logp[k, token_id]),
                entropy=float(entropy[k]),
                alternatives=top_alternatives(lm.tokenizer, top.values[k], top.indices[k]),
            )
        )
    return ScoredText(
        kind="explanation",
        text=line,
        doc_start=line_start,
        tokens=tokens,
        context=context,
        model=lm.name,
        device=lm.device_label,
        stop_reason="line_end",
        timings={"total_s": time.perf_counter() - started, "scored_tokens": len(tokens)},
    )


def _tail_context(tokenizer, text: str, end: int, budget: int) -> ContextWindow:
    special = build_context(tokenizer, "x", 1, budget + 1).special_prefix
    room = max(1, budget - special)
    start = max(0, end - room * 16)
    encoded = tokenizer(text[start:end], add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"][-room:], encoded["offset_mapping"][-room:]
    window_start = start + offsets[0][0]
    prefix_ids = tokenizer("x", add_special_tokens=True)["input_ids"][:special]
    return ContextWindow(
        text=text[window_start:end],
        doc_start=window_start,
        token_ids=list(prefix_ids) + list(ids),
        token_offsets=[(window_start, window_start)] * special + [(start + s, start + e) for s, e in offsets],
        truncated=True,
        special_prefix=special,
    )
