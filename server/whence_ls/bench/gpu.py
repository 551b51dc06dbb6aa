"""`whence-ls bench gpu`: the CUDA path, checked against the CPU path on the same model.

CI has no GPU, so nothing else runs this code on one; `scripts/gpu-check.sh` runs it on a machine
that has one. Each step prints what it measured, or its error, and the next step runs anyway:

- completions: the greedy tokens on cuda (bf16, the default there) against the cpu's (fp32), the
  completion's seconds on each, warm;
- divergence: the mean KL per token of the cuda forward (bf16, and fp32 on cuda) from the cpu's
  fp32 one, teacher-forced on the cpu's greedy continuation, and how often the argmax changes;
- decode speed on cuda: tokens/s and prefill ms of our generation loop and of plain
  `model.generate`, at 300 and 1000 context tokens of `bench generate`'s prompt;
- attribution: every method's rows on cuda (seconds for a whole completion) and how they agree
  with the cpu's rows of the same tokens (the top source the same, Spearman of the scores);
- live rows read while decoding on cuda against the rows computed afterwards;
- the sparse-autoencoder features of the least confident tokens, on cuda;
- peak GPU memory.
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path

# the sample the README's first command completes (scripts/sample.py at 8:9)
SAMPLE = Path(__file__).resolve().parents[3] / "scripts" / "sample.py"


class Steps:
    """Runs named steps; a failure is printed with its traceback and the run goes on."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.results: dict[str, object] = {}

    def run(self, name: str, fn):
        print(f"\n## {name}", flush=True)
        started = time.perf_counter()
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - a check reports every failure and goes on
            traceback.print_exc()
            print(f"FAILED: {type(exc).__name__}: {exc}", flush=True)
            self.failed.append(name)
            self.results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            return None
        print(f"({time.perf_counter() - started:.1f} s)", flush=True)
        self.results[name] = value
        return value


