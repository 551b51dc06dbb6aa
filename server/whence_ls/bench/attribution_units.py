"""`whence-ls bench attribution`: faithfulness and cost of every attribution method, with a
random and a recency baseline, Inseq (when installed: `pip install whence-ls[bench]`) and
Captum's LLMGradientAttribution, on completion prompts cut from the installed Python standard
library (real code the tests never use; chosen by a fixed hash order, see `select_prompts`).

Cost is measured in seconds and in forward-equivalents: seconds divided by the time of one
no-grad forward over the same sequence, measured in the same run (the machine is shared, so
only ratios within one run mean anything).
"""


from __future__ import annotations

import copy
import hashlib
import json
import random
import sys
import sysconfig
import time
from pathlib import Path

from whence_ls.bench.attribution_baselines import Baselines
from whence_ls.bench.attribution_units_tables import FULL_MATRIX_METHODS, merge_results, render_tables

# stdlib parts that are tests, demos or vendored copies of other projects' code
_SKIP_PARTS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "__pycache__", "ensurepip", "turtledemo", "pydoc_data"}


def select_prompts(count: int) -> list[dict]:
    """Completion prompts from the installed standard library, in a fixed order: files sorted
    by the SHA-1 of their relative path, one function per file (the first with at least four
    body statements, not on the file's first lines), cut at the start of its third body
    statement. The prompt is the file up to there; the model completes from it."""
    from whence_ls.grammars import get_parser

    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py") if not _SKIP_PARTS.intersection(p.relative_to(root).parts)]
    files.sort(key=lambda p: hashlib.sha1(str(p.relative_to(root)).encode()).hexdigest())
    parser = get_parser("python")
    prompts = []
    for path in files:
        if len(prompts) >= count:
            break
        try:
            data = path.read_bytes()
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if len(data) != len(text):  # byte offsets == char offsets keeps the cut simple
            continue
        found = _first_function_cut(parser.parse(data).root_node)
        if found is None:
            continue
        cut, name = found
        prompts.append({
            "source": str(path.relative_to(root)),
            "function": name,
            "line": text.count("\n", 0, cut) + 1,
            "text": text[:cut],
        })
    return prompts


def _first_function_cut(root):
    stack = [root]
    while stack:
        node = stack.pop(0)
        if node.type == "function_definition" and node.start_point[0] >= 20:
            body = node.child_by_field_name("body")
            statements = [c for c in body.named_children if c.type != "comment"] if body is not None else []
            if len(statements) >= 4 and statements[2].start_point[0] > statements[1].start_point[0]:
                name = node.child_by_field_name("name")
                return statements[2].start_byte, name.text.decode() if name is not None else "?"
        stack.extend(node.named_children)
    return None


def _fresh(record):
    clone = copy.copy(record)
    clone.attribution = {}
    clone.id = f"{record.id}-{time.perf_counter_ns()}"
    return clone


def _forward_seconds(lm, ids, repeats: int = 2) -> float:
    import torch

    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            started = time.perf_counter()
            lm.model(input_ids=ids.unsqueeze(0), use_cache=False, logits_to_keep=1)
            times.append(time.perf_counter() - started)
    return min(times)


def run(args) -> int:
    import torch

    if args.render:
        print(render_tables(merge_results([json.loads(Path(p).read_text()) for p in args.render])))
        return 0
    from whence_ls.engine.loading import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    lm = load_model(args.model, "cpu")
    if args.ig_sweep:
        sweep = _ig_sweep(lm, args, [int(x) for x in args.ig_sweep.split(",") if x.strip()])
        if args.out:
            Path(args.out).write_text(json.dumps(sweep, indent=1))
        print("| prompt | target | baseline | steps | sum of attributions | completeness delta | FE |")
        print("|---|---|---|---:|---:|---:|---:|")
        for r in sweep:
            print(f"| {r['prompt']} | {r['token']!r} | {r['baseline']} | {r['steps']} | {r['raw_sum']:.3f} | {r['delta']:.3f} | {r['fe']:.1f} |")
        return 0
    baselines = Baselines(lm, not args.no_inseq, not args.no_captum_llm, args.ig_steps)
    results = {
        "model": lm.name,
        "torch_threads": torch.get_num_threads(),
        "inseq_error": baselines.inseq_error,
        "captum_error": baselines.captum_error,
        "settings": {k: v for k, v in vars(args).items() if k != "run"},
    }
    if not args.skip_cost:
        results["cost"] = _cost(lm, baselines, args)
        _emit(results, args)
    results["suite"] = _suite(lm, baselines, args) if not args.skip_suite else {"prompts": [], "skipped": []}
    _emit(results, args)
    print(render_tables(results))
    return 0


