"""Registry: logging the pyfunc, registered versions and aliases, and resolving `models:/` URIs.

A registered version is logged once per training run (a resumed run finds its
version by a run tag); aliases move on every successful run.
"""
from __future__ import annotations

import contextlib
import io
import sys
import tempfile
import warnings
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline import console
from pipeline.artifact import MODEL_ARTIFACT, load_artifact
from pipeline.config import Config, MLflowConfig
from pipeline.errors import UserError
from pipeline.pyfunc import PYFUNC_ENTRY, code_paths, example_conditions, requirements, signature
from pipeline.storage import redact

VERSION_TAG = "cvae.registered_version"


def register(client: MlflowClient, run_id: str, artifact_dir: str, config: Config) -> str:
    """Log the pyfunc and register it once per run (a resumed run returns the version it already has)."""
    name = config.mlflow.model_name
    version = registered_version(client, run_id)
    if version is None:
        _, encoder = load_artifact(artifact_dir)  # refuses a tampered folder before anything is logged
        example = example_conditions(encoder)
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None), \
                tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
            # MLflow 3 compares a pandas Index with range() when it saves any DataFrame example; pandas warns
            warnings.filterwarnings("ignore", message="Operation with range is deprecated")
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(PYFUNC_ENTRY), artifacts={MODEL_ARTIFACT: str(artifact_dir)},
                code_paths=code_paths(Path(scratch)), signature=signature(encoder),
                input_example=example, pip_requirements=requirements())
        with contextlib.redirect_stderr(sys.stderr if console.verbose() else io.StringIO()):  # its "Successfully ..."
            version = mlflow.register_model(info.model_uri, name, tags={"run_id": run_id}).version
        client.set_tag(run_id, VERSION_TAG, str(version))
    if config.mlflow.alias:
        client.set_registered_model_alias(name, config.mlflow.alias, str(version))
    return str(version)


def registered_version(client: MlflowClient, run_id: str) -> str | None:
    """The version this run registered already (a resumed run keeps it), or None."""
    return client.get_run(run_id).data.tags.get(VERSION_TAG)


def tag_guarantee(client: MlflowClient, run_id: str, name: str, version: str | None, guarantee: dict) -> None:
    """A private model's (epsilon, delta) and accountant, as tags on its run and on `version` (None: the version
    registered earlier keeps the tags of the checkpoint it was registered from)."""
    tags = {"privacy.epsilon": f"{guarantee['epsilon']:.6g}", "privacy.delta": f"{guarantee['delta']:.6g}",
            "privacy.accountant": guarantee["accountant"],
            "privacy.statistics_epsilon": f"{guarantee['statistics_epsilon']:.6g}",
            "privacy.noise_multiplier": f"{guarantee['noise_multiplier']:.6g}"}
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
        if version is not None:
            client.set_model_version_tag(name, version, key, value)


def fetch_model(model_uri: str) -> dict[str, bytes]:
    """The artifact files of a registered pyfunc, as bytes: shipped to Ray actors, which need no MLflow access."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=scratch))
        folder = root / "artifacts" / MODEL_ARTIFACT
        if not folder.is_dir():
            raise UserError(f"{model_uri} is not a cvae model (no artifacts/{MODEL_ARTIFACT}); register one with cvae train")
        load_artifact(folder)
        return {p.name: p.read_bytes() for p in folder.iterdir()}


def registered_name(model_uri: str) -> str:
    """NAME from `models:/NAME/VERSION` or `models:/NAME@ALIAS`."""
    return model_uri.removeprefix("models:/").split("/")[0].split("@")[0]


def default_model_uri(config: MLflowConfig) -> str:
    """The model just registered under `mlflow.model_name`: its alias if set, else its latest version."""
    return f"models:/{config.model_name}@{config.alias}" if config.alias else f"models:/{config.model_name}/latest"


def resolve_model_uri(client: MlflowClient, uri: str) -> tuple[str, str]:
    """`models:/NAME@ALIAS` or `models:/NAME/latest` -> (`models:/NAME/VERSION`, version), resolved once."""
    if not uri.startswith("models:/"):
        return uri, ""
    body = uri.removeprefix("models:/")
    where = redact(client.tracking_uri)  # an error says which registry it looked in
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            version = client.get_model_version_by_alias(name, alias).version
        else:
            name, _, ref = body.partition("/")
            if ref in ("", "latest"):
                versions = client.search_model_versions(f"name = '{name}'")
                if not versions:
                    raise UserError(f"{uri}: no registered versions of {name!r} in the registry at {where}; train and "
                                    "register one first, or set mlflow.tracking_uri to the registry that holds it")
                version = str(max(int(v.version) for v in versions))
            else:
                version = client.get_model_version(name, ref).version
    except MlflowException as exc:
        raise UserError(f"{uri}: not found in the registry at {where} ({exc.message}); check the model name and "
                        "alias, or set mlflow.tracking_uri to the registry that holds it") from None
    return f"models:/{name}/{version}", str(version)

