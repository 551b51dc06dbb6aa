"""The watched record's matrix rides on its rowsReady notifications, built at most once per
interval (`lsp/runtime/matrix_push.py`): a burst of rows shares one build, the last state always
goes out, and other records pay nothing."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from whence_ls.lsp.runtime.matrix_push import WatchedMatrix


def test_a_burst_of_rows_shares_one_build_and_the_last_state_still_goes_out():
    async def run():
        builds, sent = [], []
        record, other = SimpleNamespace(id="r"), SimpleNamespace(id="o")

        def build(rec):
            builds.append(rec.id)
            return {"recordId": rec.id, "build": len(builds)}

        def announce(rec):  # what rows_ready does: a notification naming no rows, through attach
            body = {"recordId": rec.id, "tokenIndexes": []}
            push.attach(rec, body)
            sent.append(body)

        push = WatchedMatrix(build, announce, interval=0.05)
        push.watch("r")
        for index in range(5):
            body = {"recordId": "r", "tokenIndexes": [index]}
            push.attach(record, body)
            sent.append(body)
        unwatched = {"recordId": "o", "tokenIndexes": [0]}
        push.attach(other, unwatched)
        assert unwatched == {"recordId": "o", "tokenIndexes": [0]}  # nothing built for it
        assert sent[0]["matrix"] == {"recordId": "r", "build": 1}
        assert all(body.get("matrixFollows") and "matrix" not in body for body in sent[1:])
        await asyncio.sleep(0.2)
        # one more notification, after the interval, with the matrix as it is then
        assert len(sent) == 6 and sent[5]["tokenIndexes"] == [] and sent[5]["matrix"] == {"recordId": "r", "build": 2}
        assert builds == ["r", "r"]
        # a row after a quiet interval carries its matrix at once
        body = {"recordId": "r", "tokenIndexes": [9]}
        push.attach(record, body)
        assert body["matrix"]["build"] == 3

    asyncio.run(run())


def test_without_a_loop_the_matrix_is_built_at_once():
    push = WatchedMatrix(lambda rec: {"recordId": rec.id}, lambda rec: None)
    push.watch("r")
    first, second = {}, {}
    push.attach(SimpleNamespace(id="r"), first)
    push.attach(SimpleNamespace(id="r"), second)
    assert first["matrix"] == second["matrix"] == {"recordId": "r"} and "matrixFollows" not in second


def test_unwatching_stops_the_builds_and_drops_a_pending_push():
    async def run():
        builds, sent = [], []
        record = SimpleNamespace(id="r")

        def announce(rec):
            body = {"recordId": rec.id, "tokenIndexes": []}
            push.attach(rec, body)
            sent.append(body)

        push = WatchedMatrix(lambda rec: builds.append(rec.id) or {"recordId": rec.id}, announce, interval=0.05)
        push.watch("r")
        first, second = {}, {}
        push.attach(record, first)
        push.attach(record, second)  # inside the interval: a push is scheduled
        assert "matrix" in first and second.get("matrixFollows")
        push.unwatch("other")  # another record's close changes nothing
        assert push.watched == "r"
        push.unwatch("r")
        await asyncio.sleep(0.15)
        assert sent == [] and builds == ["r"]  # the scheduled push was dropped
        later = {}
        push.attach(record, later)
        assert later == {} and builds == ["r"]

    asyncio.run(run())