def _emit(results, args) -> None:
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _ig_sweep(lm, args, steps_list: list[int]) -> list[dict]:
    """Completeness of integrated gradients against steps and baseline, on the targets of the
    first `--prompts` suite prompts: |sum of attributions - (f(x) - f(baseline))|."""
    from whence_ls.engine.attribution import attribute_rows, make_method
    from whence_ls.engine.generation import complete_at

    rows = []
    for prompt in select_prompts(args.prompts):
        text = prompt["text"]
        record = complete_at(lm, text, len(text), language="python", max_new_tokens=args.max_new_tokens, context_tokens=args.context_tokens)
        if not record.tokens:
            continue
        target = _pick_target(record)
        forward_s = _forward_seconds(lm, torch_ids(lm, record))
        for baseline in ("space", "zero"):
            for steps in steps_list:
                started = time.perf_counter()
                row = attribute_rows(lm, _fresh(record), [target], make_method("integrated_gradients", steps=steps, baseline=baseline), language="python")[target]
                rows.append({"prompt": f"{prompt['source']}:{prompt['line']}", "token": record.tokens[target].text, "baseline": baseline,
                             "steps": steps, "raw_sum": row.raw_sum, "delta": row.extra["completeness_delta"],
                             "fe": (time.perf_counter() - started) / forward_s})
                _log(f"  IG {baseline} {steps} steps: delta {row.extra['completeness_delta']:.3f}")
    return rows


def _cost(lm, baselines, args) -> dict:
    """Full matrix of one `cost_new_tokens` completion after `cost_context` tokens."""
    from whence_ls.engine.attribution import attribute_rows, least_confident_order, make_method, release_graph
    from whence_ls.engine.context import build_context
    from whence_ls.engine.generation import generate

    prompt = select_prompts(args.prompts + 1)[-1]  # not one of the suite's prompts
    text = prompt["text"]
    context = build_context(lm.tokenizer, text, len(text), args.cost_context)
    started = time.perf_counter()
    record = generate(lm, context, max_new_tokens=args.cost_new_tokens)  # no block stop: exactly N tokens
    generate_s = time.perf_counter() - started
    job_ids = torch_ids(lm, record)
    forward_s = _forward_seconds(lm, job_ids, repeats=3)
    n = len(record.tokens)
    cost = {"prompt": f"{prompt['source']}:{prompt['line']}", "context_tokens": len(context.token_ids), "generated_tokens": n,
            "forward_s": forward_s, "generate_s": generate_s, "methods": {}}
    _log(f"cost prompt {cost['prompt']}: {len(context.token_ids)}+{n} tokens, forward {forward_s:.2f}s")
    order = least_confident_order(record)

    def measure(name, fn, rows):
        # the machine is shared and its load drifts: the forward-equivalent unit is the mean of
        # forwards timed right before and right after this method, not one taken at the start
        before = _forward_seconds(lm, job_ids)
        started = time.perf_counter()
        produced = fn()
        seconds = time.perf_counter() - started
        unit = (before + _forward_seconds(lm, job_ids)) / 2
        cost["methods"][name] = {"seconds": seconds, "rows": rows, "forward_s": unit, "forward_equivalents": seconds / unit,
                                 "fe_per_row": seconds / unit / rows, "valid": produced is not None}
        _log(f"  {name}: {seconds:.2f}s for {rows} rows = {seconds / unit / rows:.2f} forward-equivalents per row (forward {unit:.2f}s)")

    # contrastive and gradient norm share input x gradient's graph and backwards: same cost
    for method in ("input_x_gradient", "attention_rollout"):
        release_graph()
        measure(method, lambda m=method: attribute_rows(lm, _fresh(record), order, m, language="python"), n)
    release_graph()
    single = _fresh(record)
    measure("input_x_gradient, one row, cold", lambda: attribute_rows(lm, single, [order[0]], language="python"), 1)
    measure("input_x_gradient, one row, graph kept", lambda: attribute_rows(lm, single, [order[1]], language="python"), 1)
    release_graph()
    ig = make_method("integrated_gradients", steps=args.ig_steps)
    measure(f"integrated_gradients ({args.ig_steps} steps), one row", lambda: attribute_rows(lm, _fresh(record), [order[0]], ig, language="python"), 1)
    if baselines.inseq:
        last = n - 1
        measure("inseq input_x_gradient", lambda: baselines.inseq_rows("input_x_gradient", record, last, strict=False), n)
    if baselines.captum is not None:
        measure("captum LLMGradientAttribution (LayerGradientXActivation)", lambda: baselines.captum_rows(record, n - 1), n)
    return cost


