"""Training, the driver: fit the encoder, start the Ray Train workers (pipeline.train.worker), track each epoch
in MLflow from the controller, register the best checkpoint.

Rerunning the same job (same `train.name` and `train.storage_path`) resumes from
its latest checkpoint and continues the same MLflow run and model version. The
job folder holds the job's identity (table, schema, conditions, encoder and model
settings): the same name with another identity is refused in one line, never
resumed into a shape mismatch, unless the user asks to restart.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import posixpath
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
import ray.train
import ray.train.torch
import torch
from mlflow.exceptions import MlflowException

from pipeline import console
from pipeline.artifact import MODEL_ARTIFACT, PRIVACY_FILE, artifact_files, load_artifact, save_artifact
from pipeline.cluster import ensure_ray
from pipeline.config import Config
from pipeline.codec import TableEncoder
from pipeline.errors import UserError
from pipeline.rules import parse_rules
from pipeline.model.latent_prior import FIT_BATCH_ROWS, collect_codes, fit_mixture
from pipeline.model.cvae import CVAE, build_model
from pipeline.train.plots import loss_curve
from pipeline.privacy import PrivateFit, budget, check_budget, dp_sgd_settings
from pipeline.registry import register, registered_version, tag_guarantee
from pipeline.tracking import (EpochMetrics, check_tracking, client_for, find_or_create_run, forget_training_run,
                               log_metrics, log_training_data, reconcile_metrics)
from pipeline.source import (cache_splits, check_table, encoded_splits, fit_encoder, modelled_schema,
                             object_store_share, read_table)
from pipeline.storage import absolute, absolute_tracking_uri, arrow_filesystem, digest, filesystem, parquet_files, redact
from pipeline.train.worker import WorkerSettings, feed_rows, train_loop_per_worker

class EpochLogger(ray.train.UserCallback):
    """On the Ray Train controller: each persisted epoch goes to MLflow (kept for later if MLflow is away), and a
    progress line to the driver's console through `lines` (a Ray queue)."""

    def __init__(self, tracking_uri: str, run_id: str, epochs: int, lines: Any):
        self.epochs, self.lines = epochs, lines
        self.tracking = EpochMetrics(tracking_uri, run_id)

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        epoch_metrics = metrics[0]
        epoch = int(epoch_metrics["epoch"])
        remaining = (self.epochs - epoch - 1) * epoch_metrics["epoch_seconds"]
        loss = f"loss {epoch_metrics['loss']:.3f}  " if "loss" in epoch_metrics else ""
        validation = f"val_elbo {epoch_metrics['val_elbo']:.3f}  " if "val_elbo" in epoch_metrics else ""
        spent = f"epsilon {epoch_metrics['epsilon']:.2f}  " if "epsilon" in epoch_metrics else ""
        self._say("progress", f"epoch {epoch + 1}/{self.epochs}  {loss}{validation}{spent}"
                              f"{epoch_metrics['rows_per_s']:,.0f} rows/s  {epoch_metrics['epoch_seconds']:.1f}s  "
                              f"ETA {remaining:.0f}s")
        problem = self.tracking.add(epoch_metrics)
        if problem:
            self._say("warning", problem)

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        """A worker died or raised: say so; Ray Train restarts the group from the last checkpoint
        (`train.max_failures`) or gives up, and the driver reports that."""
        ranks = ", ".join(str(rank) for rank in sorted(worker_exceptions))
        first = next(iter(worker_exceptions.values()), None)
        self._say("warning", f"training worker rank(s) {ranks} failed ({type(first).__name__}); "
                             "Ray Train restarts from the last checkpoint while retries remain")

    def _say(self, kind: str, text: str) -> None:
        """To the driver's console; if the relay is gone, to this controller's log. Never raises into Ray Train."""
        try:
            self.lines.put_nowait((kind, text))
        except Exception:  # noqa: BLE001 - a lost console line must not fail training
            print(f"{kind}: {text}", flush=True)


JOB_IDENTITY = "cvae-job.json"
JOB_FINISHED = "cvae-finished.json"  # written once the job's version is registered: a rerun returns it
PRIVATE_ENCODER = "private-encoder.json"  # a private job's encoder: fitted (and its budget spent) once per job
CONTROLLER_POLL_S = 0.2
AUTO_STEPS = 3000  # `train.epochs: auto` trains for about this many optimizer steps...
AUTO_MIN_EPOCHS = 10  # ...in at least this many epochs (BENCHMARKS.md, Quality: how the defaults were chosen)
MIN_EPOCH_STEPS = 40  # ...of at least this many steps each: an epoch of a small table is several passes over it


