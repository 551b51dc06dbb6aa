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
    parser.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "int8", "onnx-int8", "onnx-fp32"],
                        help="the decoding forward's weights on a CPU (default fp16, within rounding of fp32; onnx-*: "
                        "onnxruntime, needs whence-ls[onnx]; see README)")
    parser.add_argument("--fim", default="auto", metavar="TEMPLATE",
                        help="fill-in-the-middle: auto (the model's family, if its tokenizer has one), off, starcoder, "
                        "qwen2.5-coder, deepseek-coder, codellama or codestral")
    parser.add_argument("--suffix-tokens", type=int, default=128, help="code after the cursor shown to a FIM model")
    parser.add_argument("--with", dest="context_files", action="append", default=[], metavar="FILE",
                        help="another file for the model to see (as if open in the editor); repeatable")
    parser.add_argument("--repository", choices=["auto", "off"], default="auto",
                        help="auto: show the model snippets of the --with files and of the workspace files the file "
                        "imports (under the current directory); off: the file alone")
    parser.add_argument("--repository-tokens", type=int, default=384)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    add_attribution_arguments(parser)
    parser.add_argument(
        "--index",
        default=None,
        metavar="DIR",
        help="trace index for provenance (default: the default index when it is built; `none` turns it off)",
    )
    parser.set_defaults(run=run)


def add_attribution_arguments(parser) -> None:
    # no import of the attribution engine here: it pulls in torch, and every CLI start-up
    # (even `--help`) builds all parsers; the method is checked when the command runs
    parser.add_argument(
        "--attribution",
        default=None,
        metavar="METHOD",
        help="attribution method: input_x_gradient, gradient_norm, integrated_gradients, attention_rollout, "
        "value_norm, occlusion, contrastive, ablation, calibrated_attention, or none (default: calibrated_attention "
        "when the model is calibrated, else gradient_norm)",
    )
    parser.add_argument("--attribution-top", type=int, default=5, metavar="K", help="context units shown per token (default 5)")
    parser.add_argument("--features", action="store_true",
                        help="the sparse-autoencoder features of the least confident tokens: label, a top snippet, and the "
                        "context lines their activation came from (after `whence-ls model train-sae`)")
    parser.add_argument("--html", default=None, metavar="FILE",
                        help="also write a self-contained HTML page of the attribution (sources lit up by each line and token)")


def resolve_attribution_method(args) -> None:
    """Fill in the default method and reject unknown ones before any model is loaded."""
    from whence_ls.engine.attribution.catalogue import METHODS  # no torch: this runs before any model
    from whence_ls.errors import WhenceError

    # None stays None: the default depends on the model (calibrated or not)
    if args.attribution is not None and args.attribution not in (*METHODS, "none"):
        raise WhenceError(f"unknown attribution method {args.attribution!r}; use one of {', '.join(METHODS)} or none")


def run(args) -> int:
    from whence_ls.commands.features_output import features_json, print_features
    from whence_ls.engine.generation import complete_at
    from whence_ls.engine.loading import load_model
    from whence_ls.errors import WhenceError
    from whence_ls.grammars import language_for_path
    from whence_ls.sourcefile import offset_of, parse_location, read_source

    path, line, col = parse_location(args.location, need_column=True)
    resolve_attribution_method(args)
    if args.max_new_tokens < 1:
        raise WhenceError("--max-new-tokens must be at least 1")
    text = read_source(path)
    if not text.strip():
        raise WhenceError(f"{path} is empty: there is no context to complete from")
    cursor = offset_of(text, line, col)
    if not text[:cursor].strip():
        raise WhenceError(f"nothing before {line}:{col} in {path}: there is no context to complete from")
    language = language_for_path(path)  # the prompt's context carries it on to every view of the record
    prompt, snippets = repository_prompt(args, path, text, language)
    lm = load_model(args.model, args.device, precision=args.precision)
    result = complete_at(
        lm,
        text,
        cursor,
        language=language,
        max_new_tokens=args.max_new_tokens,
        context_tokens=args.context_tokens,
        prompt=prompt,
        snippets=snippets,
    )
    result.timings["load_s"] = lm.load_seconds
    index_path, hits = trace_hits(args.index, result.text, language, line)
    if args.html and result.tokens:
        document = text[: result.doc_start] + result.text + text[result.doc_start :]
        write_matrix_html(args.html, lm, result, document, None if args.attribution == "none" else args.attribution,
                          f"{path}:{line}:{col}", source_text=text)
    if args.json:
        data = completion_json(result)
        if args.attribution != "none" and result.tokens:
            add_attribution_json(data, lm, result, text, args.attribution, args.attribution_top)
        data["trace_index"] = index_path
        data["trace"] = hits
        if args.features and result.tokens:
            data["features"] = features_json(lm, result, text)
        print(json.dumps(data, ensure_ascii=False))
    else:
        print_coloured(result, _use_colour(args.color))
        if args.attribution != "none" and result.tokens:
            print_influences(lm, result, text, args.attribution, args.attribution_top)
        if args.features and result.tokens:
            print_features(lm, result, text)
        print_trace(index_path, hits)
    return 0


