"""`whence-ls bench lsp`: the language server as an editor meets it, over stdio.

Starts `python -m whence_ls serve` as a subprocess (the real server, the real transport) and
measures, round trip from this client, once per `--busy-cores` count (a fresh server each
pass, with that many other processes spinning on the machine for the pass; see `busy_cores`):

- ghost text at jump-to-line and typing cursors, p50/p95/max, with the completions' lengths,
  and the time from an accept to the attribution of a hovered token (see `lsp_ghost`);
- completion latency (inline completion at distinct positions, so no answer-cache hits; the
  prefix cache serves them as it does while a user types down a file) p50/p95;
- time to a cold token's row: right after an acceptance, hover the token the background queue
  would reach last, and again until the hover carries its attribution;
- hover latency for tokens whose rows are ready, p50/p95 (goal: p95 <= 25 ms).

Over 400 lines on purpose: every measure above runs against the same server process and client
in one pass, and each step leaves the server in the state the next one starts from; the
ghost-text measures already live in `lsp_ghost.py`.
"""


from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lsprotocol import types

from whence_ls.bench import lsp_ghost
from whence_ls.bench.busy_cores import parse_counts, spinning
from whence_ls.bench.lsp_ghost import percentile as _percentile
from whence_ls.bench.lsp_table import print_passes
from whence_ls.errors import WhenceError


# the longest any one custom request may go unanswered
CALL_TIMEOUT_S = 120.0


def run(args) -> int:
    try:
        counts = parse_counts(args.busy_cores)
    except ValueError as exc:
        raise WhenceError(str(exc)) from None
    passes = []
    for count in counts:
        _say(f"pass with {count} busy core(s) of {os.cpu_count()}")
        with spinning(count, args.busy_max_s) as spinners:
            load_start = _load()
            result = asyncio.run(_bench(args))
            result["load_average"] = {"start": load_start, "end": _load()}
        result["busy_cores"] = count
        result["spinners"] = spinners.summary()
        passes.append(result)
    output = {"busy_cores": counts, "cpus": os.cpu_count(), "passes": passes}
    if args.json:
        print(json.dumps(_finite(output), indent=2))
    else:
        print_passes(output)
    return 0


def bench_document() -> tuple[str, str]:
    """Real code the tests do not use: the stdlib's `shlex.py`, cut after its first 140 lines."""
    import shlex

    with open(shlex.__file__, encoding="utf-8") as handle:
        lines = handle.read().split("\n")[:140]
    return shlex.__file__, "\n".join(lines) + "\n"


