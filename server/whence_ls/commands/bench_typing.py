"""`whence-ls bench typing`: completion latency while a user types down a file, with and
without prefix reuse (`engine/prefix_cache.py`).

The user finishes one line after another of real code the tests do not use; at each line end the
editor asks for a completion, with the language server's default budget. Three ways of answering
each request run in turn on the same loaded model, so machine noise hits all alike:

- reuse: what the server does, the prefix cache on (window anchored, cached prefix reused);
- same window, fresh: the very same context prefilled from scratch. Its tokens must equal
  reuse's: the bench fails if they differ in one token;
- before: prefix reuse off, the window cut afresh for every request (the server before reuse).
"""

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
