"""`whence-ls index build|search|stats`: build a trace index and ask it where code comes from."""

from __future__ import annotations

import json
import os
import re
import sys
import time

from whence_ls.errors import WhenceError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("index", help="build and query the trace (provenance) index")
    actions = parser.add_subparsers(dest="index_action", metavar="ACTION")
    actions.required = True

    build = actions.add_parser("build", help="index corpora (default: this Python's standard library)")
    build.add_argument("--corpus", action="append", default=[], metavar="PATH",
                       help="a directory, git checkout or file to index (repeatable)")
    build.add_argument("--out", metavar="DIR", help="index directory (default: the default index)")
    build.add_argument("--languages", nargs="+", metavar="LANG",
                       help="only these languages (default: all supported)")
    build.add_argument("--engine", choices=("local", "ray"), default="local")
    build.add_argument("--workers", type=int, help="Ray CPUs to use (local Ray only)")
    build.add_argument("--embedding", choices=("static", "minilm"), default="static",
                       help="static: MiniLM word-piece table, seconds (default); minilm: the full "
                            "model, better by-meaning matches, ~100 chunks/s on two cores")
    build.add_argument("--max-tokens", type=int, default=64,
                       help="word pieces of each chunk the minilm embedding reads (default 64)")
    build.add_argument("--json", action="store_true", help="print the summary as JSON")
    build.set_defaults(run=run_build)

    search = actions.add_parser("search", help="the traced sources of a piece of code")
    search.add_argument("query", metavar="PATH[:START-END]|-",
                        help="a file, optionally a 1-based inclusive line range, or - for stdin")
    search.add_argument("--index", metavar="DIR", help="index directory (default: the default index)")
    search.add_argument("--language", help="language of the query (default: from the file name)")
    search.add_argument("-k", type=int, default=5, help="at most this many hits (default 5)")
    search.add_argument("--json", action="store_true")
    search.set_defaults(run=run_search)

    stats = actions.add_parser("stats", help="what an index holds")
    stats.add_argument("--index", metavar="DIR", help="index directory (default: the default index)")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(run=run_stats)


def _index_dir(value: str | None) -> str:
    if value:
        return value
    from whence_ls.paths import default_index_dir

    return str(default_index_dir())


class _ProgressBar:
    """A one-line bar on a terminal; plain occasional lines otherwise."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.started = time.perf_counter()
        self.last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self.last < (0.2 if self.tty else 10.0):
            return
        self.last = now
        share = done / total if total else 1.0
        elapsed = now - self.started
        if self.tty:
            bar = "#" * int(30 * share)
            self.stream.write(f"\r{stage:>6} [{bar:<30}] {done}/{total} files  {elapsed:5.1f}s")
            if stage == "write" and done == total:
                self.stream.write("\n")
        else:
            self.stream.write(f"{stage}: {done}/{total} ({elapsed:.1f}s)\n")
        self.stream.flush()


def run_build(args) -> int:
    from whence_ls.trace import build_index

    out = _index_dir(args.out)
    corpora = args.corpus
    if not corpora:
        print(f"indexing the Python standard library into {out}", file=sys.stderr)
    summary = build_index(corpora, out, languages=args.languages, engine=args.engine,
                          progress=_ProgressBar(), workers=args.workers,
                          embedding=args.embedding, max_tokens=args.max_tokens)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(_format_summary(summary))
    return 0


def _format_summary(summary: dict) -> str:
    def counts(mapping: dict) -> str:
        return ", ".join(f"{name} {n}" for name, n in sorted(mapping.items(), key=lambda i: -i[1])) or "none"

    lines = [
        f"index     {summary['path']}",
        f"files     {summary['files']} ({counts(summary['languages'])})",
        f"chunks    {summary['chunks']} ({counts(summary['chunk_kinds'])})",
        f"licenses  {counts(summary['licenses'])}",
        f"skipped   {counts(summary['skipped'])}",
        f"size      {summary['size_bytes'] / 1e6:.1f} MB",
        f"time      {summary['seconds']:.1f} s ({summary['chunks_per_second']:.0f} chunks/s)",
    ]
    return "\n".join(lines)


_RANGE = re.compile(r"^(?P<path>.+?):(?P<start>\d+)(?:-(?P<end>\d+))?$")


def read_query(spec: str) -> tuple[str, int, str | None]:
    """(code, first line number, path or None) for PATH, PATH:START-END or -."""
    if spec == "-":
        return sys.stdin.read(), 1, None
    path, start, end = spec, None, None
    if not os.path.exists(spec):
        match = _RANGE.match(spec)
        if match:
            path, start = match["path"], int(match["start"])
            end = int(match["end"]) if match["end"] else start
    if not os.path.isfile(path):
        raise WhenceError(f"query file does not exist: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines(keepends=True)
    except UnicodeDecodeError:
        raise WhenceError(f"query file is not valid UTF-8: {path}") from None
    except OSError as exc:
        raise WhenceError(f"cannot read query file {path}: {exc.strerror}") from None
    if start is None:
        return "".join(lines), 1, path
    if start < 1 or end < start or end > len(lines):
        raise WhenceError(f"line range {start}-{end} is outside {path} (1-{len(lines)})")
    return "".join(lines[start - 1:end]), start, path


def run_search(args) -> int:
    from whence_ls.grammars import language_for_path
    from whence_ls.trace import open_index

    code, first_line, path = read_query(args.query)
    if args.k < 1:
        raise WhenceError("-k must be at least 1")
    index = open_index(_index_dir(args.index))
    language = args.language or (language_for_path(path) if path else None)
    hits = index.search(code, language=language, k=args.k, first_line=first_line)
    if args.json:
        print(json.dumps([hit.to_json() for hit in hits], indent=2))
        return 0
    if not hits:
        print("no traced source above the threshold")
        return 0
    for rank, hit in enumerate(hits, 1):
        where = f"{hit.path}:{hit.source_start_line}-{hit.source_end_line}"
        origin = " ".join(x for x in (hit.repository, f"@{hit.commit}" if hit.commit else None) if x)
        print(f"{rank}. {hit.kind:<8} score {hit.score:.2f}  matched {hit.matched_fraction:.0%}  "
              f"query lines {hit.query_start_line}-{hit.query_end_line}")
        print(f"   {where}")
        print(f"   license {hit.license}" + (f"  {origin}" if origin else ""))
    return 0


def run_stats(args) -> int:
    from whence_ls.trace import open_index

    stats = open_index(_index_dir(args.index)).stats()
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    for key, value in stats.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        print(f"{key:<22} {value}")
    return 0