@dataclass(frozen=True)
class EpochSchedule:
    epochs: int
    passes_per_epoch: int = 1  # passes over the training split in one epoch (one report, checkpoint, validation)


def epoch_schedule(config: Config, rows: int) -> EpochSchedule:
    """`train.epochs` as given (one pass each), or for auto about AUTO_STEPS optimizer steps: each of the workers
    steps through its shard in `train.batch_size` rows, so a 1,000-row table needs a thousand passes to learn what
    ten passes teach on Adult (~400 steps there). Such passes are grouped into epochs of at least MIN_EPOCH_STEPS
    steps, so the per-epoch report, checkpoint and validation (~0.3 s) do not take longer than the steps. A
    private run's auto is AUTO_MIN_EPOCHS single passes: its budget is accounted per pass and spread over them,
    and more of them means more noise in every step."""
    if config.train.epochs != "auto":
        return EpochSchedule(config.train.epochs)
    if config.train.privacy.epsilon is not None:
        return EpochSchedule(AUTO_MIN_EPOCHS)
    shard_rows = rows * (1.0 - config.data.holdout_fraction) / config.train.num_workers
    steps_per_pass = max(1, math.ceil(shard_rows / config.train.batch_size))
    passes = math.ceil(MIN_EPOCH_STEPS / steps_per_pass)
    return EpochSchedule(max(AUTO_MIN_EPOCHS, math.ceil(AUTO_STEPS / (steps_per_pass * passes))), passes)


def private_encoder(fs: Any, job_dir: str, fit: Any) -> tuple[TableEncoder, int]:
    """A private job's encoder and training row count: fitted once (`fit()` spends the statistics' budget) and kept
    in the job folder, so a resumed job trains on with the same encoder and spends nothing again."""
    path = posixpath.join(job_dir, PRIVATE_ENCODER)
    if fs.exists(path):
        with fs.open(path, "rb") as handle:
            saved = json.loads(handle.read())
        return TableEncoder.from_json(saved["encoder"]), saved["training_rows"]
    encoder = fit()
    with fs.open(path, "wb") as handle:
        handle.write(json.dumps({"encoder": encoder.to_json(), "training_rows": encoder.fitted_rows}).encode())
    return encoder, encoder.fitted_rows


def job_identity(config: Config, schema: pa.Schema, data_digest: str) -> dict[str, Any]:
    """What a checkpoint is only valid for: the same table, columns, split, encoder and model settings."""
    data = config.data
    return {"data.path": redact(absolute(data.path)), "data files (paths, sizes, dates)": data_digest,
            "schema": [f"{field.name}: {field.type}" for field in schema],
            "data.conditions": data.conditions, "data.context": data.context, "data.columns": data.columns, "data.exclude": data.exclude,
            "data.rules": data.rules, "data.rules_found": data.rules_found,
            "data.holdout_fraction": data.holdout_fraction, "train.seed": config.train.seed,
            "encoder": config.encoder.model_dump(), "model": config.model.model_dump(),
            "train.privacy": config.train.privacy.model_dump(exclude={"noise_seed"})}


def claim_job(fs: Any, job_dir: str, identity: dict[str, Any], restart: bool) -> None:
    """Resume only the same job: a folder of another job (or of unknown origin) is an error unless `restart`,
    which deletes it."""
    marker = posixpath.join(job_dir, JOB_IDENTITY)
    if fs.exists(job_dir) and restart:
        fs.rm(job_dir, recursive=True)
    elif fs.exists(marker):
        with fs.open(marker, "rb") as handle:
            previous = json.loads(handle.read())
        changed = [key for key in identity if previous.get(key) != identity[key]]
        if changed:
            shown = "; ".join(f"{key}: {_short(previous.get(key))} -> {_short(identity[key])}" for key in changed[:2])
            raise UserError(f"train.name {posixpath.basename(job_dir)!r} already holds checkpoints of another "
                            f"training job ({shown}); set a new train.name, or pass --restart to discard them")
    elif fs.exists(job_dir) and fs.ls(job_dir):
        raise UserError(f"train.name {posixpath.basename(job_dir)!r}: {redact(job_dir)} holds checkpoints this "
                        "version cannot match to a job; set a new train.name, or pass --restart to discard them")
    fs.makedirs(job_dir, exist_ok=True)
    with fs.open(marker, "wb") as handle:
        handle.write(json.dumps(identity, sort_keys=True, default=str).encode())


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class TrainOutcome:
    run_id: str
    model_uri: str
    version: str
    checkpoint_dir: str
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage (Stages), also in MLflow


