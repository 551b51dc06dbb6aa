"""`whence-ls bench quality`: first-line accuracy on unseen code and the AUROC of confidence flags; the logic is in
`whence_ls.bench.quality`."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    from whence_ls.bench.quality import DEFAULT_PACKAGES

    parser = subparsers.add_parser("quality", help="first line exactly right / edit similarity at cursors in installed PyPI packages, "
                                   "with and without FIM and repository context; AUROC of confidence flags")
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--cursors", type=int, default=100)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--packages", nargs="+", default=list(DEFAULT_PACKAGES), metavar="PACKAGE")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--context-tokens", type=int, default=1024)
    parser.add_argument("--repository-tokens", type=int, default=384)
    parser.add_argument("--ways", nargs="+", default=None, choices=["no_repository", "no_fim", "no_healing", "plain"],
                        help="only these comparisons beside whence-ls (default: all)")
    parser.add_argument("--show", type=int, default=0, help="print this many examples")
    parser.set_defaults(run=run)


def run(args) -> int:
    from whence_ls.bench.quality import run as run_benchmark

    return run_benchmark(args)
