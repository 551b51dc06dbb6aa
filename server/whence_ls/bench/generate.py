"""`whence-ls bench generate`: decoding speed against plain `model.generate` and llama.cpp.

Every engine decodes greedily from the same prompt (real code the tests never use) at each
context size; runs alternate so that machine noise hits all alike, and medians are compared.
Rows: whence-ls without drafts, with prompt-lookup drafts (the default), transformers'
`model.generate`, and llama.cpp (llama-cpp-python, in a bench-only environment) on a GGUF of
the same model when `--gguf` is given and `llama_cpp` imports. Greedy tokens are compared with
`model.generate`'s: the speed-ups must not change the output.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def bench_prompt() -> tuple[str, str]:
    """Real code the tests do not use: the stdlib's `textwrap.py`."""
    import textwrap

    with open(textwrap.__file__, encoding="utf-8") as handle:
        return textwrap.__file__, handle.read()


def run(args) -> int:
    import torch

    from whence_ls.engine.generation import DRAFT_TOKENS
    from whence_ls.engine.loading import load_model

    lm = load_model(args.model, args.device)
    source_path, source = bench_prompt()
    draft = DRAFT_TOKENS if args.draft_tokens is None else args.draft_tokens
    llama = _llama(args.llama_python, args.gguf, args.threads) if args.gguf else None
    print(f"model: {lm.name} on {lm.device_label} ({str(lm.dtype).removeprefix('torch.')}), torch threads: {torch.get_num_threads()}")
    if args.gguf and llama is None:
        print("llama.cpp: not measured (give --llama-python, the Python of an environment with llama-cpp-python; see docs/benchmarks.md)")
    elif llama is not None:
        print(f"llama.cpp: {llama.label}")
    print(f"prompt: {source_path}; {args.new_tokens} new tokens, greedy; {args.repeats} alternating runs after a warm-up; medians")
    print()
    print("| context | engine | decode tokens/s | prefill ms | same greedy tokens as model.generate |")
    print("|---|---|---|---|---|")
    for context_tokens in args.context_tokens:
        _one_context(lm, source, context_tokens, args, draft, llama)
    return 0


def _one_context(lm, source: str, context_tokens: int, args, draft: int, llama) -> None:
    import torch

    from whence_ls.engine.context import build_context
    from whence_ls.engine.generation import generate

    ids = lm.tokenizer(source, add_special_tokens=False, return_offsets_mapping=True)
    end = ids["offset_mapping"][min(context_tokens, len(ids["input_ids"]) - 1)][0]
    context = build_context(lm.tokenizer, source, end, context_tokens)
    n = args.new_tokens
    prompt = torch.tensor([context.token_ids], device=lm.device)
    eos_free = {"eos_token_id": None, "pad_token_id": lm.tokenizer.pad_token_id}
    outputs: dict[str, list[int]] = {}

    def ours(draft_tokens: int, label: str) -> Callable[[], tuple[float, float]]:
        def once() -> tuple[float, float]:
            result = generate(lm, context, max_new_tokens=n, draft_tokens=draft_tokens)
            outputs[label] = [t.token_id for t in result.tokens]
            t = result.timings
            return t["decode_tokens_per_s"], 1000 * t["prefill_s"]
        return once

    def plain() -> tuple[float, float]:
        with torch.inference_mode():
            started = time.perf_counter()
            lm.model.generate(prompt, max_new_tokens=1, min_new_tokens=1, do_sample=False, **eos_free)
            prefill = time.perf_counter() - started
            started = time.perf_counter()
            out = lm.model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, **eos_free)
            total = time.perf_counter() - started
        outputs["plain"] = out[0, prompt.shape[1]:].tolist()
        return (n - 1) / max(total - prefill, 1e-9), 1000 * prefill

    engines: list[tuple[str, Callable[[], tuple[float, float]]]] = [
        ("whence-ls generate, no drafts", ours(0, "none")),
        (f"whence-ls generate, prompt-lookup drafts ({draft})", ours(draft, "drafts")),
        ("transformers model.generate (plain greedy)", plain),
    ]
    if llama is not None:
        engines.append((f"llama.cpp ({llama.label})", lambda: llama.run(context.token_ids, n, outputs)))
    for _, fn in engines:  # warm-up: first calls pay for lazy initialisation
        fn()
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in engines}
    for _ in range(args.repeats):
        for name, fn in engines:
            runs[name].append(fn())
    reference = outputs.get("plain", [])
    keys = {engines[0][0]: "none", engines[1][0]: "drafts", engines[2][0]: "plain"}
    if llama is not None:
        keys[engines[3][0]] = "llama"
    for name, _ in engines:
        decode = statistics.median(r[0] for r in runs[name])
        prefill = statistics.median(r[1] for r in runs[name])
        produced = outputs.get(keys[name], [])
        shared = next((i for i, (a, b) in enumerate(zip(produced, reference)) if a != b), min(len(produced), len(reference)))
        same = "reference" if keys[name] == "plain" else ("yes" if shared == len(produced) else f"first {shared} of {len(produced)}")
        print(f"| {len(context.token_ids)} | {name} | {decode:.1f} | {prefill:.0f} | {same} |")


class _Llama:
    """llama.cpp in its own environment's Python (`llama_driver.py`), fed the same token ids."""

    def __init__(self, python: str, gguf: str, threads: int) -> None:
        import json
        import os
        import subprocess
        from pathlib import Path

        driver = Path(__file__).with_name("llama_driver.py")
        # -I: the driver sits beside bench modules (typing.py) that must not shadow the stdlib
        self.process = subprocess.Popen([python, "-I", str(driver), gguf, str(threads)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        ready = self.process.stdout.readline()
        if not ready:
            raise SystemExit(f"whence-ls bench generate: llama.cpp did not start ({python} {driver})")
        self.threads = json.loads(ready)["n_threads"]
        self.label = f"{os.path.basename(gguf)}, {self.threads} threads"

    def run(self, token_ids: list[int], n: int, outputs: dict) -> tuple[float, float]:
        import json

        self.process.stdin.write(json.dumps({"ids": list(token_ids), "n": n}) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        outputs["llama"] = answer["tokens"]
        return answer["decode_tokens_per_s"], answer["prefill_ms"]


def _llama(python: str | None, gguf: str, threads: int | None) -> _Llama | None:
    import torch

    if not python:
        return None
    return _Llama(python, gguf, threads or torch.get_num_threads())
