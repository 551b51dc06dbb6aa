"""`whence-ls bench typing`: completion latency while a user types down a file, with and
without prefix reuse (`engine/prefix_cache.py`).

The user finishes one line after another of real code the tests do not use; at each line end the
editor asks for a completion, with the language server's default budget. Three ways of answering
each request run in turn on the same loaded model, so machine noise hits all alike:

- reuse: what the server does, the prefix cache on (window anchored, cached prefix reused);
- same window, fresh: the very same context prefilled from scratch. Its tokens must equal
  reuse's: the bench fails if they differ in one token;
- before: prefix reuse off, the window cut afresh for every request (the server before reuse).
"""


from __future__ import annotations

import statistics
import time


def bench_document() -> tuple[str, str]:
    """The stdlib's `tokenize.py`: real code, longer than the budget where the typing happens."""
    import tokenize

    with open(tokenize.__file__, encoding="utf-8") as handle:
        return tokenize.__file__, handle.read()


def line_ends(text: str, count: int) -> list[int]:
    """Ends of consecutive non-blank code lines, from a third of the way into the file."""
    ends, offset = [], 0
    lines = text.split("\n")
    for number, line in enumerate(lines):
        offset += len(line) + 1
        if number >= len(lines) // 3 and line.strip() and not line.strip().startswith("#"):
            ends.append(offset - 1)
            if len(ends) == count:
                break
    return ends


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def run(args) -> int:
    import torch

    from whence_ls.engine.generation import complete_at, generate
    from whence_ls.engine.loading import load_model
    from whence_ls.engine.stopping import BlockStopper
    from whence_ls.errors import WhenceError

    lm = load_model(args.model, args.device)
    path, text = bench_document()
    cursors = line_ends(text, args.lines)
    options = {"language": "python", "max_new_tokens": args.max_new_tokens, "context_tokens": args.context_tokens}
    complete_at(lm, text, cursors[0], **options)  # warm-up: lazy initialisation on first calls
    lm.prefix_cache.clear()

    times: dict[str, list[float]] = {"reuse": [], "fresh": [], "undrafted": [], "before": []}
    prefill: dict[str, list[float]] = {"reuse": [], "fresh": [], "undrafted": [], "before": []}
    reused_tokens, context_tokens = [], []
    for cursor in cursors:
        started = time.perf_counter()
        reused = complete_at(lm, text, cursor, reuse_prefix=True, **options)
        times["reuse"].append(time.perf_counter() - started)
        prefill["reuse"].append(reused.timings["prefill_s"])
        reused_tokens.append(reused.timings["reused_tokens"])
        context_tokens.append(len(reused.context.token_ids))

        context = reused.context
        context_end = context.doc_start + len(context.text)
        heal = text[context_end : context_end + reused.timings["healed_chars"]]
        line_start = text.rfind("\n", 0, cursor) + 1
        stopper = BlockStopper(text[line_start:cursor], "python", single_line=False)
        started = time.perf_counter()
        fresh = generate(lm, context, max_new_tokens=args.max_new_tokens, stopper=stopper, heal=heal)
        times["fresh"].append(time.perf_counter() - started)
        prefill["fresh"].append(fresh.timings["prefill_s"])
        if [t.token_id for t in fresh.tokens] != [t.token_id for t in reused.tokens]:
            raise WhenceError(f"prefix reuse changed the completion at offset {cursor}: {reused.text!r} != {fresh.text!r}")
        started = time.perf_counter()
        undrafted = generate(lm, context, max_new_tokens=args.max_new_tokens, stopper=stopper, heal=heal, draft_tokens=0)
        times["undrafted"].append(time.perf_counter() - started)
        prefill["undrafted"].append(undrafted.timings["prefill_s"])
        if [t.token_id for t in fresh.tokens] != [t.token_id for t in undrafted.tokens]:
            raise WhenceError(f"drafts changed the completion at offset {cursor}: {fresh.text!r} != {undrafted.text!r}")

        started = time.perf_counter()
        before = complete_at(lm, text, cursor, **options)
        times["before"].append(time.perf_counter() - started)
        prefill["before"].append(before.timings["prefill_s"])

    print(f"model: {lm.name} on {lm.device_label} ({str(lm.dtype).removeprefix('torch.')}), torch threads: {torch.get_num_threads()}")
    print(f"document: {path}; {len(cursors)} consecutive line ends; budget {args.context_tokens} tokens, "
          f"up to {args.max_new_tokens} new tokens")
    print(f"reuse: context {min(context_tokens)}-{max(context_tokens)} tokens, {statistics.median(reused_tokens):.0f} reused (median), "
          f"{sum(1 for n in reused_tokens if n)} of {len(cursors)} requests reused a prefix; every completion equal to a fresh prefill's")
    print("| way | latency p50 (s) | p95 (s) | prefill p50 (s) |")
    print("|---|---|---|---|")
    labels = {"reuse": "prefix reuse + drafts (server)", "fresh": "same window, fresh prefill, drafts",
              "undrafted": "same window, fresh prefill, no drafts", "before": "no reuse (before)"}
    for way, label in labels.items():
        print(f"| {label} | {statistics.median(times[way]):.3f} | {_percentile(times[way], 0.95):.3f} | {statistics.median(prefill[way]):.3f} |")
    print(f"p50 latency before/reuse: {statistics.median(times['before']) / statistics.median(times['reuse']):.2f}x")
    print(f"p50 latency no drafts/drafts (fresh prefill both): {statistics.median(times['undrafted']) / statistics.median(times['fresh']):.2f}x")
    return 0
