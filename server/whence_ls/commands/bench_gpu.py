"""`whence-ls bench gpu`: the CUDA path against the CPU path; the logic is in `whence_ls.bench.gpu`."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("gpu", help="the CUDA path checked against the CPU path (tokens, KL, speed, every attribution method)")
    parser.add_argument("--model", default=None, help="model (default: the embedded one)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cuda (default); cpu rehearses every step against itself where there is no GPU")
    parser.add_argument("--new-tokens", type=int, default=48, help="tokens per completion (default 48)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per speed row, median reported (default 3)")
    parser.add_argument("--compare-tokens", type=int, default=4,
                        help="tokens per method whose rows are also computed on the cpu, least confident first (default 4)")
    parser.add_argument("--methods", nargs="+", default=None, metavar="METHOD", help="attribution methods to check (default: all)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    parser.set_defaults(run=run)


def run(args) -> int:
    from whence_ls.bench.gpu import run as run_check

    return run_check(args)
