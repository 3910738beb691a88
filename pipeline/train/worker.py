"""What runs on every Ray Train worker: the epoch loop, validation, the device feed, DDP averages, checkpoints,
and, under `train.privacy`, DP-SGD (Poisson-sampled steps, per-row clipped gradients, noise once per global step).

No MLflow here: the controller (pipeline.train.driver.EpochLogger) tracks what the workers report.
"""
from __future__ import annotations

import itertools
import math
import os
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from pipeline.artifact import save_artifact
from pipeline.config import ModelConfig
from pipeline.model.cvae import CVAE, CVAEConfig
from pipeline.train.dp_sgd import private_epoch
from pipeline.privacy import DpSgdSettings, epoch_noise, guarantee, next_epoch_fits

Batch = tuple[torch.Tensor, torch.Tensor]
SHUFFLE_BUFFER_BATCHES = 20  # rows shuffled together: at least this many batches
FEED_BYTES = 32 * 1024 ** 2  # float32 rows per chunk Ray Data hands a worker (one host-to-device copy each)


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a Ray Train worker is handed (`train_loop_config={"settings": ...}`), fixed for the job. The
    encoder is not in it: `encoder` is a reference to its JSON in Ray's object store, put there once by the driver,
    which rank 0 fetches once and copies into every checkpoint (it never parses it)."""
    network: CVAEConfig  # the network to build: widths, spans, prior
    model: ModelConfig   # the KL weight and its warm-up
    encoder: Any         # ray.ObjectRef of the encoder JSON
    seed: int
    epochs: int
    passes_per_epoch: int  # passes over the shard per epoch (train.epoch_schedule)
    batch_size: int
    lr: float
    lr_schedule: str
    weight_decay: float
    patience: int          # epochs without a better score before stopping; 0: never
    has_holdout: bool
    dp_sgd: DpSgdSettings | None  # DP-SGD's sampling and noise, under train.privacy

    @property
    def row_width(self) -> int:
        return self.network.x_dim + self.network.c_dim


def feed_rows(batch_size: int, row_width: int) -> int:
    """Rows per chunk Ray Data hands a worker: a whole number of batches, about FEED_BYTES of float32."""
    return batch_size * max(SHUFFLE_BUFFER_BATCHES, FEED_BYTES // (4 * row_width * batch_size))


def beta_for_epoch(config: ModelConfig, epoch: int) -> float:
    """KL weight with a linear warm-up over the first `model.kl_warmup_epochs` epochs."""
    if config.kl_warmup_epochs == 0:
        return config.beta
    return config.beta * min(1.0, (epoch + 1) / config.kl_warmup_epochs)


def lr_for_epoch(lr: float, schedule: str, epoch: int, epochs: int) -> float:
    """`train.lr`, or under the cosine schedule its value at the middle of this epoch on a half cosine from
    train.lr down to 0 over all epochs: large steps first, then small ones that settle the model on the data
    instead of jumping around it. Set per epoch (not per step), so a resumed epoch uses what it used."""
    if schedule == "constant":
        return lr
    return lr * 0.5 * (1.0 + math.cos(math.pi * (epoch + 0.5) / epochs))


def run_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable[Batch], beta: float,
              amp: bool = False) -> dict[str, float]:
    """One pass of gradient steps; returns row-weighted means of loss, recon and KL, and the row count."""
    model.train()
    keys = ("loss", "recon", "kl")
    totals = None
    rows = 0
    for x, c in batches:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            terms = model(x, c, beta)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        step = torch.stack([terms[key].detach().float() for key in keys]) * len(x)
        totals = step if totals is None else totals + step  # stays on the device: no sync per step
        rows += len(x)
    means = (totals / max(rows, 1)).tolist() if totals is not None else [0.0] * len(keys)
    return dict(zip(keys, means)) | {"rows": rows}


@torch.no_grad()
def validate(model: CVAE, batches: Iterable[Batch], seed: int = 0) -> dict[str, float]:
    """Validation ELBO per row (higher is better), with fixed noise so epochs compare fairly."""
    model.eval()
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    recon = kl = 0.0
    rows = 0
    for x, c in batches:
        terms = model(x, c, 1.0)
        recon += terms["recon"].item() * len(x)
        kl += terms["kl"].item() * len(x)
        rows += len(x)
    torch.random.set_rng_state(state)
    rows_or_one = max(rows, 1)
    return {"val_elbo": -(recon + kl) / rows_or_one, "val_recon": recon / rows_or_one, "val_kl": kl / rows_or_one,
            "rows": rows}


def _global_means(terms: dict[str, float], device: torch.device) -> dict[str, float]:
    """Row-weighted means over all workers, so every rank sees (and decides on) the same numbers."""
    if not dist.is_available() or not dist.is_initialized():
        return terms
    keys = sorted(key for key in terms if key != "rows")
    packed = torch.tensor([terms[key] * terms["rows"] for key in keys] + [terms["rows"]],
                          dtype=torch.float64, device=device)
    dist.all_reduce(packed)
    rows = packed[-1].item()
    return {key: packed[i].item() / max(rows, 1) for i, key in enumerate(keys)} | {"rows": int(rows)}


def _global_max(value: float, device: torch.device) -> float:
    if not dist.is_available() or not dist.is_initialized():
        return value
    packed = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(packed, op=dist.ReduceOp.MAX)
    return packed.item()


def _feed(shard: Any, batch_size: int, device: torch.device, row_width: int) -> Iterable[Batch]:
    """A worker's shard as Ray Data hands it over: large chunks (up to FEED_BYTES, a whole number of batches),
    moved to the device once, so a GPU is never waiting on one small host-to-device copy per step."""
    for block in shard.iter_torch_batches(batch_size=feed_rows(batch_size, row_width), dtypes=torch.float32,
                                          device=device, pin_memory=device.type == "cuda"):
        yield block["x"], block["c"]


def _batches(chunks: Iterable[Batch], batch_size: int, device: torch.device, shuffle_seed: int | None) -> Iterable[Batch]:
    """Gradient-step batches: each chunk shuffled and sliced on the device. Every worker gets ceil(shard rows /
    batch_size) batches, as DDP needs."""
    generator = torch.Generator(device).manual_seed(shuffle_seed) if shuffle_seed is not None else None
    for x, c in chunks:
        order = torch.randperm(len(x), generator=generator, device=device) if generator is not None else None
        for start in range(0, len(x), batch_size):
            rows = order[start:start + batch_size] if order is not None else slice(start, start + batch_size)
            yield x[rows], c[rows]


def _shard_batches(shard: Any, batch_size: int, device: torch.device, shuffle_seed: int | None,
                   row_width: int) -> Iterable[Batch]:
    return _batches(_feed(shard, batch_size, device, row_width), batch_size, device, shuffle_seed)


def _restored(job: WorkerSettings, device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer, dict]:
    """The model (wrapped for DDP unless private), its optimizer and the training progress: fresh from the job's
    seed, or from the checkpoint Ray Train hands a restarted or resumed worker group."""
    torch.manual_seed(job.seed)
    model = CVAE(job.network)
    progress = {"epoch": -1, "best": -math.inf, "stale": 0, "history": []}  # history: every epoch's metrics
    optimizer_state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            model.load_state_dict(torch.load(Path(directory) / "weights.pt", weights_only=True))
            saved = torch.load(Path(directory) / "training_state.pt", weights_only=True)
            optimizer_state, progress = saved["optimizer"], {"history": [], **saved["progress"]}
    # DP-SGD reduces clipped, noisy gradients itself: DDP's own all-reduce in backward would mix unclipped ones.
    # Every rank starts from the same seed or checkpoint, and takes the same all-reduced steps.
    model = model.to(device) if job.dp_sgd else ray.train.torch.prepare_model(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=job.lr, weight_decay=job.weight_decay)
    if optimizer_state:
        optimizer.load_state_dict(optimizer_state)
    return model, optimizer, progress


def train_loop_per_worker(config: dict[str, WorkerSettings]) -> None:
    """Runs on every Ray Train worker: restore, then per epoch train, validate, report a checkpoint. One function
    over one loop (about 70 lines): the epoch's steps share its state (progress, privacy history, timing)."""
    job: WorkerSettings = config["settings"]
    context = ray.train.get_context()
    rank = context.get_world_rank()
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // context.get_local_world_size()))
    device = ray.train.torch.get_device()
    seed, plan = job.seed, job.dp_sgd
    model, optimizer, progress = _restored(job, device)
    core: CVAE = model.module if hasattr(model, "module") else model
    amp = device.type == "cuda" and plan is None  # per-row gradients in float32
    history = [tuple(segment) for segment in progress.get("privacy_history", [])]
    noise_multiplier = epoch_noise(plan, history, job.epochs - progress["epoch"] - 1,
                                   progress.get("noise_multiplier")) if plan else None
    train_shard = ray.train.get_dataset_shard("train")
    holdout_shard = ray.train.get_dataset_shard("holdout") if job.has_holdout else None
    encoder_json = ray.get(job.encoder) if rank == 0 else None
    model_config, row_width, batch_size = job.model, job.row_width, job.batch_size

    report_seconds = 0.0  # the previous epoch's checkpoint upload and report, measured when it returned
    kept_shard: list[Batch] = []
    for epoch in range(progress["epoch"] + 1, job.epochs):
        torch.manual_seed(seed * 1_000_003 + epoch * 1009 + rank)
        for group in optimizer.param_groups:
            group["lr"] = lr_for_epoch(job.lr, job.lr_schedule, epoch, job.epochs)
        started = time.perf_counter()
        if plan:
            if not next_epoch_fits(plan, history, noise_multiplier):
                break  # one more epoch would spend more than train.privacy.epsilon
            spent = private_epoch(core, optimizer, train_shard, plan, history, noise_multiplier,
                                  beta_for_epoch(model_config, epoch), epoch, rank)
            metrics = _global_means({"rows": spent.pop("rows")}, device) | spent
        else:
            shuffle = seed * 7919 + epoch * 31 + rank
            if job.passes_per_epoch == 1:
                batches = _shard_batches(train_shard, batch_size, device, shuffle, row_width)
            else:  # a small shard, read once and kept: an epoch is several passes over it (epoch_schedule)
                kept_shard = kept_shard or list(_feed(train_shard, batch_size, device, row_width))
                batches = itertools.chain.from_iterable(
                    _batches(kept_shard, batch_size, device, shuffle + 104_729 * repeat)
                    for repeat in range(job.passes_per_epoch))
            metrics = _global_means(run_epoch(model, optimizer, batches, beta_for_epoch(model_config, epoch), amp),
                                    device)
        seconds = time.perf_counter() - started
        metrics |= {"epoch": epoch, "epoch_seconds": seconds, "rows_per_s": metrics["rows"] / seconds,
                    "beta": beta_for_epoch(model_config, epoch),
                    "lr": lr_for_epoch(job.lr, job.lr_schedule, epoch, job.epochs),
                    "previous_report_seconds": report_seconds}
        score = -metrics.get("loss", 0.0)
        if holdout_shard is not None:
            held = _global_means(validate(core, _shard_batches(holdout_shard, batch_size, device, None, row_width),
                                          seed), device)
            metrics |= {key: value for key, value in held.items() if key != "rows"}
            score = held["val_elbo"]
        metrics["score"] = score
        metrics["worker_peak_rss_mb"] = _global_max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, device)
        progress = {"epoch": epoch, "best": max(progress["best"], score),
                    "stale": 0 if score > progress["best"] else progress["stale"] + 1,
                    "history": [*progress["history"], {key: float(value) for key, value in metrics.items()}],
                    "privacy_history": [list(segment) for segment in history], "noise_multiplier": noise_multiplier}
        with tempfile.TemporaryDirectory() as directory:
            if rank == 0:
                save_artifact(directory, core, encoder_json,
                              guarantee(plan, history, noise_multiplier) if plan else None)
                torch.save({"optimizer": optimizer.state_dict(), "progress": progress},
                           Path(directory) / "training_state.pt")
            reporting = time.perf_counter()
            metrics["overhead_seconds"] = reporting - started - seconds  # validation, averages, checkpoint files
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory) if rank == 0 else None)
            report_seconds = time.perf_counter() - reporting
        if job.patience and progress["stale"] >= job.patience:
            break
