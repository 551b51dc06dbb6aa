"""`whence-ls bench retention`: does a flag learned per workspace beat the global flag (AUROC for
"the token departs from what the programmer wrote", held-out cursors of the same package)? The
logic is in `whence_ls.bench.retention`."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    from whence_ls.bench.retention import DEFAULT_PACKAGES

    parser = subparsers.add_parser("retention", help="per-workspace flag calibration vs the global flag, on held-out cursors "
                                   "of installed PyPI packages")
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--packages", nargs="+", default=list(DEFAULT_PACKAGES), metavar="PACKAGE")
    parser.add_argument("--cursors", type=int, default=60, help="cursors per package")
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--splits", type=int, default=20, help="random halvings of each package's cursors")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--context-tokens", type=int, default=1024)
    parser.add_argument("--repository-tokens", type=int, default=384)
    parser.add_argument("--goal", type=float, default=0.03, help="AUROC gain the per-workspace flag must reach")
    parser.add_argument("--save", default=None, metavar="JSON", help="keep the judged tokens here")
    parser.add_argument("--load", default=None, metavar="JSON", help="analyse saved tokens (no model)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from whence_ls.bench.retention import run as run_benchmark

    return run_benchmark(args)