class Stages:
    """Wall time per stage of a training job: where the fixed cost goes (logged as `seconds_<stage>`)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.mark = time.perf_counter()

    def lap(self, stage: str) -> float:
        now = time.perf_counter()
        self.seconds[stage] = now - self.mark
        self.mark = now
        return self.seconds[stage]


def with_latent_mixture(model: CVAE, train_split: ray.data.Dataset, rows: float, config: Config) -> CVAE:
    """The trained model plus the latent mixture fitted to the training rows' codes (pipeline/model/latent_prior.py),
    on the driver: one more read of the training split (from the object store, or the files when it streams)."""
    batches = ((batch["x"], batch["c"]) for batch in train_split.iter_torch_batches(
        batch_size=FIT_BATCH_ROWS, dtypes=torch.float32))
    conditions, means, variances = collect_codes(model, batches, int(rows), config.train.seed)
    mixture = fit_mixture(conditions, means, variances, config.model.latent_mixture, config.train.seed)
    return model if mixture is None else model.with_mixture(mixture)


def _mixture_summary(model: CVAE) -> str:
    combinations, components = model.config.mixture_size
    if not components:
        return "no condition combination has enough rows; generation draws z from p(z|c)"
    return f"{components} Gaussian components over {combinations} condition combination(s)"


@dataclass(frozen=True)
class Claim:
    """What the checks before any work found: the table, the tracking store, and the job folder now held by this job."""
    fs: Any                     # the table's filesystem
    files: list[str]
    rows: int                   # rows of the whole table
    modelled: pa.Schema
    data_digest: str
    tracking_uri: str
    client: Any                 # MlflowClient
    train_id: str               # the job's MLflow run tag: one run per (storage path, train.name)
    storage_path: str
    storage_fs: Any
    job_dir: str


@dataclass
class Prepared:
    """What `prepare` hands `execute` and `publish`: the job's encoder, worker settings, datasets and run."""
    claim: Claim
    encoder: TableEncoder
    settings: WorkerSettings
    splits: dict[str, ray.data.Dataset]
    run_id: str
    private: bool


def train(config: Config, restart: bool = False) -> TrainOutcome:
    """Fit the encoder, train with Ray Train, register the best checkpoint in MLflow.
    `restart` discards the checkpoints of an earlier job under the same `train.name`; a job that finished already
    returns its registered version without starting Ray."""
    clock = Stages()
    claim = check(config, restart)
    done = finished(config, claim)
    if done is not None:
        return done
    clock.lap("checks")
    job = prepare(config, claim, clock)
    result = execute(config, job)
    clock.lap("training")
    return publish(config, job, result, clock)


def check(config: Config, restart: bool) -> Claim:
    """Checks before any work (table footers, MLflow, the job folder), each a one-line error; claims the job folder."""
    data = config.data
    fs, files = parquet_files(data.path, data.storage_options)
    rows, schema = check_table(fs, files, data)
    modelled = modelled_schema(schema, data)
    data_digest = digest(fs, files)
    tracking_uri = absolute_tracking_uri(config.mlflow.tracking_uri)
    check_tracking(tracking_uri)
    storage = absolute(config.train.storage_path)
    storage_fs, storage_path = filesystem(storage, config.train.storage_options)
    job_dir = posixpath.join(storage_path.rstrip("/"), config.train.name)
    claim_job(storage_fs, job_dir, job_identity(config, modelled, data_digest), restart)
    client = client_for(tracking_uri)
    train_id = hashlib.sha256(f"{storage}|{config.train.name}".encode()).hexdigest()[:16]
    if restart:
        forget_training_run(client, config, train_id)
    return Claim(fs, files, rows, modelled, data_digest, tracking_uri, client, train_id, storage_path, storage_fs,
                 job_dir)


