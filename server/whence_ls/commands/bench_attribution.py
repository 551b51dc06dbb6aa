"""`whence-ls bench attribution`: line-level truth for every attribution method and baseline
on held-out code (pure-Python packages installed with whence-ls), against random-subset
ablation. The logic is in `whence_ls.bench.attribution`."""

from __future__ import annotations

import json
import sys
import time


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("attribution", help="attribution methods against random-subset ablation, per context line")
    parser.add_argument("--targets", type=int, default=40, help="held-out completion targets (default 40)")
    parser.add_argument("--context-tokens", type=int, default=256, help="context of each target (default 256)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--rows", type=int, default=8, help="generated tokens scored per target (default 8)")
    parser.add_argument("--truth-masks", type=int, default=32, help="held-out ablation masks per target (default 32)")
    parser.add_argument("--drop-rows", type=int, default=1, help="rows per target whose top-3 removal is measured (default 1)")
    parser.add_argument("--ig-targets", type=int, default=5, help="targets whose first row also runs 16-step IG (default 5)")
    parser.add_argument("--cost", action="store_true", help="also time the whole matrix of a 32-token completion after ~1k tokens")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    parser.add_argument("--offset", type=int, default=0, help="start at this target (to split a run over processes)")
    parser.add_argument("--limit", type=int, default=None, help="run at most this many targets from --offset")
    parser.add_argument("--skip-suite", action="store_true", help="only the cost measurement (with --cost)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", default=None, help="write every measurement as JSON here")
    parser.add_argument("--render", nargs="+", metavar="JSON", help="only print the table of saved --out files, merged")
    parser.set_defaults(run=run)


def run(args) -> int:
    import torch

    from whence_ls.bench.attribution import BenchResult, cost_of_matrix, merge, render, run_suite, summarise, to_json

    if args.render:
        parts = [json.load(open(path, encoding="utf-8")) for path in args.render]
        summary = summarise(merge([p["suite"] for p in parts if "suite" in p]))
        costs = [p["cost"] for p in parts if "cost" in p]
        print(render(summary))
        for cost in costs:
            _print_cost(cost)
        return 0
    from whence_ls.engine.loading import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {message}", file=sys.stderr, flush=True)

    lm = load_model(args.model, "cpu")
    saved: dict = {}
    result = BenchResult()
    if not args.skip_suite:
        result = run_suite(lm, args.targets, context_tokens=args.context_tokens, max_new_tokens=args.max_new_tokens,
                           rows_per_target=args.rows, truth_masks=args.truth_masks, drop_rows=args.drop_rows,
                           ig_targets=args.ig_targets, log=log, offset=args.offset, limit=args.limit)
        saved["suite"] = to_json(result)
        print(render(summarise(result)))
    if args.cost:
        saved["cost"] = cost_of_matrix(lm, context_tokens=1024, new_tokens=32, log=log)
        _print_cost(saved["cost"])
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(saved, handle, indent=1)
    return 0


def _print_cost(cost: dict) -> None:
    print(f"\nwhole matrix of {cost['tokens']} tokens after {cost['context_tokens']} context tokens "
          f"(one forward {cost['forward_s']:.2f} s):")
    for name, entry in cost["methods"].items():
        print(f"  {name}: {entry['seconds']:.1f} s = {entry['fe']:.1f} FE")
