"""`whence-ls bench attribution`: line-level truth for every attribution method and baseline
on held-out code (pure-Python packages installed with whence-ls), against random-subset
ablation. The logic is in `whence_ls.bench.attribution`."""

from __future__ import annotations



def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("attribution", help="attribution methods against random-subset ablation, per context line")
    parser.add_argument("--targets", type=int, default=40, help="held-out completion targets (default 40)")
    parser.add_argument("--context-tokens", type=int, default=256, help="context of each target (default 256)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--rows", type=int, default=8, help="generated tokens scored per target (default 8)")
    parser.add_argument("--truth-masks", type=int, default=32, help="held-out ablation masks per target (default 32)")
    parser.add_argument("--drop-rows", type=int, default=1, help="rows per target whose top-3 removal is measured (default 1)")
    parser.add_argument("--ig-targets", type=int, default=5, help="targets whose first row also runs 16-step IG (default 5)")
    parser.add_argument("--cost", action="store_true", help="also time the whole matrix of a 32-token completion after ~1k tokens")
    parser.add_argument("--cost-methods", default="", metavar="M,...", help="methods the cost measurement times (default: all four)")
    parser.add_argument("--methods", default="", metavar="M,...", help="estimators the suite runs (default: all)")
    parser.add_argument("--no-verified", action="store_true", help="leave the verified-row variants out of the suite")
    parser.add_argument("--dump", default=None, metavar="DIR", help="save each target's masks, outcomes and scores (npz) here")
    parser.add_argument("--target-set", default="heldout", choices=("heldout", "training"),
                        help="the held-out packages (default) or standard-library targets to train estimators on")
    parser.add_argument("--no-reference", action="store_true", help="no ablation_16/32 reference beside the truth (training dumps)")
    parser.add_argument("--truth-precision", default="fp32", choices=("fp32", "bf16"),
                        help="of the truth's masked forwards (default fp32; bf16 for training dumps)")
    parser.add_argument("--verify-cost", action="store_true", help="also time verified rows at 512 and 1024 context tokens")
    parser.add_argument("--reverify", default=None, metavar="DIR",
                        help="verified rows with other tails and mask counts on the targets of a --dump DIR, scored against its saved truth")
    parser.add_argument("--reverify-tails", default="16,64", metavar="T,...", help="tails --reverify runs ('exact' for none; default 16,64)")
    parser.add_argument("--reverify-masks", default="16,32", metavar="K,...", help="mask counts --reverify fits (default 16,32)")
    parser.add_argument("--reverify-precision", default="fp32", choices=("fp32", "bf16"), help="of --reverify's masked forwards (default fp32)")
    parser.add_argument("--reverify-prior", default="current", choices=("current", "dump"),
                        help="the estimate --reverify starts from: this version's default (as the server does; default) or the dump's")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    parser.add_argument("--offset", type=int, default=0, help="start at this target (to split a run over processes)")
    parser.add_argument("--limit", type=int, default=None, help="run at most this many targets from --offset")
    parser.add_argument("--skip-suite", action="store_true", help="no suite: only --cost, --verify-cost or --reverify")
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", default=None, help="write every measurement as JSON here")
    parser.add_argument("--figures", nargs="?", const="package", default=None, metavar="JSON",
                        help="write the suite's figures (LDS, top-1, top-3, copy cases per method) where the method notes read "
                        "them (the package's engine/attribution/benchmark_figures.json), or to JSON")
    parser.add_argument("--render", nargs="+", metavar="JSON", help="only print the table of saved --out files, merged")
    parser.set_defaults(run=run)


def run(args) -> int:
    from whence_ls.bench.attribution import run as run_benchmark

    return run_benchmark(args)
