"""Registry: the model artifact on disk, the MLflow run, the pyfunc, registered versions and aliases.

The artifact is a folder of plain files: `weights.pt` (a state_dict, loaded with
weights_only=True), `model.json` (hyper-parameters), `encoder.json` (the fitted
encoder) and `artifact.json` (format and SHA-256 of each file). No pickled
module, no training rows.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pyarrow as pa
import torch
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.config import Config
from pipeline.encoding import TableEncoder
from pipeline.errors import UserError
from pipeline.sampling import part_seed, synthesize
from pipeline.model import CVAE, CVAEConfig
from pipeline.plan import condition_schema
from pipeline.storage import redact

ARTIFACT_FORMAT = "cvae-model/1"
ARTIFACT_FILES = ("weights.pt", "model.json", "encoder.json")
MODEL_ARTIFACT = "cvae"  # the artifact folder's name inside the logged pyfunc: artifacts/cvae/
TRAIN_ID_TAG = "cvae.train_id"
VERSION_TAG = "cvae.registered_version"
PYFUNC_ENTRY = Path(__file__).with_name("pyfunc_entry.py")


def save_artifact(directory: str | Path, model: CVAE, encoder_json: str) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, directory / "weights.pt")
    (directory / "model.json").write_text(json.dumps(model.config.to_dict()))
    (directory / "encoder.json").write_text(encoder_json)
    checksums = {name: _sha256(directory / name) for name in ARTIFACT_FILES}
    (directory / "artifact.json").write_text(json.dumps({"format": ARTIFACT_FORMAT, "sha256": checksums}))


def load_artifact(directory: str | Path, device: str = "cpu") -> tuple[CVAE, TableEncoder]:
    """Refuses a folder with unexpected files or a checksum that does not match."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / "artifact.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise UserError(f"{directory} is not a cvae model artifact (artifact.json missing or unreadable)") from None
    if manifest.get("format") != ARTIFACT_FORMAT:
        raise UserError(f"{directory}: model format {manifest.get('format')!r}, expected {ARTIFACT_FORMAT}")
    present = {p.name for p in directory.iterdir()} - {"artifact.json"}
    if present != set(ARTIFACT_FILES):
        raise UserError(f"{directory}: unexpected model files {sorted(present ^ set(ARTIFACT_FILES))}; refusing to load")
    for name, expected in manifest.get("sha256", {}).items():
        if _sha256(directory / name) != expected:
            raise UserError(f"{directory}/{name}: checksum mismatch, the model was modified; re-export it")
    model = CVAE(CVAEConfig(**json.loads((directory / "model.json").read_text())))
    model.load_state_dict(torch.load(directory / "weights.pt", map_location=device, weights_only=True))
    model.to(device).eval()
    return model, TableEncoder.from_json((directory / "encoder.json").read_text())


def fetch_model(model_uri: str) -> dict[str, bytes]:
    """The artifact files of a registered pyfunc, as bytes: shipped to Ray actors, which need no MLflow access."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=scratch))
        folder = root / "artifacts" / MODEL_ARTIFACT
        if not folder.is_dir():
            raise UserError(f"{model_uri} is not a cvae model (no artifacts/{MODEL_ARTIFACT}); register one with cvae train")
        load_artifact(folder)
        return {p.name: p.read_bytes() for p in folder.iterdir()}


def load_artifact_files(files: dict[str, bytes], device: str = "cpu") -> tuple[CVAE, TableEncoder]:
    with tempfile.TemporaryDirectory() as scratch:
        for name, data in files.items():
            (Path(scratch) / Path(name).name).write_bytes(data)
        return load_artifact(scratch, device)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class CVAEPyfunc(mlflow.pyfunc.PythonModel):
    """`predict(conditions DataFrame, params={"seed": S, "part": K})` -> synthetic rows with the training columns.

    The rows equal part K of a `cvae generate` run with `generate.seed=S` over the same condition rows
    (fresh ids count from K x the number of input rows, as they do when every part has that many rows).
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model, self.encoder = load_artifact(context.artifacts[MODEL_ARTIFACT])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        params = params or {}
        conditions = conditions_from_frame(self.encoder, model_input)
        part = int(params.get("part", 0))
        seed = part_seed(int(params.get("seed", 0)), part)
        return synthesize(self.model, self.encoder, conditions, seed, row_offset=part * len(model_input)).to_pandas()


