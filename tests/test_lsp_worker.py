"""The model worker thread survives requests that are cancelled while they wait in its queue."""

from __future__ import annotations

import asyncio
import threading

from whence_ls.lsp.runtime.worker import ModelWorker


async def test_a_request_cancelled_while_queued_does_not_kill_the_worker():
    worker = ModelWorker()
    worker.lm = object()  # any model object: these jobs never touch it
    busy = threading.Event()
    release = threading.Event()

    def hold(_lm, _cancel):
        busy.set()
        release.wait(10)
        return "held"

    first = asyncio.ensure_future(worker.run(hold))
    await asyncio.to_thread(busy.wait, 10)
    # queued behind `hold`; the client cancels it, as VS Code does when the cursor moves
    queued = asyncio.ensure_future(worker.run(lambda _lm, _cancel: "never"))
    await asyncio.sleep(0.05)
    queued.cancel()
    await asyncio.sleep(0.05)
    release.set()
    assert await first == "held"
    # the worker must still serve the next request
    after = await asyncio.wait_for(worker.run(lambda _lm, _cancel: "served"), timeout=10)
    assert after == "served"
    worker.stop(timeout=5)


async def test_a_completion_arriving_mid_way_through_background_attribution_goes_first(tiny_lm, tmp_path, monkeypatch):
    """Background attribution held inside its forward (a hook in its first attention layer, not a
    sleep): a completion submitted then runs as soon as the held layer ends, and the background
    forward stops at the next layer instead of finishing its remaining layers first."""
    import copy

    from whence_ls.engine.attribution import attribute_rows
    from whence_ls.engine.attribution import calibration as calibration_module
    from whence_ls.engine.attribution.calibration import Calibration, fingerprint, save_calibration
    from whence_ls.engine.explain import explain_line
    from whence_ls.engine.generation import complete_at

    monkeypatch.setenv("WHENCE_HOME", str(tmp_path))
    monkeypatch.setattr(calibration_module, "SHIPPED_DIR", tmp_path / "shipped")
    tiny_lm.__dict__.pop("_whence_calibration", None)
    save_calibration(tiny_lm, Calibration(model=tiny_lm.name, fingerprint=fingerprint(tiny_lm), layers=2, heads=4, weights=[0.1] * 8))
    source = "def scale(points, factor):\n    result = []\n    for x, y in points:\n        result.append(x * factor)\n    return result\n"
    record = explain_line(tiny_lm, source, 4, "python")
    # the once-per-model check of the estimator's forward runs forwards of its own: done before
    # the hold, so the hold catches the background job's forward (the order of tests no longer matters)
    from whence_ls.engine.attribution.attention_probe import _rows_recomputable

    _rows_recomputable(tiny_lm)
    inside, release = threading.Event(), threading.Event()
    layers_entered: list[int] = []
    attention = [m for m in tiny_lm.model.modules() if m.__class__.__name__.endswith("Attention")]

    def hold(module, _inputs):
        layers_entered.append(attention.index(module))
        if len(layers_entered) == 1:
            inside.set()
            release.wait(30)

    hooks = [m.register_forward_pre_hook(hold) for m in attention]
    order: list[str] = []
    seen_by_background: list[int] = []
    background_rows: dict = {}
    handed_out = []

    def background(lm, cancel):
        probe = copy.copy(record)
        probe.attribution = {}
        background_rows.update(attribute_rows(lm, probe, list(range(len(probe.tokens))), "calibrated_attention", cancel, language="python"))
        order.append("background")

    def idle_source():
        if handed_out:
            return None
        handed_out.append(1)
        return background

    worker = ModelWorker(idle_source=idle_source)
    worker.lm = tiny_lm
    try:
        worker.wake()
        assert await asyncio.to_thread(inside.wait, 30), "the background forward never started"

        def completion(lm, cancel):
            order.append("completion")
            seen_by_background.extend(layers_entered)
            return complete_at(lm, source, len(source), language="python", max_new_tokens=2)

        submitted = asyncio.ensure_future(worker.run(completion, completion=True))
        await asyncio.sleep(0)  # the submission sets the background job's cancel flag
        assert worker.background_cancel.is_set()
        release.set()
        result = await asyncio.wait_for(submitted, timeout=60)
        assert result.kind == "completion"
        assert order == ["background", "completion"]
        # the held forward stopped at the next layer: it never entered layer 2 of 2, and no row
        # was produced (the queue requeues them)
        assert background_rows == {} and seen_by_background == [0]
    finally:
        release.set()
        for hook in hooks:
            hook.remove()
        worker.stop(timeout=5)
        tiny_lm.__dict__.pop("_whence_calibration", None)