def finished(config: Config, claim: Claim) -> TrainOutcome | None:
    """The outcome of this job's earlier run when it trained the epochs asked for now and registered its version
    under this model name, which still exists; None when there is training (or registering) left to do. Costs a
    read of the job folder and two registry calls instead of a Ray Train start and the encoder fit."""
    path = posixpath.join(claim.job_dir, JOB_FINISHED)
    if not claim.storage_fs.exists(path):
        return None
    with claim.storage_fs.open(path, "rb") as handle:
        record = json.loads(handle.read())
    wanted = {"epochs": epoch_schedule(config, claim.rows).epochs, "model_name": config.mlflow.model_name}
    if any(record.get(key) != value for key, value in wanted.items()):
        return None
    run_id, version = record["run_id"], record["version"]
    try:
        registered = registered_version(claim.client, run_id)
        claim.client.get_model_version(config.mlflow.model_name, version)
    except MlflowException:  # another tracking store, or the run or version was deleted
        registered = None
    if registered != version:
        return None  # the run or its version went away: train (resuming from the checkpoints) and register again
    register(claim.client, run_id, "", config)  # registered already: moves the alias only
    model_uri = f"models:/{config.mlflow.model_name}/{version}"
    alias = f" (alias @{config.mlflow.alias})" if config.mlflow.alias else ""
    console.progress(f"train.name {config.train.name!r} finished its {record['epochs']} epochs earlier: nothing to "
                     "train (--restart trains it again)")
    console.result(f"registered {model_uri}{alias}; run {run_id}; checkpoints in {redact(record['checkpoint_dir'])}")
    return TrainOutcome(run_id, model_uri, version, record["checkpoint_dir"])


def prepare(config: Config, claim: Claim, clock: Stages) -> Prepared:
    """The encoder fitted on the training split (Ray Data), the MLflow run, the network and the worker settings."""
    data, rows = config.data, claim.rows
    ensure_ray(config.ray.address)
    clock.lap("ray_start")
    dataset = read_table(claim.fs, claim.files, claim.modelled.names)
    privacy = config.train.privacy
    noise_seed = privacy.noise_seed if privacy.noise_seed is not None else secrets.randbits(63)
    encoder, spend, train_rows = fitted_encoder(config, dataset, claim.modelled, rows, noise_seed, claim.storage_fs,
                                                claim.job_dir, clock)
    run_id, resumed = find_or_create_run(claim.client, config, claim.train_id)
    console.progress(f"mlflow run {run_id} ({'resumed' if resumed else 'new'}) at {redact(claim.tracking_uri)}")
    if not resumed:
        log_training_data(run_id, data.path, claim.data_digest, rows)

    model = build_model(encoder.x_dim, encoder.c_dim, encoder.feature_spans, config.model)
    schedule = epoch_schedule(config, rows)
    dp_sgd = None
    if spend is not None:
        dp_sgd = dp_sgd_settings(privacy, spend, train_rows // config.train.num_workers,
                                 feed_rows(config.train.batch_size, encoder.x_dim + encoder.c_dim),
                                 config.train.batch_size, noise_seed)
        check_budget(dp_sgd, schedule.epochs)
    encoder_ref = ray.put(encoder.to_json())
    settings = WorkerSettings(
        network=model.config, model=config.model, encoder=encoder_ref, seed=config.train.seed, epochs=schedule.epochs,
        passes_per_epoch=schedule.passes_per_epoch, batch_size=config.train.batch_size, lr=config.train.lr,
        lr_schedule=config.train.lr_schedule, weight_decay=config.train.weight_decay,
        patience=config.train.early_stopping_patience, has_holdout=data.holdout_fraction > 0, dp_sgd=dp_sgd)
    splits = cache_splits(encoded_splits(dataset, encoder_ref, config.train.seed, data.holdout_fraction),
                          rows * (encoder.x_dim + encoder.c_dim) * 4, config.train.cache)
    clock.lap("tracking_setup")
    return Prepared(claim, encoder, settings, splits, run_id, spend is not None)


