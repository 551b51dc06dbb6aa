"""Run the shards of a build as Ray tasks (local Ray, or the cluster RAY_ADDRESS names).

Each task reads its files from the shared file system and returns its piece; the driver merges
the pieces exactly as the local engine does. Workers keep one embedding model per process.
"""

from __future__ import annotations

import os

from whence_ls.errors import WhenceError
from whence_ls.trace.shard import ShardInput, ShardResult, build_shard


def run_shards_on_ray(shards: list[ShardInput], report, workers: int | None) -> list[ShardResult]:
    try:
        import ray
    except ImportError as exc:
        raise WhenceError("the ray engine needs Ray: pip install 'whence-ls[ray]'") from exc
    started_here = False
    if not ray.is_initialized():
        options = {"include_dashboard": False, "log_to_driver": False,
                   "configure_logging": False}
        if not os.environ.get("RAY_ADDRESS"):
            options["num_cpus"] = workers or os.cpu_count() or 1
        ray.init(**options)
        started_here = True
    try:
        remote_build = ray.remote(num_cpus=1)(build_shard)
        pending = {remote_build.remote(shard): i for i, shard in enumerate(shards)}
        results: list[ShardResult | None] = [None] * len(shards)
        total = sum(len(s.paths) for s in shards)
        done = 0
        waiting = list(pending)
        while waiting:
            finished, waiting = ray.wait(waiting, num_returns=1)
            for ref in finished:
                index = pending[ref]
                try:
                    results[index] = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    # a user-facing problem in a task stays a one-line message
                    if isinstance(exc.cause, WhenceError):
                        raise exc.cause from None
                    raise
                done += len(shards[index].paths)
                report("index", done, total)
        return results
    finally:
        if started_here:
            ray.shutdown()
