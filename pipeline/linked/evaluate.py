"""Linked tables, evaluation: each generated table against the held-out parents and all their children (rows no
model and no encoder statistic saw), and what only linked tables have: references, order, children per parent,
and the sequence's coherence from one row to the next.

- Fidelity and detection per table, as the flat evaluator scores them (pipeline/evaluate/metrics.py), keys left out.
- `references`: the share of child rows whose foreign key names a generated parent (must be 1.0).
- `in_order`: the share of parents whose children keep `order_by` (must be 1.0).
- `children_per_parent`: 1 - KS distance between the synthetic and held-out counts (childless parents included).
- `coherence`: how consecutive children of one parent relate, beside the held-out sequences: for each categorical
  column the share of consecutive rows that keep the value, for each numeric one the step's distribution (1 - KS);
  averaged. A model that draws each child on its own keeps a plane's destination as often as chance does.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import console
from pipeline.codec.arrow import plain
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.evaluate.driver import column_kinds
from pipeline.evaluate.metrics import detection, ks_complement, prepare, quality
from pipeline.linked.tables import read_sources, table_name
from pipeline.registry import default_model_uri, resolve_model_uri
from pipeline.storage import absolute, absolute_tracking_uri, parquet_files, redact
from pipeline.tracking import check_tracking, client_for, log_metrics

REPORT_FILE = "linked_evaluation.json"


def read_output(root: str, table: str, storage_options: dict[str, Any]) -> pa.Table:
    fs, files = parquet_files(f"{root.rstrip('/')}/{table}", storage_options)
    pieces = []
    for path in files:
        with fs.open(path, "rb") as handle:
            pieces.append(pq.read_table(handle))
    return pa.concat_tables(pieces)


def scored(real: pa.Table, synthetic: pa.Table, keys: set[str], seed: int) -> dict[str, Any]:
    """Fidelity (binned marginals and pairs) and detection of one table, keys left out."""
    kinds = column_kinds(pa.schema([f for f in real.schema if f.name not in keys]), {})
    real_sample, synthetic_sample = prepare([real, synthetic], kinds)
    fidelity = quality(real_sample, synthetic_sample)
    return {"quality": fidelity["overall"], "column_shapes": fidelity["column_shapes"],
            "column_pair_trends": fidelity["column_pair_trends"],
            "detection": detection(real_sample, synthetic_sample, seed)}


def per_parent(children: pa.Table, foreign_key: str, parent_keys: pa.Array) -> np.ndarray:
    """Children per parent (0 for a parent without children)."""
    index = pc.index_in(plain(children.column(foreign_key)).cast(pa.string()), plain(parent_keys).cast(pa.string()))
    owned = index.drop_null().to_numpy(zero_copy_only=False)
    return np.bincount(owned, minlength=len(parent_keys))


def coherence(children: pa.Table, foreign_key: str, columns: list[str]) -> dict[str, float]:
    """Per column: the share of consecutive children of one parent that keep the value (categories), or the
    median step (numbers, times as their storage), over every pair of consecutive rows."""
    if children.num_rows < 2:
        return {}
    owner = plain(children.column(foreign_key)).cast(pa.string())
    same = pc.equal(owner.slice(1), owner.slice(0, len(owner) - 1)).to_numpy(zero_copy_only=False)
    out = {}
    for name in columns:
        values = plain(children.column(name))
        if pa.types.is_string(values.type) or pa.types.is_boolean(values.type) or \
                pa.types.is_large_string(values.type):
            kept = pc.equal(values.slice(1), values.slice(0, len(values) - 1)).fill_null(False)
            out[name] = kept.to_numpy(zero_copy_only=False)[same]
        else:
            numbers = values.cast(pa.int64()) if pa.types.is_temporal(values.type) else values
            array = numbers.cast(pa.float64()).to_numpy(zero_copy_only=False)
            out[name] = np.diff(array)[same]
    return out


def coherence_score(real: dict[str, np.ndarray], synthetic: dict[str, np.ndarray]) -> dict[str, float]:
    """1 - |difference of the kept shares| per category column, 1 - KS of the steps per numeric one."""
    scores = {}
    for name, steps in real.items():
        if name not in synthetic or not len(steps) or not len(synthetic[name]):
            continue
        if steps.dtype == bool:
            scores[name] = float(1.0 - abs(steps.mean() - synthetic[name].mean()))
        else:
            scores[name] = ks_complement(steps.astype(float), synthetic[name].astype(float))
    return scores


def evaluate_linked(config: Config) -> dict[str, Any]:
    """Scores the linked dataset at `evaluate.synthetic` (default: the parent model's default output) and logs
    them to a run in the parent model's experiment."""
    data, seed = config.data, config.evaluate.seed
    tracking_uri = absolute_tracking_uri(config.mlflow.tracking_uri)
    check_tracking(tracking_uri, must_exist=True)
    client = client_for(tracking_uri)
    model_uri, _ = resolve_model_uri(client, config.generate.model_uri or default_model_uri(config.mlflow))
    root = absolute(config.evaluate.synthetic or config.generate.output_for(model_uri))
    options = config.generate.storage_options
    parent, children, holdout = read_sources(config)
    if holdout.sum() == 0:
        raise UserError("data.holdout_fraction is 0: no held-out parents to judge the linked tables against; "
                        "train with data.holdout_fraction above 0")
    parent_name = table_name(data.path)
    synthetic_parent = read_output(root, parent_name, options)
    real_parent = parent.filter(pa.array(holdout))
    report: dict[str, Any] = {"tables": {}, "linked": {}}
    if len(parent.column_names) > 1:
        report["tables"][parent_name] = scored(real_parent, synthetic_parent, {data.key}, seed)
    held_keys = set(real_parent.column(data.key).to_pylist())
    for name, spec in data.children.items():
        child = children[name]
        real = child.filter(pc.is_in(child.column(spec.foreign_key), value_set=pa.array(list(held_keys),
                                                                                           child.schema.field(spec.foreign_key).type)))
        synthetic = read_output(root, name, options)
        report["tables"][name] = scored(real, synthetic, {spec.foreign_key}, seed)
        order = [(spec.foreign_key, "ascending"), *[(c, "ascending") for c in spec.order_by]]
        real = real.take(pc.sort_indices(real, sort_keys=order))
        keys = synthetic_parent.column(data.key)
        references = pc.is_in(synthetic.column(spec.foreign_key), value_set=keys).to_numpy(zero_copy_only=False)
        counts = per_parent(synthetic, spec.foreign_key, keys)
        real_counts = per_parent(real, spec.foreign_key, real_parent.column(data.key))
        columns = [c for c in child.column_names if c != spec.foreign_key]
        kept = coherence_score(coherence(real, spec.foreign_key, columns),
                               coherence(synthetic, spec.foreign_key, columns))
        report["linked"][name] = {
            "references": float(references.mean()) if len(references) else 1.0,
            "in_order": _in_order(synthetic, spec.foreign_key, spec.order_by),
            "children_per_parent": ks_complement(real_counts.astype(float), counts.astype(float)),
            "mean_children": {"synthetic": float(counts.mean()), "holdout": float(real_counts.mean())},
            "coherence": float(np.mean(list(kept.values()))) if kept else None, "coherence_columns": kept}
    _log(client, model_uri, root, report)
    for table, scores in report["tables"].items():
        detected = f"{scores['detection']:.3f}" if scores["detection"] is not None else "n/a"
        console.result(f"{table}: quality {scores['quality']:.3f}  detection {detected}  (against held-out parents)")
    for name, linked in report["linked"].items():
        coherent = f"{linked['coherence']:.3f}" if linked["coherence"] is not None else "n/a"
        console.result(f"{name}: references {linked['references']:.1%}  in order {linked['in_order']:.1%}  "
                       f"children per parent {linked['children_per_parent']:.3f} (mean {linked['mean_children']['synthetic']:.1f}"
                       f" vs {linked['mean_children']['holdout']:.1f})  coherence {coherent}")
    return report


def _in_order(children: pa.Table, foreign_key: str, order_by: list[str]) -> float:
    """The share of parents whose children, as written, keep `order_by` (the first column non-decreasing)."""
    if not order_by or children.num_rows < 2:
        return 1.0
    owner = plain(children.column(foreign_key)).cast(pa.string())
    values = plain(children.column(order_by[0]))
    values = (values.cast(pa.int64()) if pa.types.is_temporal(values.type) else values).cast(pa.float64())
    steps = np.diff(values.to_numpy(zero_copy_only=False))
    same = pc.equal(owner.slice(1), owner.slice(0, len(owner) - 1)).to_numpy(zero_copy_only=False)
    broken = set(owner.slice(1).filter(pa.array(same & (steps < 0))).to_pylist())
    return 1.0 - len(broken) / max(len(set(owner.to_pylist())), 1)


def _log(client: Any, model_uri: str, root: str, report: dict[str, Any]) -> None:
    name, version = model_uri.removeprefix("models:/").split("/")
    experiment = client.get_run(client.get_model_version(name, version).run_id).info.experiment_id
    run = client.create_run(experiment, run_name=f"evaluate-linked-{name}-v{version}",
                            tags={"cvae.model_uri": model_uri, "cvae.synthetic": redact(root)})
    metrics = {}
    for table, scores in report["tables"].items():
        metrics.update({f"{table}.{key}": value for key, value in scores.items() if isinstance(value, float)})
    for table, linked in report["linked"].items():
        metrics.update({f"{table}.{key}": value for key, value in linked.items() if isinstance(value, float)})
    log_metrics(client, run.info.run_id, metrics, step=0)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / REPORT_FILE
        path.write_text(json.dumps(report, indent=1, default=float))
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id)
