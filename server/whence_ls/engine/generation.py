"""KV-cached greedy decoding that records, for every token, its log-probability, entropy and
top-k alternatives from the logits the step computes anyway (no extra forward pass)."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable

import torch

from whence_ls.engine.decoding_forward import croppable, forward, new_cache
from whence_ls.engine.drafting import NgramDrafter
from whence_ls.engine.healing import heal_context, healing_closure, healing_mask
from whence_ls.engine.loading import LoadedModel
from whence_ls.engine.prefix_cache import PrefixCache, window_anchor
from whence_ls.engine.prompt import PromptOptions, Snippet
from whence_ls.engine.records import ContextWindow, ScoredText
from whence_ls.engine.stopping import BlockStopper
from whence_ls.engine.token_scores import scored_tokens, token_row
from whence_ls.engine.windows import PromptShape, context_window
from whence_ls.errors import WhenceError

TOP_K = 5


def complete_at(
    lm: LoadedModel,
    text: str,
    cursor: int,
    *,
    language: str | None = None,
    max_new_tokens: int = 64,
    context_tokens: int = 1024,
    cancel: threading.Event | None = None,
    reuse_prefix: bool = False,
    draft_tokens: int | None = None,
    prompt: PromptOptions | None = None,
    snippets: list[Snippet] | None = None,
    deadline: float | None = None,
    on_partial: Callable[[ScoredText], None] | None = None,
    live_rows: bool | str = False,
    cold_prefill_s: float | None = None,
    on_text: Callable[[str], None] | None = None,
) -> ScoredText:
    """Complete document `text` at character offset `cursor`.

    With `reuse_prefix`, the model's prefix cache (see `prefix_cache`) serves the part of the
    context an earlier completion already ran, and the window keeps that completion's start.
    `prompt` chooses fill-in-the-middle and the budgets (`prompt.py`; by default FIM when the
    tokenizer has a template), `snippets` are other files' code for the model to see.
    `deadline`, `on_partial`, `on_text` and `live_rows`: see `generate`.

    `cold_prefill_s` (with `reuse_prefix`) bounds the time spent prefilling what the cache does
    not hold, at the machine's measured rate (`lm.prefill_rate`): past it the window is cut
    shorter (`context.shortened`; never below `windows.COLD_FLOOR_TOKENS` of the document) and the caller
    should warm the full window (`warm_prefix`) for the next completion."""
    if not 0 <= cursor <= len(text):
        raise WhenceError(f"cursor offset {cursor} is outside the document (length {len(text)})")
    started = time.perf_counter()
    budget = max(1, min(context_tokens, lm.max_context - max_new_tokens))
    reuse = lm.prefix_cache if reuse_prefix else None
    shape = PromptShape(prompt or PromptOptions(), snippets, language, lm.max_context - max_new_tokens)
    cold_tokens = lm.prefill_rate.tokens_within(cold_prefill_s) if cold_prefill_s is not None and reuse is not None else None
    context, heal = heal_context(context_window(lm, text, cursor, budget, reuse, shape, cold_tokens))
    line_start = text.rfind("\n", 0, cursor) + 1
    line_end = text.find("\n", cursor)
    rest_of_line = text[cursor : len(text) if line_end == -1 else line_end]
    # the code after the cursor ends a completion that writes it again, whether or not the
    # model saw it (a model without FIM still closes the bracket the line already closes)
    stopper = BlockStopper(text[line_start:cursor], language, single_line=bool(rest_of_line.strip()),
                           suffix=text[cursor : cursor + 4096])
    result = generate(lm, context, max_new_tokens=max_new_tokens, stopper=stopper, cancel=cancel, heal=heal, prefix_cache=reuse,
                      draft_tokens=draft_tokens, deadline=deadline, on_partial=on_partial, live_rows=live_rows,
                      on_text=on_text)
    result.timings["context_s"] = (time.perf_counter() - started) - result.timings["total_s"]
    return result


# tokens per forward while warming the prefix cache: the warm-up stops between chunks when
# interactive work arrives, so a completion waits at most one chunk (~0.1-0.2 s on a CPU)
WARM_CHUNK_TOKENS = 128
# the longest prefill forward of a completion; longer ones are cut (see `generate`). Larger
# than the warm-up's chunks: a prefill is interactive work, and each cut costs a little speed
PREFILL_CHUNK_TOKENS = 256
# prompt-lookup draft tokens checked per decoding forward (see `generate`); measured with
# `whence-ls bench generate --draft-tokens N`
DRAFT_TOKENS = 4


def warm_prefix(
    lm: LoadedModel,
    text: str,
    cursor: int,
    *,
    max_new_tokens: int = 64,
    context_tokens: int = 1024,
    cancel: threading.Event | None = None,
    prompt: PromptOptions | None = None,
    snippets: list[Snippet] | None = None,
    language: str | None = None,
) -> int:
    """Prefill, into the model's prefix cache, the window a completion at `cursor` would start
    from, so that the completion itself runs only the tail (the first completion after a file
    opens, say). Runs in chunks and stops between them when `cancel` is set, keeping what it ran:
    a later warm-up or completion goes on from there. Returns the tokens now cached."""
    if not 0 <= cursor <= len(text):
        raise WhenceError(f"cursor offset {cursor} is outside the document (length {len(text)})")
    budget = max(1, min(context_tokens, lm.max_context - max_new_tokens))
    context, _ = heal_context(context_window(lm, text, cursor, budget, lm.prefix_cache, PromptShape(prompt or PromptOptions(), snippets, language,
                                                                                            lm.max_context - max_new_tokens)))
    ids = list(context.token_ids)
    held = lm.prefix_cache.shared(ids)
    if held >= len(ids) - 1:
        return held  # an entry holds it already (the cursor moved inside a warmed window)
    cache, done = lm.prefix_cache.take(ids)
    if cache is None:
        cache, done = new_cache(lm, len(ids) + max_new_tokens), 0
    with torch.inference_mode():
        while done < len(ids) - 1:  # the last token is the completion's own first step
            if cancel is not None and cancel.is_set():
                break
            step = ids[done : min(len(ids) - 1, done + WARM_CHUNK_TOKENS)]
            chunk_started = time.perf_counter()
            forward(lm, step, cache)
            lm.prefill_rate.observe(len(step), time.perf_counter() - chunk_started)
            done += len(step)
    if done:
        lm.prefix_cache.put(ids[:done], cache, window_anchor(context.doc_start, context.text))
    return done


def measure_prefill_rate(lm: LoadedModel, tokens: int = 128) -> None:
    """Give `lm.prefill_rate` its first figure before any completion needs it (the first jump
    into a file would otherwise read its whole window, however busy the machine): two prefills
    of `tokens` tokens, the second one timed (the first pays one-time costs: kernel choice,
    allocation). The content does not matter for the time, so the ids are a fixed run."""
    ids = [i % lm.model.config.vocab_size for i in range(100, 100 + tokens)]
    with torch.inference_mode():
        forward(lm, ids, new_cache(lm, tokens))
        cache = new_cache(lm, tokens)
        started = time.perf_counter()
        forward(lm, ids, cache)
        lm.prefill_rate.observe(tokens, time.perf_counter() - started)


def generate(
    lm: LoadedModel,
    context: ContextWindow,
    *,
    max_new_tokens: int = 64,
    stopper: BlockStopper | None = None,
    cancel: threading.Event | None = None,
    top_k: int = TOP_K,
    heal: str = "",
    prefix_cache: PrefixCache | None = None,
    draft_tokens: int | None = None,
    deadline: float | None = None,
    on_partial: Callable[[ScoredText], None] | None = None,
    live_rows: bool | str = False,
    on_text: Callable[[str], None] | None = None,
) -> ScoredText:
    """Greedy decoding after `context`; every token scored from the step's own logits.

    `heal` is text after the context that the output must begin with (see `heal_context`);
    it is not part of the returned completion. Reported probabilities are the model's own,
    unconstrained ones. A `prefix_cache` supplies the keys and values of a shared prefix and
    receives this run's afterwards.

    `draft_tokens` (default DRAFT_TOKENS, 0: off) is how many prompt-lookup draft tokens are
    checked per forward (`drafting.py`): the tokens and their scores are those of plain greedy
    decoding, with fewer forwards when the completion repeats its context.

    `deadline` (a `time.perf_counter()` value) and `on_partial`: once the deadline has passed,
    every time a token begins a new line, `on_partial` receives the completion so far, whole
    lines of whole tokens (never half a token or half a character), and decoding goes on. The
    caller shows that part at once and offers the rest when it comes (`continuation.py`).

    `on_text` receives the visible text decoded so far after every token that changed it (not
    cut by the stopper yet: the completion is a prefix of the last one): enough for a caller to
    tell that the text being generated no longer matches what the user typed meanwhile.

    `live_rows`: read every token's calibrated attention row from the decoding forwards
    themselves (`attribution/live_rows.py`, for a calibrated model), kept in `live_rows` of the
    result, so its attribution needs no forward afterwards; "stacked_attention": the stacked
    estimator's head sums too, so its rows need none either (True: the calibrated rows)."""
    if draft_tokens is None:
        draft_tokens = DRAFT_TOKENS
    if not context.token_ids:
        raise WhenceError("nothing to complete from: the context is empty")
    tokenizer = lm.tokenizer
    eos = set(lm.eos_token_ids) | set(context.stop_token_ids)
    special = lm.special_token_ids()
    started = time.perf_counter()
    ids: list[int] = []
    rows: list[tuple[float, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    text = ""  # visible completion so far (after the healed text)
    token_texts: list[str] = []
    stop_reason = "length"
    cut: int | None = None
    cache, reused = prefix_cache.take(context.token_ids) if prefix_cache is not None else (None, 0)
    if cache is None:
        cache = new_cache(lm, len(context.token_ids) + max_new_tokens + draft_tokens + 1)
    cached_ids = list(context.token_ids[:reused])  # what `cache` holds keys and values of
    step_ids = list(context.token_ids[reused:])
    prefill_s = 0.0
    pending = heal
    forwards = drafted = accepted = 0
    closed = healing_closure(context.text, heal)
    live = _live_attention(lm, live_rows) if live_rows else None
    if live is not None:
        live.begin(context.token_ids)
    kept_rows: list = []
    with torch.inference_mode(), live if live is not None else contextlib.nullcontext():
        # a long prefill runs in chunks, so a cancel (a newer keystroke's request) frees the
        # model within one chunk; the chunks that ran stay in the prefix cache for that request
        while len(step_ids) > PREFILL_CHUNK_TOKENS:
            if cancel is not None and cancel.is_set():
                stop_reason = "cancelled"
                break
            chunk, step_ids = step_ids[:PREFILL_CHUNK_TOKENS], step_ids[PREFILL_CHUNK_TOKENS:]
            forward(lm, chunk, cache)
            cached_ids.extend(chunk)
        drafter = NgramDrafter(list(context.token_ids)) if draft_tokens > 0 and croppable(cache) else None
        feed, draft = step_ids, []  # tokens to run now; the draft is the tail of `feed` to check
        stopped = stop_reason == "cancelled"
        while not stopped and len(ids) < max_new_tokens:
            if live is not None:
                live.cache, live.trailing = cache, len(draft) + 1
            step_logits, hidden_states = forward(lm, feed, cache, logits_to_keep=len(draft) + 1,
                                                 hidden_states=live is not None, live=live)
            # row i of this forward predicts the token after its i-th trailing position
            forward_rows = live.take(list(range(len(draft) + 1)), hidden_states, step_logits) if live is not None else []
            cached_ids.extend(feed)
            if forwards == 0:
                prefill_s = time.perf_counter() - started
                lm.prefill_rate.observe(len(context.token_ids) - reused, prefill_s)
            forwards += 1
            # row i predicts the token after draft[i - 1] (after feed's first token for i = 0):
            # each draft token the model would have chosen itself lets the next row count
            for i in range(len(draft) + 1):
                logits = step_logits[i - len(draft) - 1]
                values, indices, entropy = token_row(logits, top_k)
                if pending:
                    constrained = logits.float() + healing_mask(lm, pending, closed)
                    token_id = int(torch.argmax(constrained))
                    logprob = float(torch.log_softmax(logits.float(), dim=-1)[token_id])
                else:
                    token_id = int(indices[0])  # greedy: the top alternative is the choice
                    logprob = float(values[0])
                if token_id in eos:
                    stop_reason, stopped = "eos", True
                    break
                if token_id in special:
                    stop_reason, stopped = "special_token", True  # markup for the model (<file_sep>, <|im_start|>...), never code
                    break
                if on_partial is not None and deadline is not None and not pending and token_texts \
                        and text.strip() and not text[-1].isspace() and time.perf_counter() >= deadline:
                    following = tokenizer.decode(ids + [token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
                    # a single-line completion ends at its newline anyway (and may lose the rest
                    # of the line it wrote again): nothing to show early
                    if following[len(heal) + len(text):].startswith("\n") and not (stopper is not None and stopper.single_line):
                        if live is not None:
                            live.finish()  # the part's rows complete, as the whole completion's will
                        on_partial(_partial(lm, context, heal, ids, token_texts, rows, text, started, kept_rows))
                ids.append(token_id)
                rows.append((logprob, values, indices, entropy))
                if i < len(forward_rows):
                    kept_rows.append(live.complete(forward_rows[i], token_id))
                # decode the whole sequence: byte-level BPE may split a character across tokens,
                # so a token's text is what it adds to the decoded string
                decoded = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
                pending = heal[len(decoded):] if heal.startswith(decoded) else ""
                if decoded.endswith("\ufffd") or len(decoded) < len(heal):
                    token_texts.append("")  # incomplete UTF-8 or still healing: nothing visible yet
                else:
                    visible = decoded[len(heal):]
                    token_texts.append(visible[len(text):])
                    text = visible
                    if on_text is not None and token_texts[-1]:
                        on_text(text)
                if stopper is not None:
                    cut = stopper.cut(text)
                    if cut is not None:
                        stop_reason, stopped = "block_end", True
                        break
                if cancel is not None and cancel.is_set():
                    stop_reason, stopped = "cancelled", True
                    break
                if len(ids) >= max_new_tokens:
                    break
                if drafter is not None:
                    drafter.push(token_id)
                if i < len(draft) and token_id == draft[i]:
                    accepted += 1
                    continue
                break
            # the cache holds every draft token; those after the last row used are not the
            # output's, so they go (a plain KV cache drops its newest entries exactly)
            unused = len(draft) - i
            if unused:
                cache.crop(-unused)
                del cached_ids[-unused:]
            if not stopped and len(ids) < max_new_tokens:
                room = min(draft_tokens, max_new_tokens - len(ids) - 1)
                draft = drafter.propose(room) if drafter is not None and not pending else []
                drafted += len(draft)
                feed = [token_id] + draft
        if live is not None:
            live.finish()  # every kept row's stacked sums, in one batch, before the cache is shared
    if prefix_cache is not None:
        prefix_cache.put(cached_ids, cache, window_anchor(context.doc_start, context.text, provisional=context.shortened,
                                                              repository_room=context.repository_room))
    decode_s = time.perf_counter() - started - prefill_s
    if cut is None:
        cut = stopper.final(text) if stopper is not None else len(text)
    if stopper is not None:
        cut = len(text[:cut].rstrip())  # ghost text never ends in stray whitespace
    tokens = scored_tokens(tokenizer, ids, token_texts, rows, cut)
    completion = "".join(t.text for t in tokens)
    cursor = context.doc_start + len(context.text) + len(heal)
    return ScoredText(
        live_rows=_rows_of(kept_rows, len(tokens)),
        kind="completion",
        text=completion,
        doc_start=cursor,
        tokens=tokens,
        context=context,
        model=lm.name,
        device=lm.device_label,
        precision=lm.precision,
        stop_reason=stop_reason,
        timings={
            "prefill_s": prefill_s,
            "decode_s": decode_s,
            "total_s": time.perf_counter() - started,
            "generated_tokens": len(ids),
            "healed_chars": len(heal),
            "reused_tokens": reused,
            "decode_tokens_per_s": (len(ids) - 1) / decode_s if len(ids) > 1 and decode_s > 0 else 0.0,
            "forwards": forwards,
            "drafted_tokens": drafted,
            "accepted_draft_tokens": accepted,
        },
    )


def _live_attention(lm: LoadedModel, method: bool | str):
    from whence_ls.engine.attribution.live_rows import LiveAttention

    return LiveAttention.for_model(lm, stacked=method == "stacked_attention")


def _rows_of(kept_rows: list, count: int) -> dict:
    """Live rows by token index, for the first `count` tokens (those the completion kept);
    none when a forward could not give its rows (they are then computed afterwards)."""
    return dict(enumerate(kept_rows[:count])) if len(kept_rows) >= count else {}


def _partial(lm: LoadedModel, context: ContextWindow, heal: str, ids: list[int], texts: list[str], rows: list, text: str,
             started: float, kept_rows: list) -> ScoredText:
    """The completion so far as its own record: the tokens before the one that starts a line."""
    tokens = scored_tokens(lm.tokenizer, list(ids), list(texts), list(rows), len(text))
    return ScoredText(
        live_rows=_rows_of(kept_rows, len(tokens)),
        kind="completion", text="".join(t.text for t in tokens), doc_start=context.doc_start + len(context.text) + len(heal),
        tokens=tokens, context=context, model=lm.name, device=lm.device_label, precision=lm.precision, stop_reason="deadline",
        timings={"total_s": time.perf_counter() - started, "generated_tokens": len(ids), "healed_chars": len(heal)},
    )
