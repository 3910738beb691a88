"""What writes a part: one generation actor (or, for a small job, the driver) loads the model once, then
draws and writes whole parts. No MLflow here: actors need only the model files and the plan."""
from __future__ import annotations

import io
import resource
import time
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.artifact import load_artifact_files
from pipeline.generate.plan import ConditionPlan
from pipeline.model.sampling import part_seed, synthesize
from pipeline.generate.sink import Sink


MAX_ACTORS_PER_GPU = 8  # beyond this, more CUDA contexts than the CPU-side work (decode to Arrow, Parquet) needs


@dataclass(frozen=True)
class WriterPool:
    actors: int
    gpus_per_actor: float


def writer_pool(num_workers: int | str, cpus_per_worker: int, use_gpu: bool, resources: dict[str, float]) -> WriterPool:
    """How many part writers, and what share of a GPU each. `auto`: as many as the cluster's CPUs hold
    (`cpus_per_worker` each), as Ray reports them now; with GPUs, several writers share each GPU, since the
    decoder is nearly free there and turning its output into Parquet is CPU work that runs in parallel."""
    cpus, gpus = resources.get("CPU", 0.0), int(resources.get("GPU", 0))
    if not use_gpu:
        return WriterPool(num_workers if num_workers != "auto" else max(1, int(cpus // cpus_per_worker)), 0.0)
    if num_workers == "auto":
        per_gpu = max(1, min(MAX_ACTORS_PER_GPU, int(cpus // max(gpus, 1) // cpus_per_worker)))
        return WriterPool(max(1, gpus) * per_gpu, 1.0 / per_gpu)
    return WriterPool(num_workers, min(1.0, gpus / num_workers) if gpus else 1.0)


@dataclass(frozen=True)
class WriterSettings:
    """What every part writer is handed, the same for the whole dataset."""
    model_files: dict[str, bytes]  # the registered model's files (pipeline.artifact)
    plan: ConditionPlan
    output: str
    storage_options: dict[str, Any]
    seed: int
    rows_per_part: int
    use_gpu: bool
    precision: str  # "float32" | "bfloat16"


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


class PartWriter:
    """A Ray Data actor: loads the model once, then draws and writes whole parts."""

    def __init__(self, settings: WriterSettings, threads: int):
        torch.set_num_threads(threads)
        self.device = "cuda" if settings.use_gpu else "cpu"
        self.model, self.encoder = load_artifact_files(settings.model_files, self.device)
        self.plan, self.seed = settings.plan, settings.seed
        self.rows_per_part, self.precision = settings.rows_per_part, settings.precision
        self.sink = Sink(settings.output, settings.storage_options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        done: dict[str, list] = {"part": [], "rows": [], "seconds": [], "peak_rss_mb": []}
        for part in batch["part"].tolist():
            started = time.perf_counter()
            start = part * self.rows_per_part
            conditions = self.plan.rows(start, min(start + self.rows_per_part, self.plan.num_rows))
            table = synthesize(self.model, self.encoder, conditions, part_seed(self.seed, part), self.device,
                               self.precision, row_offset=start)
            self.sink.write_part(part, parquet_bytes(table), table.num_rows)
            done["part"].append(part)
            done["rows"].append(table.num_rows)
            done["seconds"].append(time.perf_counter() - started)
            done["peak_rss_mb"].append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return {key: np.asarray(values) for key, values in done.items()}


def write_with_actors(todo: list[int], pool: WriterPool, settings: Any, cpus_per_worker: int,
                      writer: type = PartWriter) -> Iterator[dict[str, Any]]:
    """One result row per part in `todo`, as parts finish, written by a pool of `pool.actors` `writer`s (PartWriter,
    or a linked dataset's LinkedPartWriter: built from `settings`, called with a batch of part numbers) through
    Ray Data (each reserves `cpus_per_worker` CPUs and runs that many torch threads). Ray Data is imported here, not at the top: a small job written by the
    driver never needs it (its import costs ~0.2 s of a 0.5 s job)."""
    import ray.data

    parts = ray.data.from_items([{"part": part} for part in todo], override_num_blocks=len(todo))
    yield from parts.map_batches(
        writer, batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(len(todo), pool.actors)),
        fn_constructor_kwargs={"settings": settings, "threads": cpus_per_worker},
        num_gpus=pool.gpus_per_actor, num_cpus=cpus_per_worker).iter_rows()
