"""`whence-ls complete PATH:LINE:COL`: the completion the server would offer, with its evidence."""

from __future__ import annotations

import json
import sys


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("complete", help="complete a file at a 1-based LINE:COL")
    parser.add_argument("location", metavar="PATH:LINE:COL")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--context-tokens", type=int, default=1024, help="token budget of the context (default 1024)")
    parser.add_argument("--model", default=None, help="model directory, .gguf file or cached hub id (default: embedded)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    parser.set_defaults(run=run)


def run(args) -> int:
    from whence_ls.engine.generation import complete_at
    from whence_ls.engine.loading import load_model
    from whence_ls.errors import WhenceError
    from whence_ls.grammars import language_for_path
    from whence_ls.sourcefile import offset_of, parse_location, read_source

    path, line, col = parse_location(args.location, need_column=True)
    if args.max_new_tokens < 1:
        raise WhenceError("--max-new-tokens must be at least 1")
    text = read_source(path)
    if not text.strip():
        raise WhenceError(f"{path} is empty: there is no context to complete from")
    cursor = offset_of(text, line, col)
    if not text[:cursor].strip():
        raise WhenceError(f"nothing before {line}:{col} in {path}: there is no context to complete from")
    lm = load_model(args.model, args.device)
    result = complete_at(
        lm,
        text,
        cursor,
        language=language_for_path(path),
        max_new_tokens=args.max_new_tokens,
        context_tokens=args.context_tokens,
    )
    result.timings["load_s"] = lm.load_seconds
    if args.json:
        print(json.dumps(completion_json(result), ensure_ascii=False))
    else:
        print_coloured(result, _use_colour(args.color))
    return 0


def completion_json(result) -> dict:
    return {
        "completion": result.text,
        "model": result.model,
        "device": result.device,
        "stop_reason": result.stop_reason,
        "context": {"tokens": len(result.context.token_ids), "truncated": result.context.truncated},
        "tokens": result.tokens_json(),
        "timings": {k: round(v, 4) if isinstance(v, float) else v for k, v in result.timings.items()},
    }


def _use_colour(mode: str) -> bool:
    return mode == "always" or (mode == "auto" and sys.stdout.isatty())


# probability bands: the same thresholds the editor uses for its confidence colours
_BANDS = [(0.8, "\033[32m"), (0.4, "\033[33m"), (0.0, "\033[31m")]


def print_coloured(result, colour: bool) -> None:
    out = []
    for token in result.tokens:
        if not colour:
            out.append(token.text)
            continue
        code = next(code for threshold, code in _BANDS if token.prob >= threshold)
        out.append(f"{code}{token.text}\033[0m")
    print("".join(out))
    if colour:
        print("\033[2m-- confidence: \033[32mp>=0.8\033[0;2m \033[33mp>=0.4\033[0;2m \033[31mp<0.4\033[0m")
    timings = result.timings
    print(
        f"-- {result.model} on {result.device}: {len(result.tokens)} tokens, stop: {result.stop_reason}, "
        f"{timings.get('total_s', 0):.2f}s (load {timings.get('load_s', 0):.2f}s)",
        file=sys.stderr,
    )
