"""Joining or starting Ray, the same way for every stage (Ray plumbing only).

RAY_ADDRESS (a cluster, or a job started with `ray job submit`) wins; otherwise a local
cluster starts on this machine, bound to loopback. Ray Data progress bars are off (raysys
prints its own progress) and Ray's own logs are kept at ERROR.
"""
from __future__ import annotations

import logging
import os


def ray_init(num_cpus: int | None = None) -> None:
    import ray

    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS") or "local"  # never a stale `ray start` cluster found on disk
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR,
                 num_cpus=num_cpus if address == "local" else None, configure_logging=True, log_to_driver=True)
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