def conditions_from_frame(encoder: TableEncoder, frame: pd.DataFrame) -> pa.Table:
    missing = [name for name in encoder.conditions if name not in frame.columns]
    if missing:
        raise UserError(f"condition column(s) {', '.join(missing)} missing from the input; "
                        f"pass a DataFrame with columns {encoder.conditions}")
    schema = condition_schema(encoder)
    try:
        return pa.table([pa.array(frame[f.name], from_pandas=True).cast(f.type) for f in schema],
                        schema=schema)  # from_pandas: NaN/None are nulls, as pandas means them
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise UserError(f"condition values do not fit the training types ({exc}); pass values like the training "
                        "table's") from None


def example_conditions(encoder: TableEncoder, rows: int = 3) -> pd.DataFrame:
    """Condition rows for the signature and input example: the most common combinations, no training rows."""
    combos = [entry["values"] for entry in encoder.condition_distribution[:rows]]
    return pd.DataFrame(combos, columns=encoder.conditions)


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
    if "storage_options" in key:
        return "***"
    return redact(str(value))[:6000]


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int) -> None:
    stamp = int(1000 * metrics.get("timestamp", 0)) or None
    entries = [Metric(key, float(value), stamp or int(time.time() * 1000), step) for key, value in metrics.items()
               if isinstance(value, (int, float)) and key not in ("epoch", "timestamp")]
    client.log_batch(run_id, metrics=entries)


def log_training_data(run_id: str, uri: str, digest: str, rows: int) -> None:
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    source_uri = Path(uri).resolve().as_uri() if "://" not in uri else redact(uri)
    dataset = MetaDataset(resolve_dataset_source(source_uri), name=Path(uri.rstrip("/")).name, digest=digest)
    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
        mlflow.log_input(dataset, context="training")
        mlflow.log_param("data.rows", rows)


def log_loss_curve(client: MlflowClient, run_id: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("loss", "val_loss"):
        history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        if history:
            ax.plot([m.step + 1 for m in history], [m.value for m in history], marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO per row")
    ax.legend()
    fig.tight_layout()
    client.log_figure(run_id, fig, "loss_curve.png")
    plt.close(fig)


def register(client: MlflowClient, run_id: str, artifact_dir: str, config: Config) -> str:
    """Log the pyfunc and register it once per run (a resumed run returns the version it already has)."""
    run = client.get_run(run_id)
    name = config.mlflow.model_name
    if VERSION_TAG in run.data.tags:
        version = run.data.tags[VERSION_TAG]
    else:
        model, encoder = load_artifact(artifact_dir)
        example = example_conditions(encoder)
        output = synthesize(model, encoder, conditions_from_frame(encoder, example), seed=0).to_pandas()
        signature = mlflow.models.infer_signature(example, output, params={"seed": 0, "part": 0})
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(PYFUNC_ENTRY), artifacts={MODEL_ARTIFACT: str(artifact_dir)},
                signature=signature, input_example=example, pip_requirements=_requirements())
        version = mlflow.register_model(info.model_uri, name, tags={"run_id": run_id}).version
        client.set_tag(run_id, VERSION_TAG, str(version))
    if config.mlflow.alias:
        client.set_registered_model_alias(name, config.mlflow.alias, str(version))
    return str(version)


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in ("torch", "pyarrow", "numpy", "pandas", "mlflow")] + [
        f"cvae-synth=={version('cvae-synth')}"]


def registered_name(model_uri: str) -> str:
    """NAME from `models:/NAME/VERSION` or `models:/NAME@ALIAS`."""
    return model_uri.removeprefix("models:/").split("/")[0].split("@")[0]


def resolve_model_uri(client: MlflowClient, uri: str) -> tuple[str, str]:
    """`models:/NAME@ALIAS` or `models:/NAME/latest` -> (`models:/NAME/VERSION`, version), resolved once."""
    if not uri.startswith("models:/"):
        return uri, ""
    body = uri.removeprefix("models:/")
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            version = client.get_model_version_by_alias(name, alias).version
        else:
            name, _, ref = body.partition("/")
            if ref in ("", "latest"):
                versions = client.search_model_versions(f"name = '{name}'")
                if not versions:
                    raise UserError(f"{uri}: no registered versions of {name!r}; train and register one first")
                version = str(max(int(v.version) for v in versions))
            else:
                version = client.get_model_version(name, ref).version
    except MlflowException as exc:
        raise UserError(f"{uri}: not found in the registry ({exc.message}); check the model name and alias") from None
    return f"models:/{name}/{version}", str(version)

