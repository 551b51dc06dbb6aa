"""`whence-ls bench lsp`: the language server end to end; the logic is in `whence_ls.bench.lsp`."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("lsp", help="hover, attribution and completion latency over stdio")
    parser.add_argument("--model", default=None, help="model (default: the embedded one)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--completions", type=int, default=8, help="completion requests to time (default 8)")
    parser.add_argument("--accepts", type=int, default=3, help="completions accepted, one cold row each (default 3)")
    parser.add_argument("--hovers", type=int, default=300, help="hovers on ready rows to time (default 300)")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--warm-wait", type=float, default=6.0,
                        help="seconds between didOpen and the first completion of the warmed file (default 6)")
    parser.add_argument("--long-document-lines", type=int, default=200_000, metavar="N",
                        help="also time keystroke + completion in a document with N more lines before the code (0: skip)")
    parser.add_argument("--draft-tokens", type=int, default=None, metavar="N", help="the server's draftTokens setting (default: its default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--server-log", metavar="PATH", help="have the server log its model jobs here (debug level)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from whence_ls.bench.lsp import run as run_benchmark

    return run_benchmark(args)
