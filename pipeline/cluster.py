"""The Ray connection every stage shares: a local cluster by default, `ray.address` / RAY_ADDRESS otherwise."""
from __future__ import annotations

import os

import ray

from pipeline import console


def ensure_ray(address: str | None) -> None:
    if not ray.is_initialized():
        console.route_ray_system_messages()
        ray.init(address=address, **console.ray_init_options())
        # Ray's own helpers that look a cluster up by address (e.g. Ray Train's placement-group cleaner) find
        # this one, not "several Ray instances" when another cluster runs on the same machine.
        os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    data_context = ray.data.DataContext.get_current()
    data_context.execution_options.preserve_order = True
    data_context.enable_progress_bars = False
    data_context.print_on_execution_start = console.verbose()
    console.quiet_loggers()
