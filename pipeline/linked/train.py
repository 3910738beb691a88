"""Linked tables, training: the derived flat tables (pipeline/linked/tables.py), one flat training job each, and the
links between the registered versions.

The parent model registers under `mlflow.model_name`, each child model under `<model_name>.<child>`; the parent
version's run holds `linked.json` (the child versions, keys, orders and context columns), which generation reads.
Each flat job resumes on its own, so a rerun after a crash continues where it stopped.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import console
from pipeline.config import Config, DataConfig
from pipeline.linked.tables import LENGTH, POSITION, PREVIOUS_PREFIX, LinkedTables, count_column, derived_tables
from pipeline.storage import absolute_tracking_uri
from pipeline.tracking import client_for
from pipeline.train.driver import TrainOutcome, train

LINKED_FORMAT = "cvae-linked/1"
LINKED_FILE = "linked.json"  # in the parent version's run: what generation needs to find and join the children
LINKED_TAG = "cvae.linked"


@dataclass(frozen=True)
class LinkedOutcome:
    parent: TrainOutcome
    children: dict[str, TrainOutcome]


def parent_config(config: Config, tables: LinkedTables) -> Config:
    """The parent table's flat job: its rows plus one count column per child; the key a fresh identifier.
    Without `data.conditions` it conditions on the counts, so a proportional plan draws them as training had them."""
    data = config.data
    counts = [count_column(name) for name in data.children]
    flat = DataConfig.model_validate({
        "path": tables.path("train", tables.parent), "conditions": list(data.conditions) or counts,
        "columns": {**data.columns, data.key: "id"}, "exclude": list(data.exclude),
        "storage_options": dict(config.train.storage_options), "holdout_fraction": 0.0, "rules": list(data.rules),
        "rules_found": data.rules_found, "rules_breaking": data.rules_breaking})
    return config.model_copy(update={"data": flat})


def child_config(config: Config, tables: LinkedTables, name: str) -> Config:
    """A child table's flat job: its rows, conditioned row by row on the parent's columns and the sequence place."""
    spec, layout = config.data.children[name], tables.children[name]
    flat = DataConfig.model_validate({
        "path": tables.path("train", name), "context": [*layout.context, *(PREVIOUS_PREFIX + c for c in layout.history), POSITION, LENGTH],
        "columns": dict(spec.columns), "exclude": [c for c in spec.exclude if c != spec.foreign_key],
        "storage_options": dict(config.train.storage_options), "holdout_fraction": 0.0,
        "rules_found": config.data.rules_found})
    return config.model_copy(update={
        "data": flat,
        # the latent mixture is fitted per condition combination: a row-by-row context has none to fit
        "model": config.model.model_copy(update={"latent_mixture": 0}),
        "mlflow": config.mlflow.model_copy(update={"model_name": f"{config.mlflow.model_name}.{name}"}),
        "train": config.train.model_copy(update={"name": f"{config.train.name}.{name}"})})


def train_linked(config: Config, restart: bool = False) -> LinkedOutcome:
    """Derive the flat tables, train the parent model, then each child model; link them in the parent's run."""
    tables = derived_tables(config)
    console.progress(f"training the parent table {tables.parent!r}")
    parent = train(parent_config(config, tables), restart)
    children = {}
    for name in config.data.children:
        console.progress(f"training the child table {name!r} ({tables.path('train', name)})")
        children[name] = train(child_config(config, tables, name), restart)
    record = {"format": LINKED_FORMAT, "parent": tables.parent, "key": tables.key, "parents": tables.parents,
              "children": {name: {"model": outcome.model_uri, **tables.children[name].to_dict()}
                           for name, outcome in children.items()}}
    client = client_for(absolute_tracking_uri(config.mlflow.tracking_uri))
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / LINKED_FILE
        path.write_text(json.dumps(record, indent=1))
        client.log_artifact(parent.run_id, str(path))
    links = json.dumps({name: outcome.model_uri for name, outcome in children.items()})
    client.set_tag(parent.run_id, LINKED_TAG, links)
    client.set_model_version_tag(config.mlflow.model_name, parent.version, LINKED_TAG, links)
    console.result(f"linked model {parent.model_uri}: children " +
                   ", ".join(f"{name} -> {outcome.model_uri}" for name, outcome in children.items()))
    return LinkedOutcome(parent, children)


def linked_record(client: Any, model_version_uri: str) -> dict[str, Any] | None:
    """The parent version's `linked.json`, or None for a model trained as a single table."""
    name, version = model_version_uri.removeprefix("models:/").split("/")
    run_id = client.get_model_version(name, version).run_id
    if LINKED_TAG not in client.get_run(run_id).data.tags:
        return None
    with tempfile.TemporaryDirectory() as scratch:
        return json.loads(Path(client.download_artifacts(run_id, LINKED_FILE, scratch)).read_text())