def repository_prompt(args, path, text: str, language: str | None):
    """The prompt options and snippets the server would use, with the current directory as the
    workspace: the --with files stand for open editors."""
    from pathlib import Path

    from whence_ls.engine.prompt import FIM_CHOICES, PromptOptions
    from whence_ls.engine.repository import blocks_of, imported_files, rank_blocks
    from whence_ls.errors import WhenceError
    from whence_ls.sourcefile import read_source

    if args.fim not in FIM_CHOICES:
        raise WhenceError(f"unknown --fim {args.fim!r}: use one of {', '.join(FIM_CHOICES)}")
    root = Path.cwd().resolve()
    path = Path(path).resolve()

    def shown(file: Path) -> str:
        try:
            return file.relative_to(root).as_posix()
        except ValueError:
            return file.name

    options = PromptOptions(fim=args.fim, suffix_tokens=max(0, args.suffix_tokens), file_path=shown(path),
                            repository_tokens=max(0, args.repository_tokens) if args.repository == "auto" else 0,
                            repository_name=root.name)
    if args.repository == "off":
        return options, []
    files = [Path(f).resolve() for f in args.context_files]
    files += [f for f in imported_files(text, path, [root], language) if f not in files]
    blocks = []
    for file in files:
        if file == path:
            continue
        blocks += blocks_of(shown(file), read_source(file), file.as_uri())
    return options, rank_blocks(blocks, text, options.repository_tokens * 4)


def write_matrix_html(target: str, lm, record, text: str, method: str | None, title: str,
                      source_text: str | None = None) -> None:
    """Every row of `record`, rendered as the page VS Code's "Export as HTML" saves. `text` holds
    the record's tokens; `source_text` (default `text`) is the document its sources' offsets
    are in (before a completion was inserted)."""
    from pathlib import Path

    from whence_ls.engine.attribution import METHOD_SHORT_NOTES, attribution_matrix, context_units, default_method
    from whence_ls.report.matrix_html import render_matrix_html
    from whence_ls.report.matrix_view import matrix_view
    from whence_ls.sourcefile import line_col_of, line_starts, source_label

    method = method or default_method(lm)
    units = context_units(lm, record)
    matrix = attribution_matrix(lm, record, method)
    starts = line_starts(text)
    tokens = []
    for token in record.tokens:
        line, col = line_col_of(text, min(len(text), record.doc_start + token.start), starts)
        tokens.append({"text": token.text, "prob": token.prob,
                       "range": {"start": {"line": line - 1, "character": col - 1}, "end": {"line": line - 1, "character": col - 1}}})

    source_text = text if source_text is None else source_text
    source_starts = line_starts(source_text)

    def label(unit) -> str:
        if unit.path is not None:
            return source_label(unit.line + 1, unit.path)
        return source_label(line_col_of(source_text, unit.start, source_starts)[0], below=unit.role == "suffix")

    answer = {
        "method": matrix.method,
        "note": METHOD_SHORT_NOTES.get(matrix.method, ""),
        "tokens": tokens,
        "units": [{"text": u.text, "label": label(u)} for u in units],
        "scores": [matrix.rows[i].scores if i in matrix.rows else None for i in range(len(record.tokens))],
    }
    page = render_matrix_html({**answer, "view": matrix_view(answer)}, title=title)
    Path(target).write_text(page, encoding="utf-8")
    print(f"-- attribution page written to {target}", file=sys.stderr)


def trace_hits(index_option: str | None, completion: str, language: str | None, first_line: int) -> tuple[str | None, list[dict]]:
    """Where the completion comes from: the CLI joins engine and trace results, as the server does."""
    from whence_ls.paths import default_index_dir

    if index_option == "none":
        return None, []
    if index_option is None:
        if not default_index_dir().exists():
            return None, []
        index_option = str(default_index_dir())
    from whence_ls.trace import open_index

    index = open_index(index_option)  # a broken index is an error even for an empty completion
    if not completion.strip():
        return index_option, []
    hits = index.search(completion, language=language, k=5, first_line=first_line)
    return index_option, [hit.to_json() for hit in hits]