def _positions(text: str, count: int) -> list[tuple[int, int]]:
    """Ends of indented code lines from the middle of the file on: where a user would type."""
    lines = text.split("\n")
    found = []
    for number in range(len(lines) // 3, len(lines)):
        line = lines[number]
        if line.startswith("        ") and line.strip() and not line.strip().startswith(("#", '"')):
            found.append((number, len(line)))
    step = max(1, len(found) // max(1, count))
    return found[::step][:count]


async def _bench(args) -> dict[str, Any]:
    """One pass: a fresh server, the measures, a clean shutdown (or the server killed, on an
    error or Ctrl-C, so no pass leaves it running)."""
    from pygls.lsp.client import LanguageClient

    from whence_ls import __version__

    client = LanguageClient("whence-bench", __version__, protocol_cls=lsp_ghost.RecordingProtocol)
    lsp_ghost.quiet_unknown_notifications()

    @client.feature("whence/status")
    def _status(params: Any) -> None:
        """Pushed on every change; the bench asks for the status when it needs it."""

    @client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def _diagnostics(params: Any) -> None:
        """Accepted and dropped: an editor shows them, the benchmark only times requests (a
        client without this handler logs every publication as an unknown notification)."""

    options: dict[str, Any] = {"device": args.device}
    if args.max_new_tokens is not None:
        options["maxNewTokens"] = args.max_new_tokens
    if args.draft_tokens is not None:
        options["draftTokens"] = args.draft_tokens
    if args.latency_budget_ms is not None:
        options["latencyBudgetMs"] = args.latency_budget_ms  # a server without the setting ignores it
    if args.cold_prefill_ms is not None:
        options["coldPrefillMs"] = args.cold_prefill_ms
    if args.model:
        options["model"] = args.model
    if getattr(args, "attribution_method", None):
        options["attributionMethod"] = args.attribution_method
    if getattr(args, "precision", None):
        options["precision"] = args.precision
    workspace = tempfile.mkdtemp(prefix="whence-bench-lsp-")
    started = time.perf_counter()
    extra = ["--log-file", args.server_log, "--verbose"] if args.server_log else []
    clean = False
    try:
        await client.start_io(sys.executable, "-m", "whence_ls", "serve", *extra)
        await asyncio.wait_for(client.initialize_async(types.InitializeParams(
            capabilities=types.ClientCapabilities(), root_uri=Path(workspace).as_uri(), initialization_options=options)),
            CALL_TIMEOUT_S)
        initialize_ms = (time.perf_counter() - started) * 1000
        client.initialized(types.InitializedParams())

        async def call(method: str, params: Any) -> Any:
            # a request that is never answered ends the bench with its name, rather than a bench
            # that waits forever (once, the second pass's first status request went unanswered
            # with both processes idle and nothing unread in either pipe; not understood yet)
            try:
                return _plain(await asyncio.wait_for(client.protocol.send_request_async(method, params), CALL_TIMEOUT_S))
            except asyncio.TimeoutError:
                raise SystemExit(f"whence-ls bench lsp: no answer to {method} within {CALL_TIMEOUT_S:.0f} s "
                                 f"(server log: {args.server_log or 'pass --server-log PATH to keep one'})") from None

        while True:
            status = await call("whence/status", {})
            if status["state"] == "ready":
                break
            if status["state"] == "error":
                raise SystemExit(f"whence-ls bench lsp: the server could not load the model: {status['message']}")
            await asyncio.sleep(0.05)
        ready_s = time.perf_counter() - started
        _say(f"model ready after {ready_s:.1f}s")

        result: dict[str, Any] = {"server": "python -m whence_ls serve (stdio)", "options": options,
                                  "initialize_ms": round(initialize_ms, 1), "model_ready_s": round(ready_s, 2)}
        server = getattr(client, "_server", None)  # the process start_io made
        cpu_before = _cpu_seconds(server)
        if not args.ghost_only:
            result.update(await _older_measures(args, client, call, workspace))
        result.update(await _ghost_measures(args, client, call, workspace))
        final = await asyncio.wait_for(call("whence/status", {}), 60)
        cpu_after = _cpu_seconds(server)
        # what the measures cost the machine: background work that no one waits for shows here
        result["server_cpu_s"] = round(cpu_after - cpu_before, 1) if cpu_before is not None and cpu_after is not None else None
        result.update({"model": final.get("model"), "device": final.get("device"), "server_status": final,
                       "server_pid": server.pid if server is not None else None,
                       "server_notifications": dict(client.protocol.notifications)})
        result["shutdown"] = await _shut_down(client, server)
        clean = True
    finally:
        server = getattr(client, "_server", None)
        if not clean and server is not None and server.returncode is None:
            server.kill()
        try:  # pygls' client can wait forever on the pipes of a server that was killed
            await asyncio.wait_for(client.stop(), 10)
        except asyncio.TimeoutError:
            _say("the client did not stop within 10 s; leaving it")
        shutil.rmtree(workspace, ignore_errors=True)
    return result


def _cpu_seconds(server) -> float | None:
    """The server process's CPU seconds so far (user + system, every thread; Linux), or None."""
    try:
        fields = Path(f"/proc/{server.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (AttributeError, OSError, ValueError, IndexError):
        return None


async def _shut_down(client, server) -> str:
    """shutdown, exit, and the process gone; a server that does not go in time is killed (and
    the result says so: a server that outlives its editor is a finding)."""
    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(client.shutdown_async(None), 30)
    except asyncio.TimeoutError:
        _say("the server did not answer shutdown within 30 s; killing it")
        server.kill()
        return "no answer to shutdown within 30 s: killed"
    client.exit(None)
    if server is None:
        return "clean"
    try:
        await asyncio.wait_for(server.wait(), 20)
    except asyncio.TimeoutError:
        _say("the server was still running 20 s after exit; killing it")
        server.kill()
        return "still running 20 s after exit: killed"
    return f"clean (exited {time.perf_counter() - t0:.1f} s after shutdown, code {server.returncode})"


async def _ghost_measures(args, client, call, workspace: str) -> dict[str, Any]:
    settled = await lsp_ghost.wait_idle(call, args.settle_s)
    jump, ledger = await lsp_ghost.jumps(client, workspace, args.jumps, args.request_timeout_s)
    keystrokes: list[dict] | None = [] if getattr(args, "ask_every_key", False) else None

    async def accepting() -> list[dict]:
        _say(f"accepting {min(args.accepts, sum(1 for s in jump if s['chars']))} jump offers; hovering their first and middle tokens")
        return await lsp_ghost.accept_to_row(client, ledger, jump, args.accepts, args.row_timeout_s)

    # asking at every keystroke makes hundreds of offers, and the server keeps the last 64: the
    # jump offers are accepted before that typing, not after
    accepts = await accepting() if keystrokes is not None else None
    typing = await lsp_ghost.typing(client, workspace, args.typing_asks, args.char_ms / 1000, args.pause_ms / 1000,
                                    args.request_timeout_s, every_key=keystrokes)
    if accepts is None:
        accepts = await accepting()
    after_enter = [s for s in typing if s["kind"] == "typing after Enter"]
    in_line = [s for s in typing if s["kind"] == "typing in a line"]
    return {
        "idle_before_ghost_text": settled,
        "typing_pace": {"char_ms": args.char_ms, "pause_ms": args.pause_ms, "ask_every_key": keystrokes is not None},
        "ghost_text": {"jump": lsp_ghost.summary(jump), "typing": lsp_ghost.summary(typing),
                       "typing_after_enter": lsp_ghost.summary(after_enter), "typing_in_a_line": lsp_ghost.summary(in_line),
                       **({"keystroke": lsp_ghost.summary(keystrokes)} if keystrokes is not None else {})},
        "accept_to_row_s": {"first_token": lsp_ghost.row_summary(accepts, "first"),
                            "middle_token": lsp_ghost.row_summary(accepts, "middle"),
                            # the default method's own row (a slower default shows its live half first)
                            "first_token_own": lsp_ghost.row_summary(accepts, "first_own"),
                            "middle_token_own": lsp_ghost.row_summary(accepts, "middle_own"), "timeout_s": args.row_timeout_s},
        "answer_fields": lsp_ghost.answer_fields(jump + typing),
        "accepts": accepts,
        "samples": jump + typing,
        # every keystroke's ask, without the answers' text (hundreds of them)
        **({"keystroke_samples": [{k: v for k, v in sample.items() if k != "answer"} for sample in keystrokes]}
           if keystrokes is not None else {}),
    }


async def _older_measures(args, client, call, workspace: str) -> dict[str, Any]:
    source_path, text = bench_document()
    uri = (Path(workspace) / "bench_shlex.py").as_uri()
    version = 1
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        types.TextDocumentItem(uri=uri, language_id="python", version=version, text=text)))
    doc = types.TextDocumentIdentifier(uri=uri)

    def inline_params(line: int, character: int) -> types.InlineCompletionParams:
        return types.InlineCompletionParams(
            text_document=doc, position=types.Position(line, character),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic))

    _say("timing completions")
    # completion latency: distinct positions, sequential, as a user moving through the file
    completion_ms, offers = [], []
    for line, character in _positions(text, args.completions):
        t0 = time.perf_counter()
        answer = await client.text_document_inline_completion_async(inline_params(line, character))
        completion_ms.append((time.perf_counter() - t0) * 1000)
        if answer and answer.items:
            offers.append((line, character, answer.items[0]))
    t0 = time.perf_counter()
    if offers:
        line, character, _ = offers[0]
        await client.text_document_inline_completion_async(inline_params(line, character))
    cached_ms = (time.perf_counter() - t0) * 1000

    # the first completion in a file just opened: right away (the prefill is all its own), and
    # after the idle warm-up had time to prefill it; two copies of one short file, each with its
    # own first line so that neither shares a token prefix with anything cached
    short = "\n".join(text.split("\n")[:60]) + "\n"
    first_ms = {}
    for label, pause in (("cold", 0.0), ("warmed", args.warm_wait)):
        body = f"# {label} copy\n" + short
        other = (Path(workspace) / f"bench_first_{label}.py").as_uri()
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            types.TextDocumentItem(uri=other, language_id="python", version=1, text=body)))
        await asyncio.sleep(pause)
        line = max(i for i, l in enumerate(body.split("\n")) if l.startswith("        ") and l.strip())
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=other), position=types.Position(line, len(body.split("\n")[line])),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic))
        t0 = time.perf_counter()
        await client.text_document_inline_completion_async(params)
        first_ms[label] = (time.perf_counter() - t0) * 1000

    during_background = await _during_background(client, call, workspace, text, args.completions)

    long_document = None
    if args.long_document_lines:
        long_document = await _long_document(client, workspace, text, args.long_document_lines, args.completions)

    _say(f"{len(offers)} offers; accepting {min(len(offers), args.accepts)}")
    # accept some of them, bottom-most first so earlier positions stay valid; after each, time
    # the coldest token's row (the most confident one: the background queue reaches it last)
    cold_row_ms, records = [], []
    for line, character, item in sorted(offers, key=lambda o: -o[0])[: args.accepts]:
        inserted = item.insert_text if isinstance(item.insert_text, str) else item.insert_text.value
        version += 1
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangePartial(
                range=types.Range(types.Position(line, character), types.Position(line, character)), text=inserted)]))
        accepted = _plain(await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=item.command.command, arguments=list(item.command.arguments))))
        t_accept = time.perf_counter()
        matrix = await call("whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": accepted["recordId"]})
        tokens = [t for t in matrix["tokens"] if t["text"].strip()]
        if not tokens:
            continue
        coldest = max(tokens, key=lambda t: t["prob"])
        position = types.Position(**coldest["range"]["start"])
        while True:
            shown = await client.text_document_hover_async(types.HoverParams(text_document=doc, position=position))
            if shown is None:
                raise SystemExit(f"whence-ls bench lsp: no hover on the accepted token {coldest} (server bug)")
            if "attribution computing" not in shown.contents.value:  # the row is in the hover
                break
            if time.perf_counter() - t_accept > 600:
                raise SystemExit("whence-ls bench lsp: a row took over 10 minutes; attribution is stuck")
        cold_row_ms.append((time.perf_counter() - t_accept) * 1000)
        records.append(accepted["recordId"])

    _say("waiting for every row of the accepted completions")
    # wait for every row, then time hovers that are pure lookups + markdown + transport
    all_rows_s = None
    t0 = time.perf_counter()
    ready_tokens = []
    for record_id in records:
        while True:
            matrix = await call("whence/attributionMatrix", {"textDocument": {"uri": uri}, "recordId": record_id})
            # zero-width tokens (text re-produced while healing the token before the cursor) and
            # edited ones never get a row
            wanted = [row for token, row in zip(matrix["tokens"], matrix["scores"]) if token["text"] and not token.get("edited")] if matrix else []
            if matrix is None or all(row is not None for row in wanted):
                break
            if matrix["note"].startswith("attribution failed"):
                raise SystemExit(f"whence-ls bench lsp: {matrix['note']}")
            await asyncio.sleep(0.2)
        if matrix is not None:
            ready_tokens += [types.Position(**t["range"]["start"]) for t in matrix["tokens"] if t["text"].strip()]
    all_rows_s = time.perf_counter() - t0
    _say(f"timing {args.hovers} hovers on ready rows")
    hover_ms = []
    for n in range(args.hovers if ready_tokens else 0):
        position = ready_tokens[n % len(ready_tokens)]
        t0 = time.perf_counter()
        await client.text_document_hover_async(types.HoverParams(text_document=doc, position=position))
        hover_ms.append((time.perf_counter() - t0) * 1000)

    return {
        "document": f"{source_path} (first 140 lines)",
        "completion_ms": {"n": len(completion_ms), "p50": _r(_percentile(completion_ms, 0.5)), "p95": _r(_percentile(completion_ms, 0.95))},
        "completion_cached_ms": _r(cached_ms),
        "first_completion_ms": {k: _r(v) for k, v in first_ms.items()},
        "cold_row_ms": {"n": len(cold_row_ms), "p50": _r(_percentile(cold_row_ms, 0.5)), "max": _r(max(cold_row_ms, default=float("nan")))},
        "all_rows_after_accepts_s": round(all_rows_s, 2) if all_rows_s is not None else None,
        "hover_ready_ms": {"n": len(hover_ms), "p50": _r(_percentile(hover_ms, 0.5)), "p95": _r(_percentile(hover_ms, 0.95)),
                           "goal_p95": 25.0},
        "attribution_method": matrix["method"] if records and matrix else None,
        "long_document": long_document,
        "during_background": during_background,
    }


