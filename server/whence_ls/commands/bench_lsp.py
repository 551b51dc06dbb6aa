"""`whence-ls bench lsp`: the language server end to end; the logic is in `whence_ls.bench.lsp`."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("lsp", help="ghost text, hover, attribution and completion latency over stdio, quiet and with busy cores")
    parser.add_argument("--model", default=None, help="model (default: the embedded one)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--completions", type=int, default=8, help="completion requests to time (default 8)")
    parser.add_argument("--accepts", type=int, default=3, help="completions accepted, one cold row each (default 3)")
    parser.add_argument("--hovers", type=int, default=300, help="hovers on ready rows to time (default 300)")
    parser.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                        help="the server's maxNewTokens setting (default: its default, as an editor gets)")
    parser.add_argument("--warm-wait", type=float, default=6.0,
                        help="seconds between didOpen and the first completion of the warmed file (default 6)")
    parser.add_argument("--long-document-lines", type=int, default=200_000, metavar="N",
                        help="also time keystroke + completion in a document with N more lines before the code (0: skip)")
    parser.add_argument("--draft-tokens", type=int, default=None, metavar="N", help="the server's draftTokens setting (default: its default)")
    parser.add_argument("--busy-cores", default="0,1", metavar="N[,M...]",
                        help="one pass per count, each with that many processes spinning on the machine (default 0,1)")
    parser.add_argument("--busy-max-s", type=float, default=3600.0, metavar="S",
                        help="a spinner ends by itself after S seconds even if the bench could not stop it (default 3600)")
    parser.add_argument("--jumps", type=int, default=8, help="ghost text at jump-to-line cursors (default 8)")
    parser.add_argument("--typing-asks", type=int, default=8,
                        help="ghost text while typing down a file: after Enter and in a line, alternately (default 8)")
    parser.add_argument("--char-ms", type=float, default=100.0, help="typing pace: ms between characters (default 100)")
    parser.add_argument("--pause-ms", type=float, default=500.0,
                        help="the pause after the last key before ghost text is asked while typing (default 500)")
    parser.add_argument("--ask-every-key", action="store_true",
                        help="while typing, also ask for ghost text at every keystroke without waiting, as VS Code does "
                             "(the timed asks stay the ones after a pause)")
    parser.add_argument("--row-timeout-s", type=float, default=120.0,
                        help="give up on a hovered token's row after S seconds from the accept (default 120)")
    parser.add_argument("--request-timeout-s", type=float, default=180.0,
                        help="a ghost-text request not answered in S seconds is recorded as timed out (default 180)")
    parser.add_argument("--settle-s", type=float, default=30.0,
                        help="wait up to S seconds for the server to go idle before the ghost-text measures (default 30)")
    parser.add_argument("--latency-budget-ms", type=int, default=None, metavar="MS",
                        help="the server's latencyBudgetMs setting (default: its default)")
    parser.add_argument("--cold-prefill-ms", type=int, default=None, metavar="MS",
                        help="the server's coldPrefillMs setting (default: its default; 0: always the full window)")
    parser.add_argument("--attribution-method", default=None, metavar="METHOD",
                        help="the server's attributionMethod setting (default: its default, as an editor gets)")
    parser.add_argument("--precision", default=None, metavar="PRECISION",
                        help="the server's precision setting (default: its default; e.g. onnx-int8, with the onnx extra)")
    parser.add_argument("--ghost-only", action="store_true",
                        help="only ghost text and accept-to-row (skip completion latency at shlex ends, first completion, "
                             "during background, long document, cold row, hover latency)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--server-log", metavar="PATH", help="have the server log its model jobs here (debug level)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from whence_ls.bench.lsp import run as run_benchmark

    return run_benchmark(args)
