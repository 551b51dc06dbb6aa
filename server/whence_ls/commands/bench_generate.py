"""`whence-ls bench generate`: decoding speed against plain `model.generate`; the logic is in `whence_ls.bench.generate`."""

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