def fitted_encoder(config: Config, dataset: ray.data.Dataset, modelled: pa.Schema, rows: int, noise_seed: int,
                   storage_fs: Any, job_dir: str, clock: Stages) -> tuple[TableEncoder, Any, int | None]:
    """The encoder fitted on the training split (Ray Data); a private job's is fitted once, its statistics' budget
    spent once, and kept in the job folder. Returns it with the privacy budget's split and the training row count
    (None, None when not private)."""
    data, privacy = config.data, config.train.privacy
    spend = budget(privacy, rows) if privacy.epsilon is not None else None
    if spend is None:
        encoder, train_rows = fit_encoder(dataset, modelled, data, config.encoder, config.train.seed), None
    else:
        encoder, train_rows = private_encoder(storage_fs, job_dir, lambda: fit_encoder(
            dataset, modelled, data, config.encoder, config.train.seed,
            PrivateFit(spend.statistics_epsilon, spend.statistics_delta, noise_seed, tuple(privacy.public_columns))))
    protected = (f"statistics with (epsilon {spend.statistics_epsilon:g}, delta {spend.statistics_delta:.2g})-DP noise"
                 if spend else f"values seen in fewer than {config.encoder.min_value_count} rows protected")
    fitted_rows = train_rows if train_rows is not None else encoder.fitted_rows  # the split, not the table's rows
    console.progress(f"encoder fitted in {clock.lap('encoder_fit'):.2f}s on the training split of {fitted_rows:,} rows "
                     f"({encoder.kinds_summary()}; {protected}): "
                     f"{encoder.x_dim} feature and {encoder.c_dim} condition dimensions")
    if spend and not encoder.condition_distribution:
        console.warn("no condition combination passed the privacy noise threshold: generation needs conditions "
                     "requested by value (generate.conditions), or a larger train.privacy.epsilon")
    for name, written in encoder.formats().items():
        plainly = "integer models it as a number" if encoder.kinds()[name] == "clock" else \
            "categorical models it as text"
        console.progress(f"column {name!r}: {written} (data.columns.{name}={plainly})")
    rules = encoder.rules
    if rules.applied:
        shown = rules.describe()
        console.progress(f"{len(shown)} rule(s) every generated row keeps ({len(rules.applied) - len(parse_rules(data.rules))}"
                         f" found in the training rows): {'; '.join(shown[:8])}"
                         + (f"; ... ({len(shown) - 8} more in the encoder's JSON)" if len(shown) > 8 else "")
                         + (" (data.rules_found=suggest lists found rules without applying them)"
                            if data.rules_found == "apply" else ""))
    if rules.screened:
        console.progress(f"{rules.left_out:,} training rows break data.rules and were left out of training "
                         "(data.rules_breaking=leave_out)")
    unapplied = [rule for rule in rules.found if rule not in rules.applied]
    if unapplied:
        console.progress(f"{len(unapplied)} rule(s) found but not applied (cvae inspect lists them as data.rules)")
    if encoder.id_columns:
        console.progress(f"identifier column(s) {', '.join(encoder.id_columns)} get fresh values on generation "
                         "(data.columns.NAME=categorical to model one instead)")
    return encoder, spend, train_rows


def execute(config: Config, job: Prepared) -> ray.train.Result:
    """The Ray Train job: `train.num_workers` DDP workers run `train_loop_per_worker` on their shards of the
    encoded splits; the controller's EpochLogger relays each epoch to MLflow and the console."""
    # Ray Train's controller takes each worker's report when it polls (every 2 s by default) and a worker's next
    # report waits for that: epochs shorter than the poll would each lose the rest of it. Ray passes this setting
    # on to the controller; a value the user set wins. A slow poll is awaited again, not a failure (Ray Train
    # declares a worker dead only after RAY_TRAIN_WORKER_HEALTH_CHECK_TIMEOUT_S, 10 minutes).
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(CONTROLLER_POLL_S))
    ingest = ray.train.DataConfig.default_ingest_options()
    ingest.preserve_order = True
    ingest.resource_limits = ingest.resource_limits.copy(object_store_memory=object_store_share())
    with console.relayed_lines() as lines:
        trainer = ray.train.torch.TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"settings": job.settings},
            scaling_config=ray.train.ScalingConfig(num_workers=config.train.num_workers, use_gpu=config.train.use_gpu,
                                                   resources_per_worker={"CPU": config.train.cpus_per_worker}),
            run_config=ray.train.RunConfig(
                name=config.train.name, storage_path=job.claim.storage_path,
                storage_filesystem=arrow_filesystem(job.claim.storage_fs),
                failure_config=ray.train.FailureConfig(max_failures=config.train.max_failures),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config.train.keep_checkpoints,
                                                             checkpoint_score_attribute="score",
                                                             checkpoint_score_order="max"),
                callbacks=[EpochLogger(job.claim.tracking_uri, job.run_id, job.settings.epochs, lines)],
                logging_config=ray.train.LoggingConfig(log_level="INFO" if console.verbose() else "WARNING")),
            datasets=job.splits,
            dataset_config=ray.train.DataConfig(execution_options=ingest),
        )
        try:
            return trainer.fit()
        except ray.train.TrainingFailedError as exc:
            job.claim.client.set_terminated(job.run_id, status="FAILED")
            raise RuntimeError(f"training failed after {config.train.max_failures} retries: "
                               f"{str(exc).strip().splitlines()[-1]}") from exc


