"""`whence-ls bench completions`: first-line accuracy on unseen code; the logic is in `whence_ls.bench.completions`."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    from whence_ls.bench.completions import DEFAULT_PACKAGES

    parser = subparsers.add_parser("completions", help="first line exactly right / edit similarity at cursors in installed PyPI packages")
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--cursors", type=int, default=60)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--packages", nargs="+", default=list(DEFAULT_PACKAGES), metavar="PACKAGE")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--context-tokens", type=int, default=1024)
    parser.add_argument("--show", type=int, default=0, help="print this many examples")
    parser.set_defaults(run=run)


def run(args) -> int:
    from whence_ls.bench.completions import run as run_benchmark

    return run_benchmark(args)
