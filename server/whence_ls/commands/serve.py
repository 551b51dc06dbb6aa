"""`whence-ls serve`: the language server over stdio (what editors start)."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="run the language server (stdio)")
    parser.add_argument("--stdio", action="store_true", help="talk LSP over stdin/stdout (the default and only transport)")
    parser.add_argument("--log-file", metavar="PATH", help="write the server log here instead of stderr")
    parser.add_argument("--verbose", action="store_true", help="log model jobs and attribution batches (debug level)")
    parser.add_argument("--max-message-mb", type=float, default=None, metavar="MB",
                        help="largest message body accepted (default 64); a larger one is answered with an error and skipped")
    parser.set_defaults(run=run)


def run(args) -> int:
    from whence_ls.lsp.server import serve_stdio

    serve_stdio(args.log_file, args.verbose, args.max_message_mb)
    return 0
