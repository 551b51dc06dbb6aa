"""`whence-ls bench attribution-learned`: learned one-pass attribution estimators (issue 21),
trained on a training dump's truth (`bench attribution --target-set training --dump`) and scored
on the held-out suite's dump. The logic is in `whence_ls.bench.attribution_learned`."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("attribution-learned", help="learned one-pass estimators: features of dumped targets, fits, held-out scores")
    parser.add_argument("--features", nargs=2, metavar=("DUMP", "FEATURES"),
                        help="compute one forward's head and lexical features for every target of DUMP into FEATURES")
    parser.add_argument("--target-set", default="heldout", choices=("heldout", "training"), help="of --features' DUMP")
    parser.add_argument("--targets", type=int, default=None, help="the count DUMP was made with (default: 40 held-out, 120 training)")
    parser.add_argument("--train", metavar="DUMP,FEATURES", help="fit on these training targets")
    parser.add_argument("--heldout", metavar="DUMP,FEATURES", help="and report on these")
    parser.add_argument("--save", default=None, metavar="JSON", help="write the chosen model here")
    parser.add_argument("--figures", action="store_true",
                        help="write the saved model's held-out figures where the method notes read them (benchmark_figures.json)")
    parser.add_argument("--prior", type=float, default=None,
                        help="the lexical copy prior's weight on every model (default: chosen by cross-validation)")
    parser.add_argument("--per-head", action="store_true", help="only AT2's per-head models (attention, value, direct logit)")
    parser.add_argument("--quick", action="store_true", help="fewer model variants")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--model", default=None)
    parser.set_defaults(run=run)


def run(args) -> int:
    from whence_ls.bench.attribution_learned import run as run_benchmark

    return run_benchmark(args)
