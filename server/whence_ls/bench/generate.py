"""`whence-ls bench generate`: what our per-token bookkeeping costs against plain `model.generate`.

Both decode the same number of tokens greedily from the same prompt on the same loaded model;
runs alternate so that machine noise hits both alike, and the medians are compared.
"""


from __future__ import annotations

import statistics
import time


def bench_prompt() -> tuple[str, str]:
    """Real code the tests do not use: the start of the stdlib's `textwrap.py`."""
    import textwrap

    with open(textwrap.__file__, encoding="utf-8") as handle:
        return textwrap.__file__, handle.read()


def run(args) -> int:
    import torch

    from whence_ls.engine.context import build_context
    from whence_ls.engine.generation import generate
    from whence_ls.engine.loading import load_model

    lm = load_model(args.model, args.device)
    source_path, source = bench_prompt()
    # cut the source after ~context_tokens tokens, then keep exactly that many as context
    ids = lm.tokenizer(source, add_special_tokens=False, return_offsets_mapping=True)
    end = ids["offset_mapping"][min(args.context_tokens, len(ids["input_ids"]) - 1)][0]
    context = build_context(lm.tokenizer, source, end, args.context_tokens)
    n = args.new_tokens
    prompt = torch.tensor([context.token_ids], device=lm.device)
    eos_free = {"eos_token_id": None, "pad_token_id": lm.tokenizer.pad_token_id}

    def ours() -> float:
        started = time.perf_counter()
        result = generate(lm, context, max_new_tokens=n)
        elapsed = time.perf_counter() - started
        assert result.timings["generated_tokens"] == n or result.stop_reason == "eos"
        return result.timings["generated_tokens"] / elapsed

    def plain() -> float:
        started = time.perf_counter()
        with torch.inference_mode():
            out = lm.model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, **eos_free)
        elapsed = time.perf_counter() - started
        return (out.shape[1] - prompt.shape[1]) / elapsed

    ours(), plain()  # warm-up: first calls pay for lazy initialisation
    ours_runs, plain_runs = [], []
    for _ in range(args.repeats):
        ours_runs.append(ours())
        plain_runs.append(plain())
    ours_median, plain_median = statistics.median(ours_runs), statistics.median(plain_runs)
    ratio = ours_median / plain_median
    print(f"model: {lm.name} on {lm.device_label} ({str(lm.dtype).removeprefix('torch.')}), torch threads: {torch.get_num_threads()}")
    print(f"prompt: {len(context.token_ids)} context tokens from {source_path}; {n} new tokens, greedy; {args.repeats} alternating runs after a warm-up")
    print("| engine | tokens/s (median) | runs |")
    print("|---|---|---|")
    print(f"| whence-ls generate (logprob, entropy, top-5, incremental decode) | {ours_median:.1f} | {', '.join(f'{r:.1f}' for r in ours_runs)} |")
    print(f"| transformers model.generate (plain greedy) | {plain_median:.1f} | {', '.join(f'{r:.1f}' for r in plain_runs)} |")
    verdict = "met" if ratio >= 0.9 else "NOT met"
    print(f"ratio ours/plain: {ratio:.3f} (goal >= 0.9: {verdict})")
    return 0