async def _during_background(client, call, workspace: str, text: str, count: int) -> dict[str, Any]:
    """A completion that arrives while the rows of the one just offered are being computed in
    the background (each offer starts them at once), against the same completion once the
    server is idle. Two copies of the document that differ only in their first line: in each,
    a completion is offered at a position, then another is asked at a second position, in the
    busy copy at once, in the idle copy after the background work ended."""
    _say("timing completions during background attribution and when idle")
    uris = {}
    for label in ("busy", "idle"):
        uris[label] = (Path(workspace) / f"bench_{label}.py").as_uri()
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            types.TextDocumentItem(uri=uris[label], language_id="python", version=1, text=f"# {label} copy\n" + text)))

    def params(label: str, line: int, character: int) -> types.InlineCompletionParams:
        return types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uris[label]), position=types.Position(line + 1, character),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic))

    async def idle() -> None:
        await lsp_ghost.wait_idle(call, float("inf"))

    positions = _positions(text, 2 * count)
    timings: dict[str, list[float]] = {"busy": [], "idle": []}
    found_busy = 0
    for n in range(0, len(positions) - 1, 2):
        first, second = positions[n], positions[n + 1]
        for label in ("busy", "idle"):
            await idle()
            await client.text_document_inline_completion_async(params(label, *first))  # its rows start now
            if label == "idle":
                await idle()
            else:
                status = await call("whence/status", {})
                found_busy += bool(status.get("stats", {}).get("attributionPrefetch"))
            t0 = time.perf_counter()
            await client.text_document_inline_completion_async(params(label, *second))
            timings[label].append((time.perf_counter() - t0) * 1000)
    for uri in uris.values():
        client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri=uri)))
    busy, quiet = _percentile(timings["busy"], 0.5), _percentile(timings["idle"], 0.5)
    added = [b - i for b, i in zip(timings["busy"], timings["idle"])]
    return {"n": len(timings["busy"]), "background_running_share": round(found_busy / max(1, len(timings["busy"])), 2),
            "busy_p50_ms": _r(busy), "idle_p50_ms": _r(quiet), "added_p50_ms": _r(_percentile(added, 0.5)),
            "added_max_ms": _r(max(added, default=float("nan")))}


