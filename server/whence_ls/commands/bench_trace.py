"""`whence-ls bench trace`: the trace index's recall and speed; the logic is in `whence_ls.bench.trace`."""

from __future__ import annotations


def add_parser(kinds) -> None:
    parser = kinds.add_parser("trace", help="trace index: recall per copy kind, false positives, latency")
    parser.add_argument("--index", metavar="DIR", help="index to measure (default: the default index)")
    parser.add_argument("--queries", type=int, default=100, help="queries per kind (default 100)")
    parser.add_argument("--negatives", action="append", default=[], metavar="PATH",
                        help="code outside the corpus for negative queries (default: some installed packages)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=0, metavar="CHUNKS",
                        help="also measure latency with the index grown to this many chunks (e.g. 1000000)")
    parser.add_argument("--fit", action="store_true",
                        help="fit the score calibration on these queries and print its coefficients")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def run(args) -> int:
    from whence_ls.bench.trace import run as run_benchmark

    return run_benchmark(args)
