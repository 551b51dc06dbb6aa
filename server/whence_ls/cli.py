"""`whence-ls serve|complete|explain|index|model|bench|provenance`.

Each subcommand lives in its own module under `whence_ls.commands`; this file only wires them
and turns user-facing errors into one line on stderr with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from whence_ls import __version__
from whence_ls.errors import WhenceError

# Owners add their module here when it exists (one line each).
COMMAND_MODULES = ["complete", "explain", "model", "bench", "index", "serve", "provenance"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whence-ls",
        description="Local code completion that explains itself.",
    )
    parser.add_argument("--version", action="version", version=f"whence-ls {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"whence_ls.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> None:
    if argv is None:  # the real command line (not a test calling main in its own process)
        from whence_ls.huge_pages import reexec_with_huge_pages

        reexec_with_huge_pages()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.run(args)
    except WhenceError as exc:
        print(f"whence-ls: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # a bug: still one line unless the user asks for the traceback
        if os.environ.get("WHENCE_DEBUG"):
            raise
        print(
            f"whence-ls: internal error: {type(exc).__name__}: {exc} (set WHENCE_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        sys.exit(1)
    sys.exit(code or 0)
