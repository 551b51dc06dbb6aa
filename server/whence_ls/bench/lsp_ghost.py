"""`bench lsp`'s ghost-text measures, as a person meets them in an editor.

- **jump**: the cursor placed at the end of various lines of a file the model never saw (as
  after go-to-line), ghost text asked at once; in a fixed shuffled order, as jumps come.
- **typing**: the bench types down a file character by character (one didChange per
  character, Enter with the next line's indentation as one change, as an editor's auto-indent
  sends it), pauses as a person does, and asks for ghost text: on a new line right after Enter
  (so the completion is the next lines) and after the first letters of a line.
- **accept to row**: an offer accepted as a client does (its text applied with didChange, then
  its command `whence.acceptCompletion` run), then its first token and a middle one hovered
  until the hover carries attribution: seconds from the accept.

Each answer is kept as the server sent it (raw JSON), so fields a server adds show up in
`--json`; the lengths (characters and lines) show what the latencies bought.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.protocol import LanguageServerProtocol

from whence_ls.bench.lsp_texts import INVENTORY, LEDGER, TYPING_START_LINE

INLINE = types.TEXT_DOCUMENT_INLINE_COMPLETION


class RecordingProtocol(LanguageServerProtocol):
    """The client's protocol, keeping the raw result of the requests it is asked to watch and
    counting the notifications the server sends, by method."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watched: set[str] = set()
        self.raw: dict[str, Any] = {}
        self.notifications: Counter = Counter()
        self._ids = itertools.count()

    def new_watched_id(self) -> str:
        msg_id = f"bench-{next(self._ids)}"
        self.watched.add(msg_id)
        return msg_id

    def structure_message(self, data: dict[str, Any]):
        if isinstance(data, dict) and "jsonrpc" in data:
            if "method" not in data and data.get("id") in self.watched:
                self.watched.discard(data["id"])
                self.raw[data["id"]] = data.get("result", data.get("error"))
            elif "method" in data and "id" not in data:
                self.notifications[data["method"]] += 1
        return super().structure_message(data)


def quiet_unknown_notifications() -> None:
    """pygls warns on every notification it has no handler for; the bench counts them by method
    instead (a server may push what this client does not know yet)."""
    import logging

    logger = logging.getLogger("pygls.protocol.json_rpc")
    if not any(isinstance(f, _UnknownNotification) for f in logger.filters):
        logger.addFilter(_UnknownNotification())


class _UnknownNotification:
    def filter(self, record: Any) -> bool:
        return not str(record.msg).startswith("Ignoring notification for unknown method")


class Document:
    """A document the bench edits, with the version it sends."""

    def __init__(self, client: Any, uri: str, text: str) -> None:
        self.client, self.uri, self.version = client, uri, 1
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))

    def insert(self, line: int, character: int, text: str) -> None:
        self.version += 1
        at = types.Position(line, character)
        self.client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=self.uri, version=self.version),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(at, at), text=text)]))

    def close(self) -> None:
        self.client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri=self.uri)))


# no single request of these measures may hold the bench longer (a hung server is reported,
# not waited for); `ask` takes its own bound
REQUEST_TIMEOUT_S = 120.0


async def ask(client: Any, document: Document, line: int, character: int, kind: str,
              timeout_s: float = REQUEST_TIMEOUT_S) -> dict[str, Any]:
    """One inline completion, timed round trip; the sample keeps the raw answer (None and
    `timed_out` when none came within `timeout_s`)."""
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=document.uri), position=types.Position(line, character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic))
    protocol: RecordingProtocol = client.protocol
    msg_id = protocol.new_watched_id()
    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(protocol.send_request_async(INLINE, params, msg_id=msg_id), timeout_s)
        timed_out = False
    except asyncio.TimeoutError:
        timed_out = True
    ms = (time.perf_counter() - t0) * 1000
    protocol.watched.discard(msg_id)
    raw = protocol.raw.pop(msg_id, None)
    items = raw.get("items", []) if isinstance(raw, dict) else raw if isinstance(raw, list) else []
    first = items[0] if items else None
    text = _insert_text(first)
    return {"kind": kind, "line": line, "character": character, "ms": round(ms, 1), "items": len(items),
            "chars": len(text), "lines": text.count("\n") + 1 if text else 0, "timed_out": timed_out, "answer": raw}


