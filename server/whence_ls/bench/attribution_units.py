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
import statistics
import sys
import sysconfig
import time
from pathlib import Path

# stdlib parts that are tests, demos or vendored copies of other projects' code
_SKIP_PARTS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "__pycache__", "ensurepip", "turtledemo", "pydoc_data"}
FULL_MATRIX_METHODS = ("input_x_gradient", "gradient_norm", "contrastive", "attention_rollout", "value_norm", "occlusion")


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


class _Baselines:
    """Inseq and Captum's LLM attribution, driven on our exact token sequence."""

    def __init__(self, lm, use_inseq: bool, use_captum: bool, ig_steps: int):
        self.lm = lm
        self.ig_steps = ig_steps
        self.inseq_error = None
        self.inseq = {}
        if use_inseq:
            try:
                import inseq

                for method in ("input_x_gradient", "integrated_gradients"):
                    self.inseq[method] = inseq.load_model(lm.model, method, tokenizer=lm.tokenizer)
            except Exception as exc:  # not installed, or incompatible with this torch/transformers
                self.inseq_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
                self.inseq = {}
        self.captum = None
        self.captum_error = None
        if use_captum:
            try:
                from captum.attr import LayerGradientXActivation, LLMGradientAttribution

                layer = LayerGradientXActivation(lm.model, lm.model.get_input_embeddings())
                self.captum = LLMGradientAttribution(layer, lm.tokenizer)
            except Exception as exc:
                self.captum_error = f"{type(exc).__name__}: {exc}".splitlines()[0]

    def inseq_rows(self, method: str, record, last_index: int, *, from_index: int | None = None, strict: bool = True):
        """Position scores (context + generated prefix) for tokens from_index..last_index, or
        None when Inseq tokenises the text differently from our sequence (Inseq takes text,
        not token ids). `strict=False` runs it anyway, for timing a matrix of the same size."""
        import torch

        model = self.inseq[method]
        tokenizer = self.lm.tokenizer
        context_ids = list(record.context.token_ids)
        generated = [t.token_id for t in record.tokens[: last_index + 1]]
        prompt = tokenizer.decode(context_ids, clean_up_tokenization_spaces=False)
        full = tokenizer.decode(context_ids + generated, clean_up_tokenization_spaces=False)
        same = (tokenizer(prompt, add_special_tokens=False)["input_ids"] == context_ids
                and tokenizer(full, add_special_tokens=False)["input_ids"] == context_ids + generated)
        if strict and not same:
            return None
        kwargs = {"n_steps": self.ig_steps, "internal_batch_size": 8} if method == "integrated_gradients" else {}
        if from_index is not None:
            kwargs["attr_pos_start"] = len(context_ids) + from_index
        out = model.attribute(prompt, full, show_progress=False, **kwargs)
        attribution = out.sequence_attributions[0]
        ids = [t.id for t in attribution.target]
        if ids != context_ids + generated:
            return None if strict else {}
        scores = torch.nan_to_num(attribution.target_attributions.float())
        if scores.dim() == 3:
            scores = scores.sum(-1)  # input x gradient: the dot product over embedding dimensions
        first = 0 if from_index is None else from_index
        rows = {}
        for step, index in enumerate(range(first, last_index + 1)):
            rows[index] = scores[: len(context_ids) + index, step]
        return rows

    def captum_rows(self, record, last_index: int):
        from captum.attr import TextTokenInput
        import torch

        context_ids = list(record.context.token_ids)
        prompt = self.lm.tokenizer.decode(context_ids, clean_up_tokenization_spaces=False)
        inp = TextTokenInput(prompt, self.lm.tokenizer)
        if inp.to_tensor().shape[-1] != len(context_ids):
            return None
        target = torch.tensor([t.token_id for t in record.tokens[: last_index + 1]])
        result = self.captum.attribute(inp, target=target)
        matrix = result.token_attr  # [targets, context tokens]
        return {i: torch.cat([matrix[i].float(), torch.zeros(i)]) for i in range(last_index + 1)}


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
    baselines = _Baselines(lm, not args.no_inseq, not args.no_captum_llm, args.ig_steps)
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
    from whence_ls.engine.attribution.faithfulness import (
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


def merge_results(parts: list) -> dict:
    """One result from several runs' --out files (or their .partial prompt lists)."""
    merged = {"suite": {"prompts": [], "skipped": []}, "settings": {}}
    seen = set()
    for part in parts:
        if isinstance(part, list):  # a .partial file: the finished prompts only
            part = {"suite": {"prompts": part, "skipped": []}}
        for key in ("model", "torch_threads", "inseq_error", "captum_error", "settings"):
            if part.get(key) and not merged.get(key):
                merged[key] = part[key]
        if part.get("cost") and not merged.get("cost"):
            merged["cost"] = part["cost"]
        for entry in part.get("suite", {}).get("prompts", []):
            if entry["prompt"] not in seen:
                seen.add(entry["prompt"])
                merged["suite"]["prompts"].append(entry)
        merged["suite"]["skipped"] += [s for s in part.get("suite", {}).get("skipped", []) if s["prompt"] not in seen]
    done = {e["prompt"] for e in merged["suite"]["prompts"]}
    unique = {s["prompt"]: s for s in merged["suite"]["skipped"] if s["prompt"] not in done}
    merged["suite"]["skipped"] = list(unique.values())
    merged["settings"].setdefault("ig_steps", 16)
    return merged


def render_tables(results: dict) -> str:
    lines = []
    cost = results.get("cost")
    if cost:
        lines.append(f"Cost: full matrix of {cost['generated_tokens']} generated tokens after {cost['context_tokens']} context tokens "
                     f"({cost['prompt']}); one forward = {cost['forward_s']:.2f}s, generation {cost['generate_s']:.2f}s")
        lines.append("")
        lines.append("| method | rows | seconds | forward at the time (s) | forward-equivalents | per row |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for name, m in cost["methods"].items():
            forward = f"{m['forward_s']:.2f}" if "forward_s" in m else f"{cost['forward_s']:.2f}"
            lines.append(f"| {name} | {m['rows']} | {m['seconds']:.2f} | {forward} | {m['forward_equivalents']:.1f} | {m['fe_per_row']:.2f} |")
        lines.append("")
    prompts = results["suite"]["prompts"]
    if not prompts:
        return "\n".join(lines + ["no suite prompt finished"])
    lines.append(f"Faithfulness: {len(prompts)} prompts, one target token each; removal = the unit's tokens replaced by the space token; "
                 "comp = comprehensiveness AOPC (higher is better), suff = sufficiency AOPC (lower is better), "
                 "tau = Kendall tau-b against leave-one-out occlusion; k in 1, 5, 10, 20, 50% of rankable units.")
    lines.append("")
    lines.append("| method | comp (all) | suff (all) | tau (all) | comp (non-local) | suff (non-local) | tau (non-local) | copy top-1 | cost (FE, full matrix or row) |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    names = []
    for entry in prompts:
        for target in entry["targets"]:
            for view in target["views"].values():
                for name in view["scores"]:
                    if name not in names:
                        names.append(name)
    for name in names:
        cells = []
        for view in ("all", "non_local"):
            for metric in ("comp", "suff", "tau"):
                values = [t["views"][view]["scores"][name][metric] for e in prompts for t in e["targets"]
                          if view in t["views"] and name in t["views"][view]["scores"]
                          and t["views"][view]["scores"][name][metric] is not None]
                cells.append(f"{statistics.fmean(values):.3f} (n={len(values)})" if values else "-")
        copy_key = name if name in FULL_MATRIX_METHODS or name == "recency" else None
        hits = [c["hits"][copy_key] for e in prompts for c in e["copy"]["cases"] if copy_key in c["hits"]] if copy_key else []
        copy_cell = f"{100 * sum(hits) / len(hits):.0f}% of {len(hits)}" if hits else "-"
        fe = [e["cost_fe"][name] for e in prompts if name in e["cost_fe"]]
        fe_cell = f"{statistics.median(fe):.1f}" if fe else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {copy_cell} | {fe_cell} |")
    completeness = [(e["ig_completeness"][b]["delta"], abs(e["ig_completeness"][b]["raw_sum"]), b) for e in prompts
                    for b in e.get("ig_completeness", {})]
    for baseline in ("space", "zero"):
        deltas = [d for d, _, b in completeness if b == baseline and d is not None]
        sums = [s for _, s, b in completeness if b == baseline]
        if deltas:
            lines.append(f"\nIG completeness ({baseline} baseline, {results['settings']['ig_steps']} steps): "
                         f"median |delta| {statistics.median(deltas):.3f} nats, max {max(deltas):.3f}, "
                         f"median |sum of attributions| {statistics.median(sums):.3f} (n={len(deltas)})")
    skipped = results["suite"]["skipped"]
    if skipped:
        lines.append(f"\nskipped prompts: {len(skipped)} (" + ", ".join(sorted({s['why'] for s in skipped})) + ")")
    if results.get("inseq_error"):
        lines.append(f"\nInseq not run: {results['inseq_error']}")
    if results.get("captum_error"):
        lines.append(f"\nCaptum LLMGradientAttribution not run: {results['captum_error']}")
    return "\n".join(lines)
