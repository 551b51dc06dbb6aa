"""`whence-ls bench sae`: the sparse autoencoders on held-out code; the logic is in `whence_ls.bench.sae`."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("sae", help="SAE reconstruction, sparsity, dead features and loss on held-out stdlib code; "
                                               "induction features on copy cases")
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--tokens", type=int, default=20_000, help="held-out tokens (default 20000)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from whence_ls.bench.sae import run as run_benchmark

    return run_benchmark(args)