async def jumps(client: Any, workspace: str, count: int, timeout_s: float = REQUEST_TIMEOUT_S) -> tuple[list[dict], Document]:
    """Ghost text at the ends of `count` code lines of LEDGER, in a fixed shuffled order."""
    document = Document(client, (Path(workspace) / "ledger.py").as_uri(), LEDGER)
    lines = LEDGER.split("\n")
    ends = [(n, len(line)) for n, line in enumerate(lines) if n >= 12 and _is_code(line)]
    step = max(1, len(ends) // max(1, count))
    chosen = ends[::step][:count]
    random.Random(20).shuffle(chosen)
    _say(f"ghost text at {len(chosen)} jump-to-line cursors")
    samples = [await ask(client, document, line, character, "jump", timeout_s) for line, character in chosen]
    return samples, document


async def typing(client: Any, workspace: str, asks: int, char_s: float, pause_s: float,
                 timeout_s: float = REQUEST_TIMEOUT_S, every_key: list[dict] | None = None) -> list[dict]:
    """Type INVENTORY down from TYPING_START_LINE, asking for ghost text `asks` times (the timed
    samples, after a pause). With `every_key` (a list the untimed asks are added to), also ask at
    every keystroke without waiting for the answer, as VS Code does while a person types: each
    ask supersedes the one before, and the server's work for them runs beside the timed ones."""
    pending: list[asyncio.Task] = []

    def key_ask(line: int, character: int) -> None:
        if every_key is not None:
            pending.append(asyncio.ensure_future(ask(client, document, line, character, "keystroke", timeout_s)))

    lines = INVENTORY.split("\n")
    start = TYPING_START_LINE
    document = Document(client, (Path(workspace) / "inventory.py").as_uri(), "\n".join(lines[:start]) + "\n")
    # which lines get an ask, and where: right after Enter, or after a line's first letters
    points: dict[int, str] = {}
    kinds = itertools.cycle(("enter", "word"))
    for n in range(start + 1, len(lines)):
        if len(points) >= asks:
            break
        if _is_code(lines[n]) and len(lines[n].strip()) > 4:
            points[n] = next(kinds)
    _say(f"typing {max(points, default=start) - start + 1} lines of inventory.py, ghost text at {len(points)} points")
    samples: list[dict] = []
    last = max(points, default=start)
    for n in range(start, last + 1):
        line = lines[n]
        indent = len(line) - len(line.lstrip(" "))
        if n == start:
            document.insert(n, 0, line[:indent])
        if points.get(n) == "enter":
            await asyncio.sleep(pause_s)
            samples.append(await ask(client, document, n, indent, "typing after Enter", timeout_s))
        for column in range(indent, len(line)):
            if n == last and points.get(n) != "word":
                break
            document.insert(n, column, line[column])
            key_ask(n, column + 1)
            await asyncio.sleep(char_s)
            if points.get(n) == "word" and column == indent + 2:
                await asyncio.sleep(pause_s)
                samples.append(await ask(client, document, n, column + 1, "typing in a line", timeout_s))
                if n == last:
                    break
        if n < last:
            following = lines[n + 1]
            indent_next = following[:len(following) - len(following.lstrip(" "))]
            document.insert(n, len(line), "\n" + indent_next)
            key_ask(n + 1, len(indent_next))
            await asyncio.sleep(char_s)
    if every_key is not None:
        every_key.extend(await asyncio.gather(*pending))
    document.close()
    return samples


async def accept_to_row(client: Any, document: Document, samples: list[dict], accepts: int,
                        timeout_s: float) -> list[dict]:
    """Accept up to `accepts` offers of `samples` (bottom-most first, so the places of the
    others stay valid), each followed by hovers on its first and middle token until each hover
    carries attribution."""
    offers = [s for s in samples if s["items"] and _insert_text(_first_item(s)).strip()]
    offers.sort(key=lambda s: (-s["line"], -s["character"]))
    results = []
    for sample in offers[:accepts]:
        item = _first_item(sample)
        text = _insert_text(item)
        line, character = sample["line"], sample["character"]
        command = item.get("command") or {}
        t0 = time.perf_counter()
        document.insert(line, character, text)
        try:
            accepted = await asyncio.wait_for(client.workspace_execute_command_async(types.ExecuteCommandParams(
                command=command.get("command", ""), arguments=list(command.get("arguments", [])))), REQUEST_TIMEOUT_S)
        except asyncio.TimeoutError:
            accepted = {"error": f"no answer within {REQUEST_TIMEOUT_S:.0f} s"}
        except Exception as exc:  # an error answer (say, an expired offer) is a finding, not a crash
            accepted = {"error": f"{type(exc).__name__}: {exc}"}
        command_s = round(time.perf_counter() - t0, 2)
        targets = {name: _position(line, character, text, offset) for name, offset in _token_offsets(text).items()}
        found: dict[str, float | None] = {}
        # when the row is the default method's own, not its live half shown meanwhile (a hover
        # that says the default's row "is being made", `stacked_leave_one_out`)
        own: dict[str, float | None] = {}
        notes: dict[str, str] = {}
        while len(own) < len(targets) and time.perf_counter() - t0 < timeout_s:
            for name, position in targets.items():
                if name in own:
                    continue
                try:
                    hover = await asyncio.wait_for(client.text_document_hover_async(types.HoverParams(
                        text_document=types.TextDocumentIdentifier(uri=document.uri), position=position)),
                        max(1.0, timeout_s - (time.perf_counter() - t0)))
                except asyncio.TimeoutError:
                    notes[name] = "the hover did not answer in time"
                    continue
                markdown = hover.contents.value if hover is not None else None
                state, note = hover_state(markdown)
                notes[name] = note
                if state == "row":
                    found.setdefault(name, round(time.perf_counter() - t0, 2))
                    if "row is being made" not in markdown:
                        own[name] = round(time.perf_counter() - t0, 2)
                elif state == "failed":
                    found[name] = own[name] = None
            await asyncio.sleep(0.05)
        results.append({"line": line, "chars": len(text), "lines": text.count("\n") + 1,
                        "placed": _placed(accepted), "accept_error": accepted.get("error") if isinstance(accepted, dict) else None,
                        "accept_command_s": command_s,
                        **{f"{name}_s": found.get(name) for name in targets},
                        **{f"{name}_own_s": own.get(name) for name in targets},
                        "unresolved": {name: notes.get(name, "") for name in targets if found.get(name) is None}})
    return results


def hover_state(markdown: str | None) -> tuple[str, str]:
    """`row` when the hover carries the token's attribution, `pending` while it computes,
    `failed` when it never will; with the hover's own words for the last two."""
    if markdown is None:
        return "pending", "no hover"
    if "█" in markdown or "copied from" in markdown or "no line of the context stood out" in markdown:
        return "row", ""
    last = markdown.strip().splitlines()[-1].strip("_ ") if markdown.strip() else ""
    if "computing" in markdown or "waits for the model" in markdown:
        return "pending", last
    if "attribution failed" in markdown or "attribution is off" in markdown or "not available" in markdown:
        return "failed", last
    return "pending", last


async def wait_idle(call: Any, timeout_s: float) -> bool:
    """Until the server reports no activity, no pending or prefetched rows and no warm-up
    waiting; False when `timeout_s` passed first."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        status = await call("whence/status", {})
        stats = status.get("stats", {})
        if not status.get("activity") and not stats.get("attributionPending") and not stats.get("attributionPrefetch") \
                and not stats.get("warmUpsPending"):
            return True
        await asyncio.sleep(0.05)
    return False


def summary(samples: list[dict]) -> dict[str, Any]:
    """Latency p50/p95/max (every ask), lengths p50/max (answers with text)."""
    latency = [s["ms"] for s in samples]
    offered = [s for s in samples if s["chars"]]
    return {
        "n": len(samples), "empty": len(samples) - len(offered), "timed_out": sum(bool(s.get("timed_out")) for s in samples),
        "ms": {"p50": _r(percentile(latency, 0.5)), "p95": _r(percentile(latency, 0.95)),
               "max": _r(max(latency, default=float("nan")))},
        "chars": {"p50": percentile([s["chars"] for s in offered], 0.5), "max": max((s["chars"] for s in offered), default=None)},
        "lines": {"p50": percentile([s["lines"] for s in offered], 0.5), "max": max((s["lines"] for s in offered), default=None)},
        "multiline_share": round(sum(s["lines"] > 1 for s in offered) / len(offered), 2) if offered else None,
    }


def row_summary(accepts: list[dict], name: str) -> dict[str, Any]:
    values = [a.get(f"{name}_s") for a in accepts if f"{name}_s" in a]
    got = [v for v in values if v is not None]
    return {"n": len(values), "missing": len(values) - len(got), "p50": percentile(got, 0.5) if got else None,
            "max": max(got) if got else None}


def answer_fields(samples: list[dict]) -> list[str]:
    """The keys the server's items carried (the raw answer, beyond what lsprotocol knows)."""
    keys: set[str] = set()
    for sample in samples:
        answer = sample.get("answer")
        if isinstance(answer, dict):
            keys.update(k for k in answer if k != "items")
        for item in _items(answer):
            keys.update(f"item.{k}" for k in item)
    return sorted(keys)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, int(round(share * (len(ordered) - 1)))))
    return ordered[index]


