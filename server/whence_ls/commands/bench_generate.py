"""`whence-ls bench generate`: what our per-token bookkeeping costs against plain `model.generate`.

Both decode the same number of tokens greedily from the same prompt on the same loaded model;
runs alternate so that machine noise hits both alike, and the medians are compared.
"""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="decode tokens/s of our engine vs plain model.generate")
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--context-tokens", type=int, default=300)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.set_defaults(run=run)


def run(args) -> int:
    from whence_ls.bench.generate import run as run_benchmark

    return run_benchmark(args)
