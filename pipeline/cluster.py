"""The Ray connection every stage shares: a local cluster by default, `ray.address` / RAY_ADDRESS otherwise."""
from __future__ import annotations

import ray

from pipeline import console


def ensure_ray(address: str | None) -> None:
    if not ray.is_initialized():
        ray.init(address=address, **console.ray_init_options())
    data_context = ray.data.DataContext.get_current()
    data_context.execution_options.preserve_order = True
    data_context.enable_progress_bars = False
    data_context.print_on_execution_start = console.verbose()
    console.quiet_loggers()
