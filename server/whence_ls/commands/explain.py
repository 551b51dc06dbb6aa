"""`whence-ls explain PATH:LINE`: the evidence for a line already in the file, scored token by
token against the code above it (teacher-forced), with each token's attribution."""

from __future__ import annotations

import json


def add_parser(subparsers) -> None:
    from whence_ls.commands.complete import add_attribution_arguments

    parser = subparsers.add_parser("explain", help="score and attribute an existing line (1-based PATH:LINE)")
    parser.add_argument("location", metavar="PATH:LINE")
    parser.add_argument("--context-tokens", type=int, default=1024, help="token budget of the code above (default 1024)")
    parser.add_argument("--model", default=None, help="model directory, .gguf file or cached hub id (default: embedded)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    add_attribution_arguments(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from whence_ls.commands.complete import (
        _use_colour,
        write_matrix_html,
        add_attribution_json,
        print_coloured,
        print_influences,
        resolve_attribution_method,
    )
    from whence_ls.commands.features_output import features_json, print_features
    from whence_ls.engine.explain import explain_line
    from whence_ls.engine.loading import load_model
    from whence_ls.errors import WhenceError
    from whence_ls.grammars import language_for_path
    from whence_ls.sourcefile import parse_location, read_source

    path, line, _ = parse_location(args.location, need_column=False)
    resolve_attribution_method(args)
    if args.context_tokens < 1:
        raise WhenceError("--context-tokens must be at least 1")
    text = read_source(path)
    language = language_for_path(path)
    lm = load_model(args.model, args.device)
    record = explain_line(lm, text, line - 1, language, context_tokens=args.context_tokens)
    record.timings["load_s"] = lm.load_seconds
    if args.html and record.tokens:
        write_matrix_html(args.html, lm, record, text, None if args.attribution == "none" else args.attribution,
                          f"{path}:{line}")
    if args.json:
        data = {
            "line": line,
            "text": record.text,
            "model": record.model,
            "device": record.device,
            "mean_logprob": round(record.mean_logprob(), 4),
            "context": {"tokens": len(record.context.token_ids), "truncated": record.context.truncated},
            "tokens": record.tokens_json(),
            "timings": {k: round(v, 4) if isinstance(v, float) else v for k, v in record.timings.items()},
        }
        if args.attribution != "none":
            add_attribution_json(data, lm, record, text, args.attribution, args.attribution_top)
        if args.features and record.tokens:
            data["features"] = features_json(lm, record, text)
        print(json.dumps(data, ensure_ascii=False))
        return 0
    print_coloured(record, _use_colour(args.color))
    if record.context.truncated:
        print(f"-- context cut to the last {len(record.context.token_ids)} tokens above the line")
    if args.attribution != "none":
        print_influences(lm, record, text, args.attribution, args.attribution_top)
    if args.features:
        print_features(lm, record, text)
    return 0
