"""`whence-ls bench typing`: completions while typing, with and without prefix reuse; the logic is in `whence_ls.bench.typing`."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("typing", help="completion latency while typing, with and without prefix reuse")
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--lines", type=int, default=12, help="line ends to complete at (default 12)")
    parser.add_argument("--context-tokens", type=int, default=1024, help="the server's default budget")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.set_defaults(run=run)


def run(args) -> int:
    from whence_ls.bench.typing import run as run_benchmark

    return run_benchmark(args)
