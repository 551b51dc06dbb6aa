"""`whence-ls bench attribution-estimators`: new one-pass attribution estimators against the
saved truth of a `whence-ls bench attribution --dump DIR` run, without rerunning its
ablations. The logic is in `whence_ls.bench.attribution_estimators`."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("attribution-estimators",
                                   help="new estimators against a dumped attribution suite's truth (no ablations rerun)")
    parser.add_argument("dump", help="a `whence-ls bench attribution --dump` directory")
    parser.add_argument("out", help="where the estimators' scores go (a target already there is not scored again); "
                        "for --evaluate-only, several directories joined by commas are merged")
    parser.add_argument("--methods", default="", metavar="M,...",
                        help="registered methods to score instead of the default set (calibrated attention, per-row and per-line patching)")
    parser.add_argument("--target-set", choices=("heldout", "training"), default="heldout",
                        help="the targets the dump was made of (`bench attribution --target-set`)")
    parser.add_argument("--figures", action="store_true",
                        help="write the shipped default's (stacked_leave_one_out) figures where the hover's notes read them")
    parser.add_argument("--evaluate-only", action="store_true", help="only print the table of what OUT holds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--model", default=None)
    parser.set_defaults(run=run)


def run(args) -> int:
    from whence_ls.bench.attribution_estimators import run as run_benchmark

    return run_benchmark(args)
