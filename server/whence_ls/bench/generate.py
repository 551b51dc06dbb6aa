"""`whence-ls bench generate`: decoding speed against plain `model.generate` and llama.cpp.

Every engine decodes greedily from the same prompt (real code the tests never use) at each
context size; runs alternate so that machine noise hits all alike, and medians are compared.
Rows: whence-ls's fast decoder (`engine/fast_decode.py`) in fp32, fp16 and int8, each without
and with prompt-lookup drafts; transformers' `model.generate` on the model as transformers loads it
(the baseline: nothing of the fast decoder touches it); and llama.cpp (llama-cpp-python, in a
bench-only environment) on each GGUF of the same model given with `--gguf`; onnxruntime on the
model's graph (`engine/onnx_build.py`, `engine/onnx_decode.py`) for each `--onnx` variant, without
and with drafts.

Each onnxruntime row without drafts runs right beside the llama.cpp row it is held against
(int8 beside Q8_0, fp32 beside F32; `llama_partners`), and their ratio is given run by run.

Columns: decode tokens/s, prefill ms, the speed-up over `model.generate`, the share of the
memory's bandwidth a fp32 row read at (the bytes a decode step must read, the weights and the KV
cache so far, x tokens/s over a measured streaming read), the mean KL divergence per token of the engine's next-token distributions from
the fp32 model's (teacher-forced on the fp32 greedy continuation), and whether the greedy tokens
are `model.generate`'s.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable

from whence_ls.bench.divergence import Divergence, StreamingRead, fp32_logprobs, kl_of_engine
from whence_ls.bench.llama_client import Llama


def bench_prompt() -> tuple[str, str]:
    """Real code the tests do not use: the stdlib's `textwrap.py`."""
    import textwrap

    with open(textwrap.__file__, encoding="utf-8") as handle:
        return textwrap.__file__, handle.read()