def torch_ids(lm, record):
    import torch

    return torch.tensor(list(record.context.token_ids) + [t.token_id for t in record.tokens], device=lm.device)


def _suite(lm, baselines, args) -> dict:
    from whence_ls.engine.attribution import attribute_rows, make_method, release_graph
    from whence_ls.engine.attribution.base import TeacherForced
    from whence_ls.bench.faithfulness import (
        RemovalProbe,
        kendall_tau,
        rankable_units,
        ranking_from_scores,
        recency_ranking,
    )
    from whence_ls.engine.attribution.units import unit_map
    from whence_ls.engine.generation import complete_at

    deadline = time.perf_counter() + args.time_budget * 60 if args.time_budget else None
    prompts = select_prompts(args.prompts)
    done = []
    skipped = []
    for number, prompt in enumerate(prompts):
        if number < args.offset:
            continue
        if deadline is not None and time.perf_counter() > deadline:
            skipped.append({"prompt": f"{prompt['source']}:{prompt['line']}", "why": "time budget"})
            continue
        text = prompt["text"]
        record = complete_at(lm, text, len(text), language="python", max_new_tokens=args.max_new_tokens, context_tokens=args.context_tokens)
        label = f"{prompt['source']}:{prompt['line']}"
        if not record.tokens:
            skipped.append({"prompt": label, "why": "empty completion"})
            continue
        units = unit_map(record, "python")
        forward_s = _forward_seconds(lm, torch_ids(lm, record))
        entry = {"prompt": label, "function": prompt["function"], "completion": record.text,
                 "context_tokens": len(record.context.token_ids), "tokens": len(record.tokens), "units": len(units.units),
                 "forward_s": forward_s, "cost_fe": {}, "rows": {}, "targets": []}
        rows_by_method = {}
        for method in FULL_MATRIX_METHODS:
            release_graph()
            started = time.perf_counter()
            rows = attribute_rows(lm, _fresh(record), list(range(len(record.tokens))), method, language="python")
            entry["cost_fe"][method] = (time.perf_counter() - started) / forward_s
            rows_by_method[method] = {i: r for i, r in rows.items()}
        release_graph()
        target = _pick_target(record)
        job = TeacherForced.of(lm, record)
        target_rows = {name: rows[target] for name, rows in rows_by_method.items()}
        by_abs = {name: rows[target].rank_by_abs for name, rows in rows_by_method.items()}
        # the default method ranked by signed score too: which ranking to show is a measured choice
        target_rows["input_x_gradient (signed rank)"] = rows_by_method["input_x_gradient"][target]
        by_abs["input_x_gradient (signed rank)"] = False
        ig_baselines = ["space", "zero"] if number < args.ig_zero_prompts else ["space"]
        for baseline in ig_baselines:
            name = "integrated_gradients" if baseline == "space" else "integrated_gradients (zero baseline)"
            started = time.perf_counter()
            row = attribute_rows(lm, _fresh(record), [target], make_method("integrated_gradients", steps=args.ig_steps, baseline=baseline), language="python")[target]
            entry["cost_fe"][name] = (time.perf_counter() - started) / forward_s
            target_rows[name], by_abs[name] = row, True
            entry.setdefault("ig_completeness", {})[baseline] = {"raw_sum": row.raw_sum, "delta": row.extra.get("completeness_delta")}
        external = {}
        for method in baselines.inseq:
            try:
                found = baselines.inseq_rows(method, record, target, from_index=target)
            except Exception as exc:
                entry.setdefault("errors", []).append(f"inseq {method}: {type(exc).__name__}: {exc}".splitlines()[0])
                found = None
            if found is not None:
                external[f"inseq {method}"] = found[target]
        if baselines.captum is not None:
            try:
                found = baselines.captum_rows(record, target)
            except Exception as exc:
                entry.setdefault("errors", []).append(f"captum: {type(exc).__name__}: {exc}".splitlines()[0])
                found = None
            if found is not None:
                external["captum LLMGradientAttribution"] = found[target]
        for name, position_scores in external.items():
            target_rows[name] = _row_from_positions(name, target, position_scores, units, job.context_len)
            by_abs[name] = True
        occlusion = rows_by_method["occlusion"][target]
        reference = [s * occlusion.total_abs for s in occlusion.scores]
        probe = RemovalProbe(job, target, units)
        result = {"index": target, "token": record.tokens[target].text, "p": probe.full, "views": {}}
        rng = random.Random(number)
        for view in ("all", "non_local"):
            rankable = rankable_units(units, job.context_len, view == "non_local")
            if len(rankable) < 2:
                continue
            shuffled = rankable[:]
            rng.shuffle(shuffled)
            rankings = {name: ranking_from_scores(row.scores, rankable, by_abs[name]) for name, row in target_rows.items()}
            rankings["random"] = shuffled
            rankings["recency"] = recency_ranking(units, rankable)
            scores = {}
            for name, ranking in rankings.items():
                faith = probe.evaluate(ranking, rankable)
                tau = None
                if name in target_rows:
                    tau = kendall_tau(target_rows[name].scores, reference, rankable, by_abs[name])
                elif name == "recency":
                    tau = kendall_tau([max(p) if p else 0 for p in units.unit_positions], reference, rankable, False)
                scores[name] = {"comp": faith.comprehensiveness, "suff": faith.sufficiency, "tau": tau}
            result["views"][view] = {"rankable": len(rankable), "scores": scores}
        result["removal_forwards"] = probe.forwards
        entry["targets"].append(result)
        entry["copy"] = _copy_cases(record, units, rows_by_method)
        done.append(entry)
        _log(f"[{len(done)}/{len(prompts)}] {label}: {len(record.context.token_ids)}+{len(record.tokens)} tokens, "
             f"target {record.tokens[target].text!r}, removal forwards {probe.forwards}")
        if args.out:
            Path(args.out + ".partial").write_text(json.dumps(done))
    return {"prompts": done, "skipped": skipped}