def _prompts(tokenizer) -> list[tuple[str, str, int]]:
    """(label, document, cursor): the README's sample, and `bench generate`'s prompt cut after
    300 and 1000 tokens."""
    from whence_ls.bench.generate import bench_prompt
    from whence_ls.sourcefile import offset_of

    sample = SAMPLE.read_text(encoding="utf-8")
    prompts = [("sample.py:8:9", sample, offset_of(sample, 8, 9))]
    path, source = bench_prompt()
    offsets = tokenizer(source, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    for n in (300, 1000):
        prompts.append((f"{Path(path).name}@{n} tokens", source, offsets[min(n, len(offsets) - 1)][0]))
    return prompts


def _complete(lm, text: str, cursor: int, new_tokens: int):
    """As the server completes: the default method's rows read while decoding, where it can."""
    from whence_ls.engine.attribution import default_method
    from whence_ls.engine.attribution.live_rows import live_part
    from whence_ls.engine.generation import complete_at

    method = default_method(lm)
    return complete_at(lm, text, cursor, language="python", max_new_tokens=new_tokens, context_tokens=1024,
                       live_rows=live_part(method))


def _completions(cpu, gpu, prompts, new_tokens: int) -> tuple[list[dict], dict]:
    rows, records = [], {}
    print("| prompt | tokens cuda / cpu | same greedy tokens | cuda s (warm) | cpu s (warm) | cuda decode tok/s |")
    print("|---|---|---|---|---|---|")
    for label, text, cursor in prompts:
        made = {}
        for name, lm in (("cuda", gpu), ("cpu", cpu)):
            _complete(lm, text, cursor, new_tokens)  # warm-up: the first call pays for lazy set-up
            started = time.perf_counter()
            made[name] = (_complete(lm, text, cursor, new_tokens), time.perf_counter() - started)
        (g, g_s), (c, c_s) = made["cuda"], made["cpu"]
        g_ids, c_ids = [t.token_id for t in g.tokens], [t.token_id for t in c.tokens]
        shared = next((i for i, (a, b) in enumerate(zip(g_ids, c_ids)) if a != b), min(len(g_ids), len(c_ids)))
        same = "yes" if g_ids == c_ids else f"first {shared}"
        rate = g.timings.get("decode_tokens_per_s", float("nan"))
        print(f"| {label} | {len(g_ids)} / {len(c_ids)} | {same} | {g_s:.3f} | {c_s:.3f} | {rate:.1f} |", flush=True)
        rows.append({"prompt": label, "cuda_tokens": len(g_ids), "cpu_tokens": len(c_ids), "shared_prefix": shared,
                     "cuda_s": g_s, "cpu_s": c_s, "cuda_decode_tokens_per_s": rate, "cuda_text": g.text, "cpu_text": c.text})
        records[label] = (text, cursor, g, c)
    return rows, records


def _divergence(cpu, gpus: dict, records: dict) -> list[dict]:
    from whence_ls.bench.divergence import compare, fp32_logprobs

    rows = []
    print("| prompt | forward | mean KL from cpu fp32 (nats/token) | argmax changed |")
    print("|---|---|---|---|")
    for label, (_, _, _, c) in records.items():
        context = list(c.context.token_ids)
        continuation = [t.token_id for t in c.tokens]
        if not continuation:
            continue
        truth = fp32_logprobs(cpu, context, continuation)
        for name, lm in gpus.items():
            d = compare(truth, fp32_logprobs(lm, context, continuation))
            print(f"| {label} | {name} | {d.mean_kl:.2g} | {d.argmax_changed} of {d.positions} |", flush=True)
            rows.append({"prompt": label, "forward": name, "mean_kl": d.mean_kl, "argmax_changed": d.argmax_changed,
                         "positions": d.positions})
    return rows


def _speed(lms: dict, repeats: int, new_tokens: int) -> list[dict]:
    rows = []
    print("| context tokens | weights | engine | decode tok/s | prefill ms |")
    print("|---|---|---|---|---|")
    for label, lm in lms.items():
        rows += _speed_of(label, lm, repeats, new_tokens)
    return rows


def _speed_of(label: str, gpu, repeats: int, new_tokens: int) -> list[dict]:
    import torch

    from whence_ls.bench.generate import bench_prompt, time_model_generate
    from whence_ls.engine.context import build_context
    from whence_ls.engine.generation import generate

    _, source = bench_prompt()
    offsets = gpu.tokenizer(source, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    rows = []
    for n in (300, 1000):
        context = build_context(gpu.tokenizer, source, offsets[min(n, len(offsets) - 1)][0], n)
        prompt = torch.tensor([context.token_ids], device=gpu.device)

        def ours(draft: int) -> tuple[float, float]:
            t = generate(gpu, context, max_new_tokens=new_tokens, draft_tokens=draft).timings
            return t["decode_tokens_per_s"], 1000 * t["prefill_s"]

        def plain() -> tuple[float, float]:
            decode, prefill, _tokens = time_model_generate(gpu, prompt, new_tokens)
            return decode, prefill

        engines = {"whence-ls, no drafts": lambda: ours(0), "whence-ls, prompt-lookup drafts": lambda: ours(4),
                   "transformers model.generate": plain}
        for fn in engines.values():
            fn()  # warm-up
        for name, fn in engines.items():
            runs = [fn() for _ in range(repeats)]
            decode, prefill = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
            print(f"| {len(context.token_ids)} | {label} | {name} | {decode:.1f} | {prefill:.1f} |", flush=True)
            rows.append({"context_tokens": len(context.token_ids), "weights": label, "engine": name, "decode_tokens_per_s": decode,
                         "prefill_ms": prefill})
    return rows


def _fresh(record):
    """A copy of `record` with no rows: what a method computes on it is its own."""
    fresh = copy.copy(record)
    fresh.attribution, fresh.live_rows, fresh.verified = {}, {}, {}
    fresh.attribution_method = None
    return fresh


def _top(row) -> int:
    scores = [abs(s) for s in row.scores] if row.rank_by_abs else list(row.scores)
    return max(range(len(scores)), key=scores.__getitem__) if scores else -1


def _agreement(a: dict, b: dict) -> tuple[float, float]:
    """Share of tokens whose top source is the same, and the mean Spearman of the scores."""
    from scipy.stats import spearmanr

    same, rhos = 0, []
    for index in b:
        same += _top(a[index]) == _top(b[index])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a row with no signal is constant: nan, skipped below
            rho = spearmanr(a[index].scores, b[index].scores).statistic
        if rho == rho:  # nan where a row is constant (no signal)
            rhos.append(float(rho))
    return same / max(1, len(b)), statistics.fmean(rhos) if rhos else float("nan")


def _attribution(cpu, gpu, record, compare_tokens: int, methods: list[str]) -> list[dict]:
    from whence_ls.engine.attribution.api import attribute_rows

    every = list(range(len(record.tokens)))
    checked = record.least_confident_first()[:compare_tokens]
    rows = []
    print(f"| method | cuda s ({len(every)} tokens) | cpu s ({len(checked)} tokens) | top source same as cpu | mean Spearman vs cpu |")
    print("|---|---|---|---|---|")
    for method in methods:
        try:
            on_gpu = _fresh(record)
            attribute_rows(gpu, on_gpu, checked, method)  # warm-up, and the first call's lazy set-up
            on_gpu = _fresh(record)
            started = time.perf_counter()
            g_rows = attribute_rows(gpu, on_gpu, every, method)
            g_s = time.perf_counter() - started
            started = time.perf_counter()
            c_rows = attribute_rows(cpu, _fresh(record), checked, method)
            c_s = time.perf_counter() - started
            top, rho = _agreement(g_rows, c_rows)
        except Exception as exc:  # noqa: BLE001 - one method's failure is reported, the rest still run
            traceback.print_exc()
            print(f"| {method} | FAILED: {type(exc).__name__}: {exc} | | | |", flush=True)
            rows.append({"method": method, "error": f"{type(exc).__name__}: {exc}"})
            continue
        print(f"| {method} | {g_s:.2f} | {c_s:.2f} | {100 * top:.0f}% | {rho:.3f} |", flush=True)
        rows.append({"method": method, "cuda_s": g_s, "cuda_tokens": len(every), "cpu_s": c_s, "cpu_tokens": len(checked),
                     "top_same": top, "spearman": rho})
    return rows


def _live_rows(gpu, record) -> dict:
    """The default method's rows read while decoding on the device against the same rows computed
    afterwards."""
    from whence_ls.engine.attribution.api import attribute_rows, default_method

    method = default_method(gpu)
    every = list(range(len(record.tokens)))
    if not record.live_rows:
        print(f"no live rows on this record (default method {method}): generation computed none on cuda")
        return {"live_rows": 0, "method": method}
    live = attribute_rows(gpu, copy.copy(record), every, method)
    after = attribute_rows(gpu, _fresh(record), every, method)
    top, rho = _agreement(live, after)
    gap = max(max(abs(x - y) for x, y in zip(live[i].scores, after[i].scores)) for i in every)
    print(f"{len(record.live_rows)} live rows ({method}); top source the same as afterwards: {100 * top:.0f}%, "
          f"mean Spearman {rho:.4f}, largest score gap {gap:.2g}")
    return {"live_rows": len(record.live_rows), "method": method, "top_same": top, "spearman": rho, "max_gap": gap}


def _same_explainers(cpu, gpu) -> dict:
    """The calibration, the stacked scorer and the feature set the cpu finds for these weights
    must be found on the other device too: they are keyed by a fingerprint of the weights."""
    from whence_ls.engine.attribution.api import default_method
    from whence_ls.engine.attribution.stacked_attention import load_scorer
    from whence_ls.engine.sae import load_for

    def found(lm) -> dict:
        return {"default_method": default_method(lm), "stacked_scorer": load_scorer(lm) is not None,
                "feature_set": load_for(lm)[0] is not None}

    on_cpu, on_gpu = found(cpu), found(gpu)
    print(f"cpu: {on_cpu}\n{gpu.device_label}: {on_gpu}")
    if on_cpu != on_gpu:
        raise AssertionError(f"{gpu.device_label} finds other explainers than the cpu for the same weights")
    return on_gpu


def _features(gpu, record, text: str) -> dict:
    from whence_ls.commands.features_output import features_json
    from whence_ls.engine.sae import sae_dir, shipped_dir

    if not any((d / "manifest.json").is_file() for d in (sae_dir(gpu), shipped_dir(gpu))):
        print("this model has no sparse-autoencoder set: skipped")
        return {"skipped": "no feature set for this model"}

    found = features_json(gpu, record, text)
    print(f"{len(found)} tokens with features; first: {json.dumps(found[0], ensure_ascii=False)[:300] if found else '-'}")
    return {"tokens_with_features": len(found)}


def run(args) -> int:
    import torch

    from whence_ls.engine.loading import load_model
    from whence_ls.errors import WhenceError

    from whence_ls.engine.attribution.catalogue import METHODS

    methods = args.methods or list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise WhenceError(f"unknown attribution method(s) {', '.join(unknown)}: use {', '.join(METHODS)}")
    device = args.device  # "cpu" only rehearses the check where there is no GPU (the tests do)
    if device == "cuda":
        if not torch.cuda.is_available():
            raise WhenceError("bench gpu needs a CUDA GPU, and torch sees none (--device cpu rehearses it on the cpu)")
        props = torch.cuda.get_device_properties(0)
        print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {props.name}, {props.total_memory / 2**30:.0f} GiB, "
              f"compute capability {props.major}.{props.minor}; cpu threads {torch.get_num_threads()}")
    steps = Steps()
    cpu = steps.run("load on cpu (fp32)", lambda: load_model(args.model, "cpu", precision="fp32"))
    gpu = steps.run(f"load on {device} (its default dtype)", lambda: load_model(args.model, device))
    if cpu is None or gpu is None:
        return 1
    print(f"cuda: {gpu.model.dtype}, loaded in {gpu.load_seconds:.1f} s; cpu: loaded in {cpu.load_seconds:.1f} s")
    steps.run("the same calibration, scorer and features as on the cpu", lambda: _same_explainers(cpu, gpu))
    prompts = _prompts(gpu.tokenizer)
    made = steps.run("completions, cuda against cpu", lambda: _completions(cpu, gpu, prompts, args.new_tokens))
    records = made[1] if made else {}

    other_dtype = torch.bfloat16 if gpu.model.dtype == torch.float32 else torch.float32

    def in_other_dtype():
        lm = load_model(args.model, device, decoder="transformers")  # no cpu fast decoder holding fp32 weights
        lm.model.to(other_dtype)  # the forward alone: what the other dtype costs and gains
        return lm

    other = steps.run(f"load on {device} in {other_dtype} (the divergence and speed rows)", in_other_dtype)
    forwards = {f"{device} {gpu.model.dtype}": gpu, **({f"{device} {other_dtype}": other} if other is not None else {})}
    steps.run("divergence from cpu fp32", lambda: _divergence(cpu, forwards, records))
    steps.run(f"decode speed on {device}", lambda: _speed(forwards, args.repeats, args.new_tokens))
    # the attribution target: the longest completion (a multi-line one, as a person reads)
    target = max(records, key=lambda label: len(records[label][2].tokens), default=None)
    if target is not None:
        text, _, record, _ = records[target]
        steps.run(f"attribution methods on cuda ({target})", lambda: _attribution(cpu, gpu, record, args.compare_tokens, methods))
        steps.run("live rows on cuda", lambda: _live_rows(gpu, record))
        steps.run("sparse-autoencoder features on cuda", lambda: _features(gpu, record, text))
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        print(f"\npeak GPU memory allocated: {peak:.0f} MiB")
        steps.results["peak_gpu_mib"] = peak
    if args.json:
        Path(args.json).write_text(json.dumps(steps.results, default=str, indent=1), encoding="utf-8")
    if steps.failed:
        print(f"\nFAILED steps: {', '.join(steps.failed)}", file=sys.stderr)
        return 1
    print(f"\nevery step ran on {device}")
    return 0