def run(args) -> int:
    import torch

    from whence_ls.engine.generation import DRAFT_TOKENS
    from whence_ls.engine.loading import load_model

    baseline = load_model(args.model, args.device, decoder="transformers")
    engines = {"fp32": load_model(args.model, args.device)}
    if engines["fp32"].decoder is not None:
        for precision in ("fp16", "int8"):
            engines[precision] = load_model(args.model, args.device, precision=precision)
    source_path, source = bench_prompt()
    draft = DRAFT_TOKENS if args.draft_tokens is None else args.draft_tokens
    from whence_ls.bench.onnx_engines import available, onnx_engines

    onnx_variants = [v for v in (args.onnx or []) if v != "none"]
    unavailable = available() if onnx_variants else None
    onnx = {} if unavailable or not onnx_variants else onnx_engines(engines["fp32"], onnx_variants, args.threads or torch.get_num_threads())
    llamas = [Llama(args.llama_python, gguf, args.threads or torch.get_num_threads()) for gguf in args.gguf or []] \
        if args.llama_python else []
    weights_mb = weight_bytes(baseline) / 1e6
    reader = StreamingRead(int(weights_mb * 1e6))
    bandwidth = reader.gbps()
    fast = engines["fp32"].decoder is not None
    print(f"model: {baseline.name} on {baseline.device_label}, torch threads: {torch.get_num_threads()}; "
          f"decoder: {'fast (engine/fast_decode.py)' if fast else 'transformers (the fast decoder does not run this model)'}")
    print(f"weights: {weights_mb:.0f} MB in fp32 (an output head tied to the embedding counted once); a streaming read "
          f"of that size here at the start: {bandwidth:.1f} GB/s (the ceiling is the run's best reading: below the table)")
    if args.gguf and not llamas:
        print("llama.cpp: not measured (give --llama-python, the Python of an environment with llama-cpp-python; see docs/benchmarks.md)")
    if unavailable:
        print(unavailable)
    from whence_ls.huge_pages import TUNABLE

    huge = f"{TUNABLE}=1" in os.environ.get("GLIBC_TUNABLES", "")
    print("memory: " + ("large allocations on 2 MB pages (huge_pages.py)" if huge else
                        "4 KB pages (huge pages off: WHENCE_HUGE_PAGES=0, or not available here)"))
    print(f"prompt: {source_path}; {args.new_tokens} new tokens, greedy; {args.repeats} alternating runs after a warm-up; medians")
    print()
    # the rows are printed once every context has run: the bandwidth ceiling is the best streaming
    # read of the whole run (the start's, and one after each context's rows), since this machine's
    # memory bandwidth varies with its neighbours and one reading at the start is not a ceiling
    rows: list[list] = []
    readings = [bandwidth]
    try:
        for context_tokens in args.context_tokens:
            rows.extend(_one_context(baseline, engines, llamas, source, context_tokens, args, draft, onnx, reader))
            readings.append(reader.gbps())
    finally:
        for llama in llamas:
            llama.close()
    ceiling = max(readings)
    print("| context | engine | decode tokens/s | prefill ms | x model.generate | fp32 bandwidth used | the same, paired | mean KL per token (nats) | greedy token differs | same greedy tokens as model.generate |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for tokens, name, decode, prefill, ratio, step_bytes, kl_text, differs, same, paired in rows:
        used = f"{100 * decode * step_bytes / 1e9 / ceiling:.0f}%" if step_bytes else "—"
        paired_text = f"{100 * paired:.0f}%" if paired is not None else "—"
        print(f"| {tokens} | {name} | {decode:.1f} | {prefill:.0f} | {ratio:.2f} | {used} | {paired_text} | {kl_text} | {differs} | {same} |")
    print()
    print(f"fp32 bandwidth used: the bytes a decode step of the row reads (its fp32 weights, and its KV cache at the "
          f"decode's mean length: {kv_bytes_per_position(baseline) / 1e3:.0f} KB a position in fp32, half in llama.cpp's "
          f"default f16 cache) x tokens/s over the best streaming read of the run, "
          f"{ceiling:.1f} GB/s (readings at the start and after each context's rows: "
          + ", ".join(f"{gb:.1f}" for gb in readings) + " GB/s); paired: each timed run's step bytes x tokens/s over "
          "a streaming read taken just before it, the median of the runs")
    _print_step_floor(baseline, engines, source, max(args.context_tokens))
    return 0


def weight_bytes(lm) -> int:
    """Bytes of the model's weights as loaded (an output head tied to the embedding counted once:
    a decode step reads it once, for the logits)."""
    return sum(p.numel() * p.element_size() for p in lm.model.parameters())


def kv_bytes_per_position(lm, element_size: int = 4) -> int:
    """Bytes of keys and values one context position holds in the cache, every layer."""
    config = lm.model.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers * 2 * kv_heads * head_dim * element_size


def time_model_generate(lm, prompt, n: int) -> tuple[float, float, list[int]]:
    """Plain greedy `model.generate` of `n` tokens after `prompt` ([1, T] ids on the model's
    device): decode tokens/s (the one-token run's time taken off as the prefill), prefill ms,
    and the tokens. A GPU is synchronised around each run."""
    import torch

    def sync() -> None:
        if lm.device.type == "cuda":
            torch.cuda.synchronize()

    free = {"eos_token_id": None, "pad_token_id": lm.tokenizer.pad_token_id, "do_sample": False}
    with torch.inference_mode():
        sync()
        started = time.perf_counter()
        lm.model.generate(prompt, max_new_tokens=1, min_new_tokens=1, **free)
        sync()
        prefill = time.perf_counter() - started
        started = time.perf_counter()
        out = lm.model.generate(prompt, max_new_tokens=n, min_new_tokens=n, **free)
        sync()
        total = time.perf_counter() - started
    return (n - 1) / max(total - prefill, 1e-9), 1000 * prefill, out[0, prompt.shape[1]:].tolist()


def _print_step_floor(baseline, engines: dict, source: str, context_tokens: int) -> None:
    from whence_ls.bench.decode_floor import step_floor

    ids = baseline.tokenizer(source, add_special_tokens=False)["input_ids"][:context_tokens]
    rows = step_floor(engines, ids)
    if rows:
        print()
        print(f"Where a one-token step's time goes ({len(ids)} context tokens; medians of alternating runs, 32 steps each):")
        print()
        print("| precision | the step's products alone (ms) | whole step (ms) | products' share |")
        print("|---|---|---|---|")
        for row in rows:
            print(row)


def _one_context(baseline, engines: dict, llamas: list, source: str, context_tokens: int, args, draft: int,
                 onnx: dict | None = None, reader: StreamingRead | None = None) -> list[list]:
    """Time one context's rows; returns them to print: (context tokens, name, decode tokens/s,
    prefill ms, x model.generate, the bytes a decode step reads where the row reads fp32 weights
    without drafts (else None), KL, greedy changes, same greedy tokens, the paired bandwidth share
    or None)."""
    import torch

    from whence_ls.engine.context import build_context
    from whence_ls.engine.generation import generate

    ids = baseline.tokenizer(source, add_special_tokens=False, return_offsets_mapping=True)
    end = ids["offset_mapping"][min(context_tokens, len(ids["input_ids"]) - 1)][0]
    context = build_context(baseline.tokenizer, source, end, context_tokens)
    n = args.new_tokens
    prompt = torch.tensor([context.token_ids], device=baseline.device)
    outputs: dict[str, list[int]] = {}

    def ours(lm, draft_tokens: int, key: str) -> Callable[[], tuple[float, float]]:
        def once() -> tuple[float, float]:
            result = generate(lm, context, max_new_tokens=n, draft_tokens=draft_tokens)
            outputs[key] = [t.token_id for t in result.tokens]
            t = result.timings
            return t["decode_tokens_per_s"], 1000 * t["prefill_s"]
        return once

    def plain() -> tuple[float, float]:
        decode, prefill, outputs["plain"] = time_model_generate(baseline, prompt, n)
        return decode, prefill

    rows: list[tuple[str, str, Callable[[], tuple[float, float]]]] = []
    for precision, lm in engines.items():
        rows.append((f"whence-ls {precision}, no drafts", f"{precision}-none", ours(lm, 0, f"{precision}-none")))
        rows.append((f"whence-ls {precision}, prompt-lookup drafts ({draft})", f"{precision}-drafts", ours(lm, draft, f"{precision}-drafts")))
    for variant, (label, lm) in (onnx or {}).items():
        rows.append((f"{label}, no drafts", f"onnx-{variant}-none", ours(lm, 0, f"onnx-{variant}-none")))
        rows.append((f"{label}, prompt-lookup drafts ({draft})", f"onnx-{variant}-drafts", ours(lm, draft, f"onnx-{variant}-drafts")))
    rows.append(("transformers model.generate (plain greedy)", "plain", plain))
    for k, llama in enumerate(llamas):
        rows.append((f"llama.cpp ({llama.label})", f"llama{k}", lambda llama=llama, k=k: llama.run(context.token_ids, n, outputs, f"llama{k}")))
    for _, _, fn in rows:  # warm-up: first calls pay for lazy initialisation
        fn()
    # rows that read fp32 weights without drafts: their bandwidth is the goal's measure
    fp32_weights = {"fp32-none", "plain", *(f"onnx-{v}-none" for v in (onnx or {}) if v.split("-")[0] == "fp32"),
                    *(f"llama{k}" for k, llama in enumerate(llamas) if "f32" in llama.label.lower())}
    # what one decode step of such a row reads: the weights, and the keys and values of every
    # position so far (the decode's mean length), fp32 in ours and transformers', f16 in
    # llama.cpp's default cache; at 1,000 context tokens the cache is ~8% of the embedded model's
    # step
    weights = weight_bytes(baseline)
    positions = len(context.token_ids) + (n - 1) / 2
    step_bytes = {key: weights + positions * kv_bytes_per_position(baseline, 2 if key.startswith("llama") else 4)
                  for key in fp32_weights}
    runs: dict[str, list[tuple[float, float]]] = {key: [] for _, key, _ in rows}
    paired: dict[str, list[float]] = {key: [] for key in fp32_weights}
    partners = llama_partners(list(onnx or {}), [llama.label for llama in llamas])
    for repeat in range(args.repeats):
        for _, key, fn in _paired_order(rows, partners, flip=repeat % 2 == 1):
            reading = reader.gbps(3) if reader is not None and key in fp32_weights else None
            runs[key].append(fn())
            if reading:
                paired[key].append(runs[key][-1][0] * step_bytes[key] / 1e9 / reading)
    reference = outputs.get("plain", [])
    # the divergence from fp32 is a property of an engine's arithmetic, not of drafts (which
    # check their tokens against the same logits): measured once per engine, teacher-forced on
    # the fp32 greedy continuation
    truth = fp32_logprobs(baseline, list(context.token_ids), reference)
    divergence: dict[str, Divergence | None] = {}
    for precision, lm in engines.items():
        divergence[f"{precision}-none"] = divergence[f"{precision}-drafts"] = kl_of_engine(lm, list(context.token_ids), reference, truth)
    for variant, (_, lm) in (onnx or {}).items():
        divergence[f"onnx-{variant}-none"] = divergence[f"onnx-{variant}-drafts"] = kl_of_engine(lm, list(context.token_ids), reference, truth)
    for k, llama in enumerate(llamas):
        divergence[f"llama{k}"] = llama.divergence(list(context.token_ids), reference, truth)
    plain_speed = statistics.median(r[0] for r in runs["plain"])
    printed: list[list] = []
    for name, key, _ in rows:
        decode = statistics.median(r[0] for r in runs[key])
        prefill = statistics.median(r[1] for r in runs[key])
        produced = outputs.get(key, [])
        shared = next((i for i, (a, b) in enumerate(zip(produced, reference)) if a != b), min(len(produced), len(reference)))
        same = "reference" if key == "plain" else ("yes" if shared == len(produced) else f"first {shared} of {len(produced)}")
        kl = divergence.get(key)
        kl_text = "0 (reference)" if key == "plain" else (f"{kl.mean_kl:.2g}" if kl is not None else "—")
        differs = "—" if kl is None else f"{kl.argmax_changed} of {kl.positions}"
        printed.append([len(context.token_ids), name, decode, prefill, decode / plain_speed, step_bytes.get(key),
                        kl_text, differs, same, statistics.median(paired[key]) if paired.get(key) else None])
    names = {key: name for name, key, _ in rows}
    for ours, theirs in partners.items():
        ratios = [a[0] / b[0] for a, b in zip(runs[ours], runs[theirs]) if b[0] > 0]
        if ratios:
            print(f"{len(context.token_ids)} context tokens: {names[ours]} / {names[theirs]}, runs side by side: "
                  f"median {statistics.median(ratios):.2f}x, each run " + ", ".join(f"{r:.2f}" for r in ratios))
    return printed


def llama_partners(onnx_variants: list[str], llama_labels: list[str]) -> dict[str, str]:
    """Row key of an onnxruntime row without drafts -> the key of the llama.cpp row it is held
    against (issue 22: int8 against Q8_0, fp32 against F32), matched by the GGUF's name; a llama.cpp
    row is held against the first such row only (it runs once a repeat)."""
    wanted = {"int8": "q8_0", "fp32": "f32"}
    partners = {}
    for variant in onnx_variants:
        kind = wanted.get(variant.split("-")[0])
        match = next((k for k, label in enumerate(llama_labels) if kind and f"-{kind}." in label.lower()), None)
        if match is not None and f"llama{match}" not in partners.values():
            partners[f"onnx-{variant}-none"] = f"llama{match}"
    return partners


def _paired_order(rows: list, partners: dict[str, str], flip: bool) -> list:
    """`rows` with each llama.cpp row run right beside the row held against it (its partner
    first, or second when `flip`: alternating cancels a drift of the machine's speed), so that
    each pair's ratio compares runs of the same moment."""
    by_key = {row[1]: row for row in rows}
    placed = set(partners.values())
    order = []
    for row in rows:
        if row[1] in placed:
            continue
        partner = partners.get(row[1])
        pair = [row] if partner is None else [row, by_key[partner]]
        order.extend(reversed(pair) if flip else pair)
    return order
