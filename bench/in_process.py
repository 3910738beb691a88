"""The one in-process training helper the benchmarks share: `cvae train` as a function call on a config built
from overrides, then the registered model fetched back and proportional rows drawn from it, timed apart; and the
plain loops they time with."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa


def fastest(step: Any, repeats: int) -> float:
    """The best of `repeats` timed calls of `step()`, in seconds: the least disturbed by a noisy machine."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
    return min(seconds)


@dataclass
class Trained:
    outcome: Any          # pipeline.train.driver.TrainOutcome
    client: Any           # MlflowClient of the run's tracking URI
    files: dict[str, bytes]  # the registered model's files
    synthetic: pa.Table   # `rows` proportional rows
    fit_s: float          # train() wall time: encoder fit, training, mixture, registration
    generate_s: float     # synthesize() wall time

    def metric(self, key: str) -> list[float]:
        return [m.value for m in self.client.get_metric_history(self.outcome.run_id, key)]


def train_and_sample(overrides: list[str], rows: int, seed: int = 0, restart: bool = False) -> Trained:
    from mlflow.tracking import MlflowClient

    from pipeline.artifact import load_artifact_files
    from pipeline.config import GenerateConfig, load_config
    from pipeline.generate.plan import build_plan
    from pipeline.model.sampling import synthesize
    from pipeline.registry import fetch_model
    from pipeline.train.driver import train

    config = load_config(None, overrides)
    started = time.perf_counter()
    outcome = train(config, restart=restart)
    fit_s = time.perf_counter() - started
    files = fetch_model(outcome.model_uri)
    model, encoder = load_artifact_files(files)
    plan = build_plan(GenerateConfig(num_rows=rows, seed=seed), encoder)
    started = time.perf_counter()
    synthetic = synthesize(model, encoder, plan.rows(0, rows), seed=seed)
    return Trained(outcome, MlflowClient(config.mlflow.tracking_uri), files, synthetic, fit_s,
                   time.perf_counter() - started)


def shuffled_batches(x: Any, c: Any, batch_size: int, generator: Any = None):
    """One pass over in-memory (device) tensors in a random order: the input of the plain loops below."""
    import torch

    order = torch.randperm(len(x), generator=generator, device=x.device)
    return ((x[order[i:i + batch_size]], c[order[i:i + batch_size]]) for i in range(0, len(x), batch_size))


def sync(device: Any) -> None:
    """Wait for the device's queued work, so a timer around it measures the work (a no-op on CPU)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_rates(model: Any, x: Any, c: Any, batch_size: int, epochs: int, amp: bool = False) -> list[float]:
    """The plain loop every training limit is measured with: the worker's own `run_epoch` over tensors already in
    memory (no Ray, no input pipeline), Adam at 1e-3; rows/s of each epoch (the device synchronised around it)."""
    import torch

    from pipeline.train.worker import run_epoch

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rates = []
    for _ in range(epochs):
        batches = shuffled_batches(x, c, batch_size)
        sync(x.device)
        started = time.perf_counter()
        done = run_epoch(model, optimizer, batches, 1.0, amp)
        sync(x.device)
        rates.append(done["rows"] / (time.perf_counter() - started))
    return rates


def tvae_adult_frame() -> tuple[Any, list[str]]:
    """Adult as ctgan's TVAE takes it: a DataFrame with nulls of string columns as a "<null>" category, and the
    names of those discrete columns."""
    import pyarrow.parquet as pq

    from pipeline.config import BUNDLED_DATA

    frame = pq.read_table(BUNDLED_DATA / "adult.parquet").to_pandas()
    discrete = [c for c in frame.columns if frame[c].dtype == object or str(frame[c].dtype).startswith("str")]
    frame[discrete] = frame[discrete].fillna("<null>")
    return frame, discrete