async def _long_document(client, workspace: str, text: str, filler_lines: int, count: int) -> dict[str, Any]:
    """A keystroke then a completion, at the same places of the same code, in a copy of the
    bench document and in one with `filler_lines` lines before it (alternating): what a request
    costs beyond its context window should not grow with the document."""
    _say(f"timing keystroke + completion in a {filler_lines}-line document and a short one")
    filler = "".join(f"filler_{i} = {i}\n" for i in range(filler_lines))
    docs = {}
    for label, body in (("short", text), ("long", filler + text)):
        uri = (Path(workspace) / f"bench_{label}_document.py").as_uri()
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            types.TextDocumentItem(uri=uri, language_id="python", version=1, text=body)))
        docs[label] = [uri, 1, filler_lines if label == "long" else 0]
    timings: dict[str, list[float]] = {"short": [], "long": []}
    for line, character in _positions(text, count):
        for label in ("short", "long"):
            uri, version, shift = docs[label]
            version += 1
            docs[label][1] = version
            at = types.Position(line + shift, character)
            t0 = time.perf_counter()
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[types.TextDocumentContentChangePartial(range=types.Range(at, at), text=" ")]))
            await client.text_document_inline_completion_async(types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(at.line, at.character + 1),
                context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
            timings[label].append((time.perf_counter() - t0) * 1000)
    for uri, _, _ in docs.values():
        client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri=uri)))
    short, long = _percentile(timings["short"], 0.5), _percentile(timings["long"], 0.5)
    return {"filler_lines": filler_lines, "n": len(timings["short"]), "short_p50_ms": _r(short), "long_p50_ms": _r(long),
            "ratio": round(long / short, 2) if short else None}


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _say(message: str) -> None:
    print(f"bench lsp: {message}", file=sys.stderr, flush=True)


def _r(value: float) -> float:
    return round(value, 1)


def _finite(value: Any) -> Any:
    """NaN (a percentile of nothing) as null, so the output is standard JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