def print_trace(index_path: str | None, hits: list[dict]) -> None:
    if index_path is None:
        print("-- provenance: no trace index (build the default one with `whence-ls index build`)", file=sys.stderr)
        return
    if not hits:
        print(f"-- provenance: nothing in {index_path} matches above the threshold", file=sys.stderr)
        return
    for hit in hits:
        print(
            f"-- traced: {hit['kind']} {hit['score']:.2f} {hit['path']}:{hit['source_start_line']}-{hit['source_end_line']} "
            f"({hit['license']}, {hit['matched_fraction']:.0%} matched)",
            file=sys.stderr,
        )


def _unit_json(unit, score: float, text: str, starts: list[int]) -> dict:
    from whence_ls.sourcefile import line_col_of

    if unit.path is not None:  # another file's snippet: its offsets are that file's
        return {"text": unit.text, "path": unit.path, "start_line": unit.line + 1, "end_line": unit.line + unit.lines,
                "score": round(score, 5), "identifiers": [i.text for i in unit.identifiers]}
    start_line, start_col = line_col_of(text, unit.start, starts)
    end_line, end_col = line_col_of(text, unit.end, starts)
    return {
        "text": unit.text,
        "start_line": start_line,
        "start_col": start_col,
        "end_line": end_line,
        "end_col": end_col,  # exclusive, like the end of an editor selection
        "score": round(score, 5),
        "identifiers": [i.text for i in getattr(unit, "identifiers", ())],
        **({"below_cursor": True} if unit.role == "suffix" else {}),
    }


def add_attribution_json(data: dict, lm, record, text: str, method: str, top: int) -> None:
    """Every token gets its row (computed least confident first), as the top `top` units."""
    import time

    from whence_ls.engine.attribution import METHOD_NOTES, attribution_matrix, context_units, default_method

    method = method or default_method(lm)
    from whence_ls.sourcefile import line_starts

    started = time.perf_counter()
    units = context_units(lm, record)
    matrix = attribution_matrix(lm, record, method)
    starts = line_starts(text)
    for index, token_json in enumerate(data["tokens"]):
        row = matrix.rows.get(index)
        token_json["attribution"] = (
            [_unit_json(units[u], score, text, starts) for u, score in row.top(top)] if row is not None else []
        )
        if row is not None and row.generated_share is not None:
            token_json["attribution_generated_share"] = round(row.generated_share, 4)
    data["attribution"] = {
        "method": matrix.method,
        "note": METHOD_NOTES[matrix.method],
        "units": len(units),
        "sink_excluded": True,
        "seconds": round(time.perf_counter() - started, 3),
    }


# tokens shown with their influences or features in the terminal: the least confident quarter,
# at most this many
_SHOWN_TOKENS = 4


def shown_tokens(record, share: float = 0.25) -> list[int]:
    """The tokens the terminal explains: the least confident `share` that are not blank, at most
    `_SHOWN_TOKENS`, least confident first."""
    return [i for i in record.least_confident(share) if record.tokens[i].text.strip()][:_SHOWN_TOKENS]


def print_influences(lm, record, text: str, method: str, top: int, *, share: float = 0.25) -> None:
    """Under the completion: the strongest influences of the least confident tokens."""
    from whence_ls.engine.attribution import METHOD_NOTES, attribute_rows, context_units, default_method
    from whence_ls.sourcefile import line_col_of, line_starts, source_label

    method = method or default_method(lm)

    indices = shown_tokens(record, share)
    if not indices:
        return
    units = context_units(lm, record)
    rows = attribute_rows(lm, record, indices, method)
    starts = line_starts(text)
    print(f"-- least confident tokens and what drove them ({method}: {METHOD_NOTES[method]})")
    for index in indices:
        token = record.tokens[index]
        parts = []
        row = rows[index]
        for u, score in row.top(top):
            shown = units[u].text.splitlines()[0][:60]
            if units[u].path is not None:
                place = source_label(units[u].line + 1, units[u].path)
            else:
                place = source_label(line_col_of(text, units[u].start, starts)[0], below=units[u].role == "suffix")
            parts.append(f"      {place:>10} {score:+.2f}  {shown}")
        copied = row.extra.get("copied_from_unit")
        note = f" (copied from line {line_col_of(text, units[copied].start, starts)[0]})" if isinstance(copied, int) else ""
        print(f"   {token.text!r} p={token.prob:.2f}{note} <-")
        for part in parts:
            print(part)


def completion_json(result) -> dict:
    return {
        "completion": result.text,
        "model": result.model,
        "device": result.device,
        "precision": result.precision,
        "stop_reason": result.stop_reason,
        "context": {"tokens": len(result.context.token_ids), "truncated": result.context.truncated,
                    "format": result.context.prompt_format,
                    "files": sorted({s.path for s in result.context.segments if s.path is not None})},
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
