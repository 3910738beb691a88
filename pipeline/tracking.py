"""Tracking: the MLflow run of a stage (found again on rerun), its params, metrics and inputs.

A tracking server that goes away mid-training must not cost the training: the
controller logs each epoch with a short retry budget and keeps what it could
not send; the driver reconciles the run's metrics with the history the last
checkpoint carries once training ends.
"""
from __future__ import annotations

import os
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.storage import redact

TRAIN_ID_TAG = "cvae.train_id"


def check_tracking(tracking_uri: str, must_exist: bool = False) -> None:
    """Fail fast, before any work: a server that does not answer, or (for generation) a store that is not there."""
    if tracking_uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=10)
        except (OSError, ValueError) as exc:
            raise UserError(f"MLflow at {redact(tracking_uri)} is unreachable ({redact(str(exc))}); check "
                            "mlflow.tracking_uri and that the server is up") from None
    elif tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///"))
        if must_exist and not path.exists():
            raise UserError(f"no MLflow store at {path}; train a model first or set mlflow.tracking_uri")
        if not path.parent.is_dir():
            raise UserError(f"mlflow.tracking_uri: folder {path.parent} does not exist; create it or fix the path")


def client_for(tracking_uri: str) -> MlflowClient:
    mlflow.set_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri)


def experiment_id(client: MlflowClient, config: Config) -> str:
    """`mlflow.experiment`'s id, created on first use."""
    try:
        experiment = client.get_experiment_by_name(config.mlflow.experiment)
        return experiment.experiment_id if experiment else client.create_experiment(config.mlflow.experiment)
    except MlflowException as exc:
        raise UserError(f"MLflow at {redact(config.mlflow.tracking_uri)} refused the request ({exc.message}); "
                        "check mlflow.tracking_uri and that the server is up") from None


def find_or_create_run(client: MlflowClient, config: Config, train_id: str) -> tuple[str, bool]:
    """(run id, resumed): a rerun of the same training job continues its MLflow run instead of adding one."""
    return tagged_run(client, experiment_id(client, config), TRAIN_ID_TAG, train_id, config.train.name, config.flat())


def forget_training_run(client: MlflowClient, config: Config, train_id: str) -> None:
    """A restarted job gets a new MLflow run (and model version): the old run loses its job tag, keeps its history."""
    existing = client.search_runs([experiment_id(client, config)], filter_string=f"tags.`{TRAIN_ID_TAG}` = '{train_id}'")
    for run in existing:
        client.delete_tag(run.info.run_id, TRAIN_ID_TAG)
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, status="KILLED")


def tagged_run(client: MlflowClient, experiment_id: str, tag: str, value: str, run_name: str,
               params: dict[str, Any], tags: dict[str, str] | None = None) -> tuple[str, bool]:
    """(run id, found): the run carrying `tag=value`, else a new one with these params (secrets redacted)."""
    existing = client.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{value}'",
                                  max_results=1, order_by=["attributes.start_time ASC"])
    if existing:
        run_id = existing[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id, True
    run = client.create_run(experiment_id, run_name=run_name, tags={tag: value, **(tags or {})})
    client.log_batch(run.info.run_id, params=[Param(k, _param_value(k, v)) for k, v in params.items()])
    return run.info.run_id, False


def _param_value(key: str, value: Any) -> str:
    if "storage_options" in key or (key == "train.privacy.noise_seed" and value is not None):
        return "***"  # credentials; the privacy noise seed, which would let anyone remove the noise
    return redact(str(value))[:6000]


def log_training_data(run_id: str, uri: str, digest: str, rows: int) -> None:
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    source_uri = Path(uri).resolve().as_uri() if "://" not in uri else redact(uri)
    with warnings.catch_warnings():  # MLflow registers its local-file source class twice and warns it is ambiguous
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
        source = resolve_dataset_source(source_uri)
    dataset = MetaDataset(source, name=Path(uri.rstrip("/")).name, digest=digest)
    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
        mlflow.log_input(dataset, context="training")
        mlflow.log_param("data.rows", rows)




def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, Any], step: int) -> None:
    stamp = int(1000 * metrics.get("timestamp", 0)) or int(time.time() * 1000)
    entries = [Metric(key, float(value), stamp, step) for key, value in metrics.items()
               if isinstance(value, (int, float)) and key not in ("epoch", "timestamp")]
    client.log_batch(run_id, metrics=entries)


# The controller's budget per attempt while training runs: a server that is down costs an epoch a few seconds,
# not MLflow's default of 7 retries with a 120 s timeout each.
LIVE_RETRY_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
                  "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


class EpochMetrics:
    """Per-epoch metrics sent as training reports them; what MLflow did not take is kept and sent with the next
    epoch. Runs inside the Ray Train controller, so it never raises: losing the tracking server must not end
    training (the driver reconciles the run from the checkpoint's history at the end)."""

    def __init__(self, tracking_uri: str, run_id: str):
        self.tracking_uri, self.run_id = tracking_uri, run_id
        self.pending: list[dict[str, Any]] = []
        self.failures = 0

    def add(self, metrics: dict[str, Any]) -> str | None:
        """Queue one epoch and send everything queued; a warning for the console when MLflow did not take it."""
        self.pending.append(metrics)
        for key, value in LIVE_RETRY_ENV.items():
            os.environ.setdefault(key, value)  # the controller's process only: the driver keeps MLflow's defaults
        try:
            client = MlflowClient(self.tracking_uri)
            while self.pending:
                log_metrics(client, self.run_id, self.pending[0], int(self.pending[0]["epoch"]))
                self.pending.pop(0)
        except Exception as exc:  # noqa: BLE001 - any tracking failure: keep the epoch, keep training
            return (f"MLflow at {redact(self.tracking_uri)} did not take epoch metrics ({type(exc).__name__}); "
                    f"{len(self.pending)} epoch(s) kept, sent when it answers again")
        return None


def reconcile_metrics(client: MlflowClient, run_id: str, history: list[dict[str, Any]]) -> int:
    """Log every (metric, epoch) of `history` that the run lacks, exactly once; returns how many epochs needed it."""
    keys = {key for entry in history for key in entry}
    logged = {(m.key, m.step) for key in keys for m in client.get_metric_history(run_id, key)}
    repaired = 0
    for entry in history:
        epoch = int(entry["epoch"])
        missing = {key: value for key, value in entry.items() if (key, epoch) not in logged}
        if set(missing) - {"epoch", "timestamp"}:
            log_metrics(client, run_id, missing | {"epoch": epoch}, epoch)
            repaired += 1
    return repaired