def _pick_target(record) -> int:
    """The first token that carries a word or number: where attribution questions arise."""
    for index, token in enumerate(record.tokens):
        if any(c.isalnum() for c in token.text):
            return index
    return 0


def _row_from_positions(name, index, position_scores, units, context_len):
    import torch

    from whence_ls.engine.attribution.base import AttributionRow, normalise

    scores = torch.as_tensor(position_scores, dtype=torch.float64)
    unit_scores = units.aggregate(scores[:context_len])
    normalised, raw_sum, total_abs = normalise(unit_scores)
    return AttributionRow(index, name, normalised, raw_sum, total_abs)


def _copy_cases(record, units, rows_by_method) -> dict:
    """Generated identifier tokens whose identifier occurs earlier in the context: is the top
    unit an occurrence of it?"""
    import re

    unit_texts = {u.text for u in units.units}
    cases = []
    for index, token in enumerate(record.tokens):
        if not re.search(r"\w", token.text):
            continue
        start = token.start + next(k for k, c in enumerate(token.text) if c.isalnum() or c == "_")
        left = start
        while left > 0 and (record.text[left - 1].isalnum() or record.text[left - 1] == "_"):
            left -= 1
        right = start
        while right < len(record.text) and (record.text[right].isalnum() or record.text[right] == "_"):
            right += 1
        word = record.text[left:right]
        if len(word) < 2 or word.isdigit() or word not in unit_texts:
            continue
        case = {"index": index, "identifier": word, "hits": {}}
        for method, rows in rows_by_method.items():
            top = rows[index].top(1)
            case["hits"][method] = bool(top) and units.units[top[0][0]].text == word
        last = max((u for u, unit in enumerate(units.units) if units.unit_positions[u]), key=lambda u: max(units.unit_positions[u]))
        case["hits"]["recency"] = units.units[last].text == word
        cases.append(case)
    return {"cases": cases}
