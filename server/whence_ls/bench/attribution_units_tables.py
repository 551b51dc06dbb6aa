"""The tables of `whence-ls bench attribution-units`: one result merged from several runs'
--out files, and the markdown the benchmark prints (split from `attribution_units.py`, which
runs the suite, to keep each under 400 lines)."""

from __future__ import annotations

import statistics

# the methods whose whole matrix the suite computes (their copy cases and cost are tabled)
FULL_MATRIX_METHODS = ("input_x_gradient", "gradient_norm", "contrastive", "attention_rollout", "value_norm", "occlusion")

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
