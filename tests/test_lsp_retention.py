"""Retention of accepted completions: which characters and tokens are still as written at each
checkpoint, committed before the client hears of it (a kill -9 after the `whence/retention`
notification loses nothing); the export's `kept_share` and per-token `kept`; `provenance stats`.

Simulated sessions run through the real server over stdio (raw_rpc.py) on the tiny model:
accept, then edit as a person does, then read what the log and the CLI say.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from raw_rpc import RawServer
from test_lsp_support import PY_SOURCE
from whence_ls.lsp.text.documents import Edit
from whence_ls.provenance import read_rows
from whence_ls.lsp.state.retention import Followed


def followed(text_tokens: list[str], start: int = 10) -> Followed:
    ends, end = [], 0
    for token in text_tokens:
        end += len(token)
        ends.append(end)
    return Followed("r", "file:///x.py", 0.0, [start + k for k in range(end)], ends)


def test_characters_follow_edits_and_tokens_are_kept_only_untouched():
    f = followed(["foo", "(", "bar", ")"])  # "foo(bar)" at 10..18
    f.apply(Edit(0, 0, 5))  # typed before it: everything shifts, all kept
    assert f.state() == (8, 8, [True, True, True, True])
    f.apply(Edit(19, 22, 3))  # "bar" (now at 19..22) retyped: its characters are not as written
    assert f.state() == (5, 8, [True, True, False, True])
    f.apply(Edit(16, 16, 1))  # a character typed inside "foo" (at 15..18): its letters stay, the token does not
    assert f.state() == (5, 8, [False, True, False, True])
    f.apply(Edit(0, 100, 0))  # the whole text deleted
    assert f.state() == (0, 8, [False, False, False, False]) and f.gone()


def test_an_insertion_at_a_token_boundary_keeps_both_tokens():
    f = followed(["foo", "(", "bar"])
    f.apply(Edit(13, 13, 2))  # typed between "foo" and "(": neither token was touched
    assert f.state() == (7, 7, [True, True, True])


# -- over the server ------------------------------------------------------------------------------


def start_server(tmp_path, model_dir, **options) -> RawServer:
    raw = RawServer(tmp_path)
    raw.uri = (tmp_path / "main.py").as_uri()
    init = {"model": str(model_dir), "device": "cpu", "maxNewTokens": 6, **options}
    assert "result" in raw.initialize(tmp_path, init)
    assert raw.wait_ready()["state"] == "ready"
    raw.notify("textDocument/didOpen", {"textDocument": {"uri": raw.uri, "languageId": "python", "version": 1, "text": PY_SOURCE}})
    raw.text = PY_SOURCE
    raw.version = 1
    return raw


def accept_at(raw: RawServer, line: int, character: int | None = None) -> tuple[str, str, int, int]:
    """Ask for a completion at `line` (its end by default), insert it as an editor does, show and
    accept it; (record id, text, line, column where it begins)."""
    lines = raw.text.split("\n")
    character = len(lines[line]) if character is None else character
    answer = raw.call("textDocument/inlineCompletion", {"textDocument": {"uri": raw.uri}, "position": {"line": line, "character": character},
                                                        "context": {"triggerKind": 1}})
    items = answer["result"]["items"]
    assert items, "the tiny model offered nothing"
    item = items[0]
    completion_id = item["command"]["arguments"][0]
    raw.notify("whence/completionShown", {"completionId": completion_id})
    edit(raw, line, character, line, character, item["insertText"])
    accepted = raw.call("workspace/executeCommand", {"command": item["command"]["command"], "arguments": [completion_id]})
    assert accepted["result"]["placed"] is True, accepted
    return completion_id, item["insertText"], line, character


def edit(raw: RawServer, line: int, character: int, end_line: int, end_character: int, text: str) -> None:
    raw.version += 1
    raw.notify("textDocument/didChange", {"textDocument": {"uri": raw.uri, "version": raw.version}, "contentChanges": [
        {"range": {"start": {"line": line, "character": character}, "end": {"line": end_line, "character": end_character}}, "text": text}]})
    lines = raw.text.split("\n")
    before = "\n".join(lines[:line]) + ("\n" if line else "") + lines[line][:character]
    after = lines[end_line][end_character:] + ("\n" if end_line < len(lines) - 1 else "") + "\n".join(lines[end_line + 1:])
    raw.text = before + text + after


def wait_retention(raw: RawServer, record_id: str, checkpoint: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in list(raw.notifications):
            params = message.get("params") or {}
            if message["method"] == "whence/retention" and params.get("recordId") == record_id and params.get("checkpoint") == checkpoint:
                return params
        time.sleep(0.05)
    raise AssertionError(f"no {checkpoint} checkpoint for {record_id}; got {[m['params'] for m in raw.notifications if m['method'] == 'whence/retention']}")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "whence_ls", *args], capture_output=True, text=True, timeout=120)


def test_timed_checkpoints_see_the_edits_and_survive_kill_9(tiny_model_dir, tmp_path):
    raw = start_server(tmp_path, tiny_model_dir, retentionCheckpointsS=[1.5, 60])
    record_id, text, line, column = accept_at(raw, 10)
    total = len(text)
    last_line = line + text.count("\n")
    end_column = (column if "\n" not in text else 0) + len(text.split("\n")[-1])
    cut = min(2, len(text.split("\n")[-1]))  # the person rewrites the completion's last characters
    edit(raw, last_line, end_column - cut, last_line, end_column, "Z" * cut)
    mark = wait_retention(raw, record_id, "1.5s")
    os.kill(raw.process.pid, signal.SIGKILL)  # acknowledged: it must be on disk already
    raw.process.wait(10)
    assert mark["totalChars"] == total and mark["keptChars"] == total - cut
    assert mark["keptTokens"][-1] == (0 if cut else 1)
    rows = {r["id"]: r for r in read_rows(tmp_path / ".whence" / "provenance.sqlite")}
    row = rows[record_id]
    assert row["checkpoints"]["1.5s"]["kept_share"] == pytest.approx((total - cut) / total)
    assert row["kept_share"] == pytest.approx((total - cut) / total, abs=1e-4)
    assert [t["kept"] for t in row["kept_tokens"]] == [bool(k) for k in mark["keptTokens"]]
    assert "".join(t["text"] for t in row["kept_tokens"]) == text
    assert "60s" not in row["checkpoints"]  # not due yet when the server died


def test_save_and_close_checkpoints_export_and_stats(tiny_model_dir, tmp_path):
    raw = start_server(tmp_path, tiny_model_dir, retentionCheckpointsS=[3600])
    try:
        first, text1, line1, column1 = accept_at(raw, 10)
        second, text2, line2, column2 = accept_at(raw, 4)
        # the first completion is deleted as a whole; the second is kept as written
        first_line = line1 + (1 if line2 < line1 else 0) * (text2.count("\n"))
        end_line = first_line + text1.count("\n")
        end_column = (column1 if "\n" not in text1 else 0) + len(text1.split("\n")[-1])
        edit(raw, first_line, column1, end_line, end_column, "")
        raw.notify("textDocument/didSave", {"textDocument": {"uri": raw.uri}})
        saved1, saved2 = wait_retention(raw, first, "save"), wait_retention(raw, second, "save")
        assert saved1["keptChars"] == 0 and saved2["keptChars"] == saved2["totalChars"] == len(text2)
        report = raw.call("whence/retentionReport", {})["result"]  # the view's data and plots
        assert report["summary"]["acceptance"]["acceptedOfShown"] == 2
        assert report["summary"]["mostRewritten"][0]["id"] == first and report["summary"]["mostRewritten"][0]["keptShare"] == 0.0
        plotted_tokens = any(c["tokens"] for c in report["summary"]["reliability"])  # readable kept tokens
        assert report["body"].count("<svg") == 2 + plotted_tokens and "2 of 2 shown completions accepted (100%)" in report["body"]
        assert f'data-line="{first_line}"' in report["body"] and report["page"].startswith("<!DOCTYPE html>")
        raw.notify("textDocument/didClose", {"textDocument": {"uri": raw.uri}})
        closed = wait_retention(raw, second, "close")
        assert closed["keptShare"] == 1.0
    finally:
        raw.close()
    exported = cli("provenance", "export", "--workspace", str(tmp_path))
    assert exported.returncode == 0, exported.stderr
    rows = {r["id"]: r for r in json.loads(exported.stdout)["accepted"]}
    assert rows[first]["kept_share"] == 0.0 and all(t["kept"] is False for t in rows[first]["kept_tokens"])
    assert rows[second]["kept_share"] == 1.0 and all(t["kept"] for t in rows[second]["kept_tokens"])
    csv_out = cli("provenance", "export", "--workspace", str(tmp_path), "--format", "csv")
    assert "kept_share" in csv_out.stdout.splitlines()[0]
    stats = cli("provenance", "stats", "--workspace", str(tmp_path), "--format", "json")
    assert stats.returncode == 0, stats.stderr
    summary = json.loads(stats.stdout)
    assert summary["acceptance"] == {"shown": 2, "accepted": 2, "acceptedOfShown": 2, "rate": 1.0}
    by_name = {r["checkpoint"]: r for r in summary["retention"]}
    assert by_name["save"]["meanKeptShare"] == pytest.approx(0.5) and by_name["close"]["completions"] == 2
    # the deleted completion says nothing of its tokens; the kept one's readable tokens were all kept
    assert summary["flagged"]["edited"] + summary["unflagged"]["edited"] == 0
    text_stats = cli("provenance", "stats", "--workspace", str(tmp_path))
    assert "2 of 2 shown completions accepted (100%)" in text_stats.stdout and "at save: 50% kept" in text_stats.stdout


def test_stats_on_a_log_from_before_retention_and_on_a_missing_log(tmp_path):
    import sqlite3

    from whence_ls.provenance import COLUMNS, SCHEMA

    path = tmp_path / ".whence" / "provenance.sqlite"
    path.parent.mkdir()
    db = sqlite3.connect(path)
    db.execute(SCHEMA)  # the old log: only the accepted table
    db.execute(f"INSERT INTO accepted ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
               ["a", time.time(), "file:///x.py", 1, "python", "m", "cpu", "x = 1", 3, 0.5, 0.1, "[]", None, None, "completion"])
    db.commit()
    db.close()
    stats = cli("provenance", "stats", "--workspace", str(tmp_path))
    assert stats.returncode == 0, stats.stderr
    assert "1 accepted" in stats.stdout and "no checkpoint yet" in stats.stdout
    missing = cli("provenance", "stats", "--workspace", str(tmp_path / "nowhere"))
    assert missing.returncode != 0 and "no provenance log" in missing.stderr


# -- flags learned from the workspace -------------------------------------------------------------


def test_the_calibration_learns_what_this_workspace_rewrites():
    """Numbers are always rewritten here whatever the model's doubt; names never: the fitted
    calibration ranks held-out numbers above names, which the global flag cannot."""
    import random

    from whence_ls.bench.quality import auroc
    from whence_ls.engine.flag_calibration import Example, TokenFacts, describe, fit

    rng = random.Random(3)

    def sample(n):
        out = []
        for _ in range(n):
            kind = rng.choice(["number", "name"])
            out.append(Example(TokenFacts(kind, rng.random(), rng.random() * 3, False), kind == "number"))
        return out

    calibration = fit(sample(80))
    held_out = sample(200)
    labels = [int(e.edited) for e in held_out]
    assert auroc([calibration.edit_chance(e.facts) for e in held_out], labels) > 0.95
    assert auroc([e.facts.flag for e in held_out], labels) < 0.7
    facts = TokenFacts("number", 0.3, 1.0, False)
    edited, seen, _ = calibration.like(facts)
    assert edited == seen > 0 and describe(calibration, facts) == f"tokens like this were rewritten {edited} times in {seen} here"
    # with no edits at all the calibration is the global flag's own ranking
    empty = fit([])
    assert empty.edit_chance(TokenFacts("name", 0.8, 0.0, False)) > empty.edit_chance(TokenFacts("name", 0.2, 0.0, False))


def write_history(path, completions: int) -> None:
    """Earlier completions of this workspace whose readable tokens were all rewritten (a space
    of each kept: a token-level verdict, not a deleted completion)."""
    from whence_ls.provenance import ProvenanceLog

    log = ProvenanceLog(path)
    kinds = ["name", "operator", "number", "keyword", "string"]
    for c in range(completions):
        record_id = f"old-{c}"
        tokens = [{"text": f"t{c}{k}", "kind": kinds[k % 5], "flag": (k + 1) / 7, "entropy": 1.0, "first": k == 0, "flagged": False}
                  for k in range(5)] + [{"text": " ", "kind": "operator", "flag": 0.0, "entropy": 0.0, "first": False, "flagged": False}]
        row = {"id": record_id, "accepted_at": time.time() - 3600, "uri": "file:///old.py", "start_line": c, "language": "python",
               "model": "m", "device": "cpu", "text": "".join(t["text"] for t in tokens), "tokens": 6, "mean_prob": 0.5,
               "min_prob": 0.1, "low_confidence": [], "kind": "completion"}
        log.record(row, tokens)
        log.checkpoint(record_id, "600s", time.time() - 3000, 1, 16, [False] * 5 + [True])
    log.close()


def diagnostics_of(raw: RawServer, timeout: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        published = [m["params"] for m in raw.notifications if m["method"] == "textDocument/publishDiagnostics"
                     and m["params"]["uri"] == raw.uri and m["params"]["diagnostics"]]
        if published:
            return published[-1]["diagnostics"]
        time.sleep(0.05)
    return []


@pytest.mark.parametrize("history, enabled, learned", [(12, True, True), (12, False, False), (4, True, False)])
def test_the_diagnostic_says_what_this_workspace_rewrote(tiny_model_dir, tmp_path, history, enabled, learned):
    """With enough rewritten tokens logged (12 completions x 5 = 60 >= MIN_EDITED_TOKENS) and the
    setting on, the flag is the workspace's and says so in counts; with the setting off, or too
    few edits (20), the global flag speaks (or stays quiet)."""
    from whence_ls.lsp.state.workspace_flags import MIN_EDITED_TOKENS

    assert history * 5 >= MIN_EDITED_TOKENS if learned else True
    path = tmp_path / ".whence" / "provenance.sqlite"
    path.parent.mkdir()
    write_history(path, history)
    raw = start_server(tmp_path, tiny_model_dir, workspaceFlags=enabled, diagnosticsShare=1.0)
    try:
        _, text, _, _ = accept_at(raw, 10, 20)  # the tiny model writes a word here (test_lsp.py)
        assert any(c.isalnum() for c in text), f"the test needs a completion with a word in it: {text!r}"
        messages = [d["message"] for d in diagnostics_of(raw, timeout=10 if not learned else 30)]
        here = [m for m in messages if "learned from this workspace's edits" in m]
        if learned:
            assert here and "rewritten" in here[0] and " here" in here[0], messages
        else:
            assert not here, messages
    finally:
        raw.close()


def test_retention_settings_are_checked():
    from whence_ls.lsp.runtime.settings import Settings

    settings, problems = Settings().merged({"retentionCheckpointsS": [5, 60], "workspaceFlags": True})
    assert problems == [] and settings.retention_checkpoints_s == (5.0, 60.0) and settings.workspace_flags is True
    assert settings.to_json()["retentionCheckpointsS"] == [5.0, 60.0]
    for bad in ([], [0], ["30"], [True], 30, [1] * 9):
        kept, problems = Settings().merged({"retentionCheckpointsS": bad})
        assert kept.retention_checkpoints_s == (30.0, 120.0, 600.0) and "retentionCheckpointsS" in problems[0]
    kept, problems = Settings().merged({"workspaceFlags": "yes"})
    assert kept.workspace_flags is False and problems


def test_a_log_from_before_retention_gets_its_tables_and_keeps_its_rows(tmp_path):
    import sqlite3

    from whence_ls.provenance import COLUMNS, SCHEMA, ProvenanceLog

    path = tmp_path / "provenance.sqlite"
    db = sqlite3.connect(path)
    db.execute(SCHEMA)
    db.execute(f"INSERT INTO accepted ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
               ["old", time.time(), "file:///x.py", 1, "python", "m", "cpu", "x = 1", 3, 0.5, 0.1, "[]", None, None, "completion"])
    db.commit()
    db.close()
    log = ProvenanceLog(path)
    log.checkpoint("old", "save", time.time(), 3, 5, [True, False, True])
    log.close()
    assert log.moved_aside == []
    (row,) = read_rows(path)
    assert row["id"] == "old" and row["kept_share"] == 0.6 and row["kept_tokens"] == []  # no token facts for an old row


def test_a_foreign_retention_table_is_moved_aside_like_any_broken_log(tmp_path):
    import sqlite3

    from whence_ls.provenance import ProvenanceLog

    path = tmp_path / "provenance.sqlite"
    sqlite3.connect(path).executescript("CREATE TABLE retention (who TEXT, what TEXT);")
    log = ProvenanceLog(path)
    log.checkpoint("r", "30s", time.time(), 1, 1, [True])
    log.close()
    assert len(log.moved_aside) == 1 and log.moved_aside[0].exists()
    assert read_rows(path) == []  # the new log holds the checkpoint, and no accepted rows


def test_a_checkpoint_that_cannot_be_written_is_never_announced(tiny_model_dir, tmp_path):
    import sqlite3

    raw = start_server(tmp_path, tiny_model_dir, retentionCheckpointsS=[3600])
    holder = None
    try:
        record_id, *_ = accept_at(raw, 10)
        holder = sqlite3.connect(tmp_path / ".whence" / "provenance.sqlite", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        raw.notify("textDocument/didSave", {"textDocument": {"uri": raw.uri}})
        time.sleep(8)  # past the log's bounded retries (3 x 1.5 s)
        assert not [m for m in raw.notifications if m["method"] == "whence/retention"]
        assert raw.call("whence/status", {})["result"]["state"] == "ready"  # still serving
        holder.rollback()
        raw.notify("textDocument/didSave", {"textDocument": {"uri": raw.uri}})
        assert wait_retention(raw, record_id, "save")["totalChars"] > 0  # the lock is gone: recorded and announced
    finally:
        if holder is not None:
            holder.close()
        raw.close()


def test_the_fit_never_diverges_on_extreme_scores():
    """Flag scores at 0.0001 and 0.9999 and cells rewritten every time (what real completions
    give) once sent a plain Newton fit to weights of -200, ranking tokens backwards (AUROC 0.38
    on `bench retention`'s tokens). The fit must at least keep the flag's own ranking."""
    import random

    from whence_ls.bench.quality import auroc
    from whence_ls.engine.flag_calibration import Example, TokenFacts, fit

    rng = random.Random(5)
    examples = []
    for _ in range(600):
        kind = rng.choice(["name", "operator", "number", "keyword", "string"])
        flag = rng.choice([0.0001, 0.9999, rng.random()])
        edited = kind == "string" or rng.random() < flag * (0.9 if kind == "name" else 0.4)
        examples.append(Example(TokenFacts(kind, flag, flag * 5 * rng.random(), rng.random() < 0.1), edited))
    calibration = fit(examples)
    labels = [int(e.edited) for e in examples]
    assert abs(calibration.weights).max() < 20
    assert auroc([calibration.edit_chance(e.facts) for e in examples], labels) >= auroc([e.facts.flag for e in examples], labels)
