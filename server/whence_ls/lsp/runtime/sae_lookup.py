"""A token's strongest sparse-autoencoder features (the hover's "what the model saw" line and
the `whence/feature` page), computed on the model worker and kept.

Their forward yields to completions (it is cancelled between layers when one arrives), and it
goes on while the asker stops waiting: a later hover finds them. Nobody waits twice for the
same token's features.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable, Callable

from whence_ls.lsp.runtime.worker import EXTRAS

KEPT = 512  # tokens whose features are kept, the oldest dropped first


class SaeLookup:
    def __init__(self, run_model: Callable[..., Awaitable[Any]], spawn: Callable[[Any], asyncio.Task]) -> None:
        self._run_model = run_model
        self._spawn = spawn
        self.available = False  # sparse autoencoders trained for the loaded model
        self._found: dict[tuple[str, int], list] = {}  # (record id, token) -> its features
        self._tasks: dict[tuple[str, int], asyncio.Task] = {}

    async def features_of(self, record: Any, index: int) -> list | None:
        """The features of `record`'s token `index`, or None when the model has no SAEs or the
        model was busy elsewhere."""
        key = (record.id, index)
        if key in self._found or not self.available:
            return self._found.get(key)
        task = self._tasks.get(key)
        if task is None:
            task = self._tasks[key] = self._spawn(self._compute(record, index))
            task.add_done_callback(lambda _t: self._tasks.pop(key, None))
        return await asyncio.shield(task)

    async def _compute(self, record: Any, index: int) -> list | None:
        def work(lm: Any, cancel: threading.Event):
            from whence_ls.engine.attribution.units import unit_map
            from whence_ls.engine.sae import load_for
            from whence_ls.engine.sae.features import token_features

            sae_set, feature_index = load_for(lm)
            if sae_set is None:
                return []
            return token_features(lm, sae_set, feature_index, record.scored, index, unit_map(record.scored),
                                  cancel=cancel)

        found = await self._run_model(work, priority=EXTRAS, preemptible=True)
        if found is not None:
            self._found[(record.id, index)] = found
            while len(self._found) > KEPT:
                self._found.pop(next(iter(self._found)))
        return found