def _is_code(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith(("#", '"', "'", "@"))


def _items(answer: Any) -> list[dict]:
    items = answer.get("items", []) if isinstance(answer, dict) else answer if isinstance(answer, list) else []
    return [i for i in items if isinstance(i, dict)]


def _first_item(sample: dict) -> dict:
    items = _items(sample.get("answer"))
    return items[0] if items else {}


def _insert_text(item: Any) -> str:
    if not isinstance(item, dict):
        return ""
    text = item.get("insertText", "")
    return text.get("value", "") if isinstance(text, dict) else text if isinstance(text, str) else ""


def _token_offsets(text: str) -> dict[str, int]:
    """Offsets in `text` of a first and a middle token: the first non-blank character, and the
    non-blank character nearest after (else before) the middle of the text."""
    filled = [i for i, c in enumerate(text) if not c.isspace()]
    if not filled:
        return {}
    middle = next((i for i in filled if i >= len(text) // 2), filled[-1])
    return {"first": filled[0], "middle": middle} if middle != filled[0] else {"first": filled[0]}


def _position(line: int, character: int, text: str, offset: int) -> types.Position:
    before = text[:offset]
    breaks = before.count("\n")
    if not breaks:
        return types.Position(line, character + offset)
    return types.Position(line + breaks, offset - before.rfind("\n") - 1)


def _placed(accepted: Any) -> Any:
    return getattr(accepted, "placed", accepted.get("placed") if isinstance(accepted, dict) else None)


def _say(message: str) -> None:
    print(f"bench lsp: {message}", file=sys.stderr, flush=True)


def _r(value: float) -> float:
    return round(value, 1)
