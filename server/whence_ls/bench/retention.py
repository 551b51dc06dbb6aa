"""`whence-ls bench retention`: does a flag learned from one workspace's edits beat the global flag?

A workspace here is one installed PyPI package the project never reads (held-out code). At
seeded cursors in its files whence-ls completes as the server does (`bench quality`'s cursors:
the rest of the line removed, the lines below kept). Each visible token of the completion's first
line is labelled 1 when it departs from what the programmer wrote: some character of it is
outside the matching blocks of the completed line and the real one (what a person who accepted
it and then typed their line would have rewritten). These stand for accepted tokens and the edits
made to them.

Per package, the cursors are split at random into a fitting half and a testing half (repeated
over `--splits` seeds). On the testing cursors the AUROC for "departs" is measured for:

- the global flag score (`engine/confidence.py`, what the diagnostics use today);
- the workspace calibration (`engine/flag_calibration.py`) fitted on this package's fitting
  cursors: the per-workspace flag;
- the same calibration fitted on the *other* packages' tokens (a global learned calibration):
  whether a gain comes from this workspace or only from the calibration's features.

A learning curve (fitting on the first n fitting cursors) shows how many edited tokens the
workspace needs before its calibration is at least level with the global flag: the server's
threshold. The generated tokens are saved (`--save`), so the analysis reruns without the model
(`--load`).
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path

from whence_ls.bench.quality import _shown, auroc, package_files, pick_cursors, repository_snippets
from whence_ls.engine.flag_calibration import Example, TokenFacts, fit

# installed beside the project (its test extras pull them in), never imported by its code
DEFAULT_PACKAGES = ("networkx", "sympy", "rich", "pydantic")
CURVE = (5, 10, 20, 40)  # fitting cursors in the learning curve


def collect(args) -> dict[str, list[list[dict]]]:
    """{package: [per cursor: [judged token: {kind, flag, entropy, first, departs}]]}."""
    from whence_ls.engine.flag_calibration import facts_of
    from whence_ls.engine.generation import complete_at
    from whence_ls.engine.loading import load_model
    from whence_ls.engine.prompt import PromptOptions

    lm = load_model(args.model, args.device)
    found: dict[str, list[list[dict]]] = {}
    for package in args.packages:
        files = package_files((package,))
        cursors, seen, round_ = [], set(), 0
        while len(cursors) < args.cursors and round_ < 8:  # more cursors than files: a few per file
            for cursor in pick_cursors(files, args.cursors - len(cursors), args.seed + round_):
                if (cursor[0], cursor[2]) not in seen:
                    seen.add((cursor[0], cursor[2]))
                    cursors.append(cursor)
            round_ += 1
        judged_here = found[package] = []
        started = time.perf_counter()
        for path, document, cursor, wanted in cursors:
            snippets = repository_snippets(path, document, args.repository_tokens)
            options = PromptOptions(file_path=_shown(path), repository_tokens=args.repository_tokens, repository_name=package)
            record = complete_at(lm, document, cursor, prompt=options, snippets=snippets, language="python",
                                 max_new_tokens=args.max_new_tokens, context_tokens=args.context_tokens)
            judged_here.append(judged(record, wanted.rstrip(), facts_of))
        print(f"{package}: {len(cursors)} cursors, {sum(map(len, judged_here))} judged tokens in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    return found


def judged(record, wanted: str, facts_of) -> list[dict]:
    """The visible tokens of the completion's first line, each labelled by whether it departs
    from what the programmer wrote (`wanted`, the rest of the line): a token departs when any of
    its characters falls outside the longest matching blocks of the two lines, i.e. a person who
    accepted the line and then typed theirs would have rewritten it. `first_departure` marks the
    tokens `bench quality` judges (up to and including the first departure)."""
    import difflib

    line = record.text.split("\n", 1)[0]
    kept = [False] * len(line)
    for block in difflib.SequenceMatcher(None, line, wanted, autojunk=False).get_matching_blocks():
        for i in range(block.a, block.a + block.size):
            kept[i] = True
    out = []
    position, departed = 0, False
    for index, token in enumerate(record.tokens):
        if position >= len(line):
            break
        end = min(len(line), position + len(token.text))
        if token.text and line[position:end].strip():
            facts = facts_of(record, index)
            departs = not all(kept[position:end])
            out.append({"kind": facts.kind, "flag": facts.flag, "entropy": facts.entropy, "first": facts.first,
                        "departs": int(departs), "first_departure": int(not departed)})
            departed = departed or record.text[:end] != wanted[:end]
        position += len(token.text)
    return out


def _examples(cursors: list[list[dict]]) -> list[Example]:
    return [Example(TokenFacts(t["kind"], t["flag"], t["entropy"], t["first"]), bool(t["departs"])) for c in cursors for t in c]


def _auroc_of(score, examples: list[Example]) -> float:
    return auroc([score(e.facts) for e in examples], [int(e.edited) for e in examples])


def analyse(data: dict[str, list[list[dict]]], splits: int, seed: int) -> dict:
    """Mean AUROC over random halvings of each package's cursors, the learning curve, and the
    per-workspace minus global gain."""
    packages = sorted(data)
    result: dict = {"packages": {}, "curve": {n: [] for n in CURVE}}
    for package in packages:
        cursors = data[package]
        others = _examples([c for p in packages if p != package for c in data[p]])
        pooled = fit(others) if others else None
        rows = {"global": [], "workspace": [], "pooled": [], "fit_edited": []}
        for split in range(splits):
            order = list(range(len(cursors)))
            random.Random(seed * 1000 + split).shuffle(order)
            half = len(order) // 2
            train, test = [cursors[i] for i in order[:half]], _examples([cursors[i] for i in order[half:]])
            if not any(e.edited for e in test) or all(e.edited for e in test):
                continue
            calibration = fit(_examples(train))
            base = _auroc_of(lambda f: f.flag, test)
            rows["global"].append(base)
            rows["workspace"].append(_auroc_of(calibration.edit_chance, test))
            rows["fit_edited"].append(calibration.edited_tokens)
            if pooled is not None:
                rows["pooled"].append(_auroc_of(pooled.edit_chance, test))
            for n in CURVE:
                if n <= half:
                    small = fit(_examples(train[:n]))
                    result["curve"][n].append((small.edited_tokens, _auroc_of(small.edit_chance, test) - base))
        tokens = _examples(cursors)
        result["packages"][package] = {
            "cursors": len(cursors), "tokens": len(tokens), "departing": sum(e.edited for e in tokens),
            **{k: (statistics.mean(v) if v else float("nan")) for k, v in rows.items()},
            "gain_sd": statistics.pstdev([w - g for w, g in zip(rows["workspace"], rows["global"])]) if rows["global"] else float("nan"),
        }
    return result


def report(result: dict, goal: float) -> bool:
    """Print the tables; True when the per-workspace flag beats the global one by `goal`."""
    print("| package | cursors | judged tokens (departing) | global flag | per-workspace | gain (sd over splits) | "
          "calibration fitted on the other packages |")
    print("|---|---|---|---|---|---|---|")
    gains = []
    for package, row in result["packages"].items():
        gain = row["workspace"] - row["global"]
        gains.append(gain)
        print(f"| {package} | {row['cursors']} | {row['tokens']} ({row['departing']}) | {row['global']:.3f} | "
              f"{row['workspace']:.3f} | {gain:+.3f} ({row['gain_sd']:.3f}) | {row['pooled']:.3f} |")
    mean_gain = statistics.mean(gains) if gains else float("nan")
    print(f"\nmean gain of the per-workspace flag over the global flag: {mean_gain:+.3f} AUROC (goal: >= {goal:+.2f})")
    print("\nlearning curve (all packages): fitting cursors -> edited tokens seen, gain over the global flag")
    print("| fitting cursors | edited tokens (mean) | gain (mean) | splits with a gain |")
    print("|---|---|---|---|")
    for n, points in result["curve"].items():
        if points:
            print(f"| {n} | {statistics.mean(e for e, _ in points):.1f} | {statistics.mean(g for _, g in points):+.3f} | "
                  f"{sum(g > 0 for _, g in points)}/{len(points)} |")
    helps = mean_gain >= goal
    print("\nverdict: " + ("the per-workspace flag helps; it may be on by default" if helps else
                           "the per-workspace flag does not beat the global flag by the goal; it stays off by default"))
    return helps


def run(args) -> int:
    if args.load:
        data = json.loads(Path(args.load).read_text(encoding="utf-8"))["tokens"]
    else:
        data = collect(args)
        if args.save:
            Path(args.save).write_text(json.dumps({"packages": list(args.packages), "seed": args.seed, "tokens": data}),
                                       encoding="utf-8")
    report(analyse(data, args.splits, args.seed), args.goal)
    return 0
