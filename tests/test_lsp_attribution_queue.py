"""The background attribution queue hands the worker batches sized to the method's cost."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from whence_ls.lsp.attribution_queue import BATCH_TOKENS, AttributionQueue


def test_a_one_forward_method_takes_all_rows_of_a_record_and_gradients_a_few():
    loop = asyncio.new_event_loop()
    try:
        queue = AttributionQueue(loop, lambda: "value_norm", lambda record, units: units)
        record = SimpleNamespace(id="r1", units=None, scored=SimpleNamespace(attribution={}))  # no row computed yet
        queue._records["r1"] = record
        queue._pending["r1"] = [4, 1, 3, 0, 2]
        queue._urgent.append(("r1", 3))
        assert queue._pick(None) == (record, [3, 4, 1, 0, 2])  # the hovered row first, then the rest
        assert queue._pick(None) == (None, [])
        queue._pending["r1"] = [4, 1, 3, 0, 2]
        queue._urgent.append(("r1", 0))
        assert queue._pick(BATCH_TOKENS) == (record, [0])  # a gradient method: the hovered row alone
        assert queue._pick(BATCH_TOKENS) == (record, [4, 1, 3, 2][:BATCH_TOKENS])
    finally:
        loop.close()
