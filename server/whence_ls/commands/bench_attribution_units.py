"""`whence-ls bench attribution-units`: the earlier token-level suite; the logic is in `whence_ls.bench.attribution_units`."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("attribution-units", help="the earlier token-level suite: removal AOPC and tau against leave-one-out, per leaf unit")
    parser.add_argument("--prompts", type=int, default=30, help="prompts in the faithfulness suite (default 30)")
    parser.add_argument("--context-tokens", type=int, default=128, help="context of each suite prompt (default 128)")
    parser.add_argument("--max-new-tokens", type=int, default=12, help="completion length of each suite prompt (default 12)")
    parser.add_argument("--ig-steps", type=int, default=16)
    parser.add_argument("--ig-zero-prompts", type=int, default=5, help="prompts that also run IG with a zero baseline (completeness check)")
    parser.add_argument("--cost-context", type=int, default=300, help="context tokens of the cost prompt (default 300)")
    parser.add_argument("--cost-new-tokens", type=int, default=32, help="generated tokens of the cost prompt (default 32)")
    parser.add_argument("--offset", type=int, default=0, help="start at this suite prompt (to split a run over processes)")
    parser.add_argument("--ig-sweep", default="", metavar="STEPS,...",
                        help="only measure IG completeness at these step counts, both baselines, on the first suite prompts")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--skip-suite", action="store_true")
    parser.add_argument("--no-inseq", action="store_true", help="leave Inseq out even when it is installed")
    parser.add_argument("--no-captum-llm", action="store_true", help="leave Captum's LLMGradientAttribution out")
    parser.add_argument("--time-budget", type=float, default=0.0, help="minutes; stop taking new suite prompts after it (0: no limit)")
    # one thread: on a shared machine, a multi-threaded forward waits on its slowest thread and
    # ran 2-10x slower (and erratic) than a single-threaded one in our runs
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0: torch's choice)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", default=None, help="write every measurement as JSON here")
    parser.add_argument("--render", nargs="+", metavar="JSON", help="only print the tables of saved --out files, merged (runs split with --offset)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from whence_ls.bench.attribution_units import run as run_benchmark

    return run_benchmark(args)
