"""The Ray connection every stage shares: a local cluster by default, `ray.address` / RAY_ADDRESS otherwise."""
from __future__ import annotations

import ray


def ensure_ray(address: str | None) -> None:
    if not ray.is_initialized():
        ray.init(address=address, logging_config=ray.LoggingConfig(log_level="WARNING"))
    data_context = ray.data.DataContext.get_current()
    data_context.execution_options.preserve_order = True
    data_context.enable_progress_bars = False
