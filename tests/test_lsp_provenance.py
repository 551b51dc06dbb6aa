"""The provenance contract: an acceptance is answered only once its row is committed.

A log that is not a log (random bytes, truncated, a directory, a foreign schema) is moved aside
and a new one takes the row; a log locked by another writer is retried for a bounded time and
then answered with an error; a server killed (-9) right after answering never loses the row.
The server runs over real stdio (raw_rpc.py) on the tiny model.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time

import pytest

from raw_rpc import RawServer
from test_lsp_support import PY_SOURCE
from whence_ls.provenance import COLUMNS, ProvenanceError, ProvenanceLog, read_rows


def row(record_id: str) -> dict:
    return {"id": record_id, "accepted_at": time.time(), "uri": "file:///x.py", "start_line": 1, "language": "python",
            "model": "m", "device": "cpu", "text": "x = 1", "tokens": 3, "mean_prob": 0.5, "min_prob": 0.1,
            "low_confidence": [], "kind": "completion"}


def write_valid_log(path, rows: int) -> None:
    log = ProvenanceLog(path)
    for i in range(rows):
        log.record(row(f"old-{i}"))
    log.close()


BROKEN_LOGS = {
    "random bytes": lambda path: path.write_bytes(os.urandom(8192)),
    "truncated to half": lambda path: (write_valid_log(path, 200), path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])),
    "a directory": lambda path: path.mkdir(),
    "a foreign schema": lambda path: sqlite3.connect(path).executescript("CREATE TABLE accepted (who TEXT, what TEXT); INSERT INTO accepted VALUES ('a', 'b');"),
    "empty file": lambda path: path.write_bytes(b""),
}


@pytest.mark.parametrize("case", BROKEN_LOGS)
def test_a_broken_log_is_moved_aside_and_the_row_is_kept(tmp_path, case):
    path = tmp_path / ".whence" / "provenance.sqlite"
    path.parent.mkdir()
    BROKEN_LOGS[case](path)
    before = sorted(p.name for p in path.parent.iterdir())
    log = ProvenanceLog(path)
    log.record(row("new"))
    log.close()
    assert [r["id"] for r in read_rows(path)] == ["new"]
    if case != "empty file":  # an empty file is a valid empty SQLite database
        assert len(log.moved_aside) == 1 and log.moved_aside[0].exists()  # kept, never deleted
        assert log.moved_aside[0].name.startswith("provenance.sqlite.unreadable-")
        assert before[0] == "provenance.sqlite"


def test_a_locked_log_is_retried_then_answered_with_an_error(tmp_path):
    path = tmp_path / "provenance.sqlite"
    write_valid_log(path, 1)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)  # released from a timer thread
    holder.execute("BEGIN EXCLUSIVE")
    log = ProvenanceLog(path)
    started = time.monotonic()
    with pytest.raises(ProvenanceError, match="locked"):
        log.record(row("blocked"))
    waited = time.monotonic() - started
    assert 1.0 < waited < 10.0  # bounded, and not given up at once
    # a lock released while the write waits: the row goes in
    release = threading.Timer(0.5, holder.rollback)  # the holder still has its transaction
    release.start()
    log.record(row("after"))
    release.join()
    holder.close()
    log.close()
    assert sorted(r["id"] for r in read_rows(path)) == ["after", "old-0"]


# -- over the server ------------------------------------------------------------------------------


def start_server(tmp_path, model_dir) -> RawServer:
    raw = RawServer(tmp_path)
    raw.uri = (tmp_path / "main.py").as_uri()
    assert "result" in raw.initialize(tmp_path, {"model": str(model_dir), "device": "cpu", "maxNewTokens": 4})
    assert raw.wait_ready()["state"] == "ready"
    raw.notify("textDocument/didOpen", {"textDocument": {"uri": raw.uri, "languageId": "python", "version": 1, "text": PY_SOURCE}})
    raw.text = PY_SOURCE  # the document as the server has it
    return raw


def accept_one(raw: RawServer, version: int) -> tuple[dict, str]:
    """Ask for a completion at the end of line 10 (as the document is now: a completion accepted
    before may have made it longer; the code after a cursor ends a completion that repeats it),
    insert it as an editor does, accept it."""
    lines = raw.text.split("\n")
    line, character = 10, len(lines[10])
    answer = raw.call("textDocument/inlineCompletion", {"textDocument": {"uri": raw.uri}, "position": {"line": line, "character": character},
                                                        "context": {"triggerKind": 1}})
    item = answer["result"]["items"][0]
    raw.notify("textDocument/didChange", {"textDocument": {"uri": raw.uri, "version": version}, "contentChanges": [
        {"range": {"start": {"line": line, "character": character}, "end": {"line": line, "character": character}}, "text": item["insertText"]}]})
    lines[10] += item["insertText"]
    raw.text = "\n".join(lines)
    completion_id = item["command"]["arguments"][0]
    return raw.call("workspace/executeCommand", {"command": item["command"]["command"], "arguments": item["command"]["arguments"]}), completion_id


def test_server_moves_a_corrupt_log_aside_and_records_the_acceptance(tiny_model_dir, tmp_path):
    path = tmp_path / ".whence" / "provenance.sqlite"
    path.parent.mkdir()
    path.write_bytes(os.urandom(4096))
    raw = start_server(tmp_path, tiny_model_dir)
    try:
        answer, completion_id = accept_one(raw, 2)
        assert answer["result"]["recordId"] == completion_id
        assert [r["id"] for r in read_rows(path)] == [completion_id]
        assert [p.name for p in path.parent.iterdir() if ".unreadable-" in p.name]
    finally:
        raw.close()


def test_server_answers_an_error_when_the_log_stays_locked(tiny_model_dir, tmp_path):
    path = tmp_path / ".whence" / "provenance.sqlite"
    path.parent.mkdir()
    write_valid_log(path, 1)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    raw = start_server(tmp_path, tiny_model_dir)
    try:
        answer, _ = accept_one(raw, 2)
        assert answer["error"]["code"] == -32803 and "not recorded" in answer["error"]["message"]
        holder.rollback()
        answer, completion_id = accept_one(raw, 3)  # the lock is gone: recorded again
        assert answer["result"]["recordId"] == completion_id
        assert completion_id in {r["id"] for r in read_rows(path)}
    finally:
        holder.close()
        raw.close()


def test_kill_9_right_after_the_answer_never_loses_the_row(tiny_model_dir, tmp_path):
    acknowledged = []
    for attempt in range(3):
        raw = start_server(tmp_path, tiny_model_dir)
        answer, _ = accept_one(raw, 2)
        os.kill(raw.process.pid, signal.SIGKILL)  # no shutdown, no close: the row must be on disk already
        raw.process.wait(10)
        acknowledged.append(answer["result"]["recordId"])
    stored = {r["id"] for r in read_rows(tmp_path / ".whence" / "provenance.sqlite")}
    assert set(acknowledged) <= stored
    assert len(set(acknowledged)) == 3


def test_accept_before_the_insertion_never_pins_the_users_own_identical_text(tiny_model_dir, tmp_path):
    """The contract lets a client run the accept command before it inserts the text. The
    record must then wait for the insertion, not land on identical code that was already in
    the document (here: right after the cursor, where the prompt does not see it)."""
    raw = start_server(tmp_path, tiny_model_dir)
    try:
        line, character = 10, len(PY_SOURCE.split("\n")[10])
        at_cursor = {"line": line, "character": character}
        first = raw.call("textDocument/inlineCompletion", {"textDocument": {"uri": raw.uri}, "position": at_cursor, "context": {"triggerKind": 1}})
        text = first["result"]["items"][0]["insertText"]
        # a second document: the same prefix, and the user's own copy of the text after the cursor
        lines = PY_SOURCE.split("\n")
        own = "\n".join(lines[: line + 1]) + "\n" + text + "\n" + "\n".join(lines[line + 1:])
        uri = (tmp_path / "own.py").as_uri()
        raw.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": own}})
        offer = raw.call("textDocument/inlineCompletion", {"textDocument": {"uri": uri}, "position": at_cursor, "context": {"triggerKind": 1}})
        item = offer["result"]["items"][0]
        assert item["insertText"] == text
        accepted = raw.call("workspace/executeCommand", {"command": item["command"]["command"], "arguments": item["command"]["arguments"]})
        assert accepted["result"]["placed"] is False  # the text has not arrived: nothing pinned
        own_copy = {"line": line + 1, "character": 0}
        assert raw.call("whence/tokenAttribution", {"textDocument": {"uri": uri}, "position": own_copy})["result"] is None
        raw.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2}, "contentChanges": [
            {"range": {"start": at_cursor, "end": at_cursor}, "text": text}]})
        placed = raw.call("whence/tokenAttribution", {"textDocument": {"uri": uri}, "position": at_cursor})["result"]
        assert placed is not None and placed["token"]["range"]["start"] == at_cursor
        assert raw.call("whence/tokenAttribution", {"textDocument": {"uri": uri}, "position": own_copy})["result"] is None
    finally:
        raw.close()
