"""The server's stdio loop: frames in (`wire`), the gate (`rpc_gate`), then pygls.

It replaces pygls' `start_io` loop, which drops what it cannot parse without an answer and
stops answering after a framing error. Every request that reaches this loop is answered exactly
once: by pygls (a result, or the error its handler raised), or here with the error the gate or
the parser names.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
from typing import Any, BinaryIO

from whence_ls.lsp.protocol.rpc_gate import INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR, RequestGate, readable_id
from whence_ls.lsp.protocol.wire import DEFAULT_MAX_BODY_BYTES, FrameReader, parse_body

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 64 * 1024
# the envelope fields JSON-RPC defines; pygls' message classes take no others
_ENVELOPE = ("jsonrpc", "id", "method", "params", "result", "error")


class LockedWriter:
    """stdout for pygls and for this loop: responses are written from the event loop and from
    worker threads, and two frames must never interleave."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            self._stream.write(data)
            self._stream.flush()

    def close(self) -> None:
        self._stream.close()


def error_frame(msg_id: Any, code: int, message: str) -> bytes:
    body = json.dumps({"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}}).encode("utf-8")
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


class _QuietStructuring(logging.Filter):
    """pygls logs every message it cannot structure with cattrs' whole exception group (pages
    for one missing field); the loop logs one line per such message instead (`dispatch`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Unable to deserialize message")


_QUIET_STRUCTURING = _QuietStructuring()


def _is_validation_error(exc: BaseException) -> bool:
    from cattrs.errors import BaseValidationError

    return isinstance(exc.__cause__ or exc, BaseValidationError)


def _validation_reason(exc: BaseException) -> str:
    """The first place a value did not fit its LSP type, from cattrs' error tree."""
    cause = exc.__cause__ or exc
    try:
        from cattrs import transform_error

        reasons = transform_error(cause)
        if reasons:
            return reasons[0]
    except Exception:  # not a cattrs validation error
        pass
    return str(cause) or type(cause).__name__


class MessageLoop:
    def __init__(self, protocol: Any, writer: LockedWriter, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.protocol = protocol
        self.writer = writer
        self.gate = RequestGate()
        self.max_body_bytes = max_body_bytes
        pygls_log = logging.getLogger("pygls.protocol.json_rpc")
        if _QUIET_STRUCTURING not in pygls_log.filters:
            pygls_log.addFilter(_QUIET_STRUCTURING)

    def answer_error(self, msg_id: Any, code: int, message: str) -> None:
        log.warning("answered %s to request %r: %s", code, msg_id, message)
        self.writer.write(error_frame(msg_id, code, message))

    async def run(self, stdin: BinaryIO, stop_event: threading.Event, executor: Any = None) -> None:
        loop = asyncio.get_running_loop()
        read1 = getattr(stdin, "read1", None) or stdin.read

        def read_chunk():
            return loop.run_in_executor(executor, read1, READ_CHUNK_BYTES)

        reader = FrameReader(read_chunk, self.max_body_bytes)
        while not stop_event.is_set():
            frame = await reader.next_frame()
            if frame is None:
                break
            if reader.skipped_bytes:
                log.warning("skipped %d bytes that were not a frame", reader.skipped_bytes)
                reader.skipped_bytes = 0
            if frame.problem is not None:
                self.answer_error(None, PARSE_ERROR, frame.problem)
                continue
            parsed = parse_body(frame.body)
            if parsed.trailing:
                reader.push_back(parsed.trailing)
            if parsed.error is not None:
                value = parsed.value
                if isinstance(value, dict) and "method" in value and "id" not in value:
                    log.warning("dropped a notification: %s", parsed.error)  # never answered
                else:
                    self.answer_error(readable_id(value), PARSE_ERROR, parsed.error)
                continue
            self.dispatch(parsed.value)
            # let what the message started take its first step before the next one is read
            # from the buffer, as pygls' reader did (it read each message through a thread)
            await asyncio.sleep(0)

    def dispatch(self, value: Any) -> None:
        rejection = self.gate.check(value)
        if rejection is not None:
            if rejection.answer:
                self.answer_error(rejection.id, rejection.code, rejection.message)
            else:
                log.warning("dropped a notification: %s", rejection.message)
            return
        is_request = "method" in value and "id" in value
        envelope = {k: value[k] for k in _ENVELOPE if k in value}
        try:
            message = self.protocol.structure_message(envelope)
        except Exception as exc:
            reason = _validation_reason(exc)
            if not _is_validation_error(exc):  # a bug, not the client's input: keep the traceback
                log.error("could not structure %s", value.get("method", "a response"), exc_info=exc)
            if is_request:
                self.answer_error(value["id"], INVALID_PARAMS, f"params do not fit {value['method']}: {reason}")
            else:
                log.warning("dropped %s: %s", value.get("method", "a response"), reason)
            return
        self.gate.passed(value)
        try:
            self.protocol.handle_message(message)
        except Exception:  # pygls answers handler errors itself; this is a bug in the loop's use of it
            log.exception("could not hand %s to pygls", value.get("method"))
            if is_request:
                self.answer_error(value["id"], INVALID_REQUEST, "the request could not be handled")


def serve_stdio_loop(server: Any, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                     stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
    """pygls' `start_io`, with this loop in place of its reader."""
    stop_event = threading.Event()
    server._stop_event = stop_event  # pygls' `shutdown` (on exit) sets it
    writer = LockedWriter(stdout or sys.stdout.buffer)
    server.protocol.set_writer(writer)
    loop = MessageLoop(server.protocol, writer, max_body_bytes)
    try:
        asyncio.run(loop.run(stdin or sys.stdin.buffer, stop_event, server.thread_pool))
    except BrokenPipeError:
        log.error("the client closed the connection")
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.shutdown()