def publish(config: Config, job: Prepared, result: ray.train.Result, clock: Stages) -> TrainOutcome:
    """The best checkpoint (the last, for a private model) as the model artifact, with the latent mixture fitted on
    the driver; registered in MLflow with the loss curve and the stage timings."""
    client, run_id, epochs = job.claim.client, job.run_id, job.settings.epochs
    # a private model is the last checkpoint: picking the best by holdout score would make it depend on holdout rows
    best = result.checkpoint if job.private else (result.get_best_checkpoint(metric="score", mode="max")
                                                  or result.checkpoint)
    if best is None:
        raise RuntimeError("training finished without a checkpoint")
    with result.checkpoint.as_directory() as latest:
        history = torch.load(Path(latest) / "training_state.pt", weights_only=True)["progress"]["history"]
    repaired = reconcile_metrics(client, run_id, history)
    if repaired:
        console.warn(f"MLflow took {repaired} epoch(s) of metrics only after training (it missed them live)")
    with best.as_directory() as checkpoint_dir, tempfile.TemporaryDirectory() as scratch:
        export = Path(scratch) / MODEL_ARTIFACT
        export.mkdir()
        for name in (*artifact_files(checkpoint_dir), "artifact.json"):
            shutil.copy(Path(checkpoint_dir) / name, export / name)
        if config.model.latent_mixture and not job.private:
            trained, _ = load_artifact(export)
            mixed = with_latent_mixture(trained, job.splits["train"], job.claim.rows * (1 - config.data.holdout_fraction),
                                        config)
            save_artifact(export, mixed, job.encoder.to_json())
            console.progress(f"latent mixture fitted in {clock.lap('latent_mixture'):.1f}s: {_mixture_summary(mixed)}")
        registered_before = registered_version(client, run_id) is not None
        version = register(client, run_id, str(export), config)
        guarantee = json.loads((export / PRIVACY_FILE).read_text()) if job.private else None
    if guarantee:
        tag_guarantee(client, run_id, config.mlflow.model_name, None if registered_before else version, guarantee)
        stopped = f"; stopped after {len(history)} of {epochs} epochs: one more would exceed it" \
            if len(history) < epochs else ""
        console.result(f"differential privacy: ({guarantee['epsilon']:.3g}, {guarantee['delta']:.2g})-DP of a "
                       f"target epsilon {guarantee['target_epsilon']:g} ({guarantee['accountant']}){stopped}")
    for path, figure in loss_curve(history):
        client.log_figure(run_id, figure, path)
    clock.lap("register")
    log_metrics(client, run_id, {f"seconds_{stage}": value for stage, value in clock.seconds.items()}, step=0)
    if job.encoder.rules.screened:
        log_metrics(client, run_id, {"training_rows_left_out": job.encoder.rules.left_out}, step=0)
    client.set_terminated(run_id)
    model_uri = f"models:/{config.mlflow.model_name}/{version}"
    alias = f" (alias @{config.mlflow.alias})" if config.mlflow.alias else ""
    console.result(f"registered {model_uri}{alias}; run {run_id}; checkpoints in {redact(best.path)}")
    record = {"epochs": epochs, "model_name": config.mlflow.model_name, "run_id": run_id, "version": version,
              "checkpoint_dir": best.path}
    with job.claim.storage_fs.open(posixpath.join(job.claim.job_dir, JOB_FINISHED), "wb") as handle:
        handle.write(json.dumps(record).encode())
    return TrainOutcome(run_id, model_uri, version, best.path, clock.seconds)
