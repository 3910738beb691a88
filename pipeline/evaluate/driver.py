"""Evaluation: a synthetic table against the real one, streamed with Ray Data, reported to MLflow.

Both tables are read once by Ray Data workers. Each batch yields exact column
statistics (null counts, bounds, categories; for the synthetic side the values
outside the real bounds or categories) and a seeded sample picked by Ray's
deterministic row hash, so the cost of scoring is bounded by
`evaluate.sample_rows` whatever the table size, and a rerun scores the same rows.
The real table is split exactly as training split it (the training run's recorded
`data.holdout_fraction` and `train.seed`, else the config's): fidelity and
utility are judged on the holdout the model never saw, privacy compares
synthetic rows' distances to training records with the holdout's.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.exceptions import MlflowException

from pipeline import console
from pipeline.cluster import ensure_ray
from pipeline.config import Config, DataConfig
from pipeline.codec import infer_kind
from pipeline.codec.kinds import PERSONAL_ROLES
from pipeline.errors import UserError
from pipeline.evaluate.formats import as_typed, format_validity, typed_columns
from pipeline.evaluate.html import render
from pipeline.evaluate.rules import rule_validity
from pipeline.evaluate.metrics import (MIN_GROUP_ROWS, ColumnStats, Sample, detection, invalid_counts, per_condition,
                                      prepare, privacy, quality, utility)
from pipeline.registry import default_model_uri, registered_name, resolve_model_uri
from pipeline.tracking import check_tracking, client_for, experiment_id, log_metrics, tagged_run
from pipeline.generate.sink import MANIFEST, REPORT_PAGE, SPEC, SUCCESS, DatasetManifest, Sink
from pipeline.rowhash import ROW_HASH, in_holdout
from pipeline.source import check_table, parquet_footer, read_table
from pipeline.storage import absolute, absolute_tracking_uri, digest, parquet_files, redact

EVALUATION_TAG = "cvae.evaluation_id"
# 2: personal columns judged by format only, the HTML page; 3: dates, times and numbers held in strings scored as
# what they hold, detection. A finished evaluation of another format is not reused.
REPORT_FORMAT = "cvae-evaluation/3"
METRIC_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. :/]")  # what MLflow refuses in a metric name, e.g. "Culmen Length (mm)"
MIN_HOLDOUT_ROWS = 500
SAMPLE_SEED_OFFSET = 0x5EED


@dataclass(frozen=True)
class Split:
    """How training cut its holdout: the evaluator must cut the very same rows."""
    seed: int
    holdout_fraction: float
    source: str


@dataclass(frozen=True)
class EvaluateOutcome:
    run_id: str
    quality: float
    report: dict[str, Any]
    promoted: bool


def column_kinds(schema: pa.Schema, overrides: dict[str, str]) -> dict[str, str]:
    """numeric | categorical | list per column, as the encoder would see it."""
    kinds = {}
    for field in schema:
        kind = infer_kind(field, overrides.get(field.name))
        kinds[field.name] = "numeric" if kind in ("integer", "continuous") else kind
    return kinds


def scored_kinds(schema: pa.Schema, data: DataConfig, manifest: DatasetManifest | None) -> dict[str, str]:
    """The columns fidelity is judged on: not those left out (`data.exclude`), not identifiers nor personal data
    (fresh values by design, judged by their format instead: the manifest's `generated_ids` and
    `personal_columns`, or `data.columns.NAME: id` or a personal-data role)."""
    ids = set(manifest.generated_ids if manifest else []) | {name for name, kind in data.columns.items() if kind == "id"}
    excluded = set(data.exclude) | set(manifest.excluded_columns if manifest else [])
    fresh = excluded | ids | set(personal_columns(schema, data, manifest))
    return column_kinds(pa.schema([field for field in schema if field.name not in fresh]), data.columns)


def personal_columns(schema: pa.Schema, data: DataConfig, manifest: DatasetManifest | None) -> list[str]:
    """The real table's columns a model draws from Faker (the manifest's, or the roles `data.columns` gives)."""
    named = set(manifest.personal_columns if manifest else []) | {
        name for name, kind in data.columns.items() if kind in PERSONAL_ROLES}
    return [name for name in schema.names if name in named]


@functools.lru_cache(maxsize=1)
def _parsed_stats(text: str) -> ColumnStats:
    """The real table's statistics, parsed once per worker process instead of once per batch."""
    return ColumnStats.from_dict(json.loads(text))


def summarize_batch(batch: pa.Table, kinds: dict[str, str], fractions: dict[str, float], split_seed: int,
                    holdout_fraction: float, sample_seed: int, real_stats: str | None) -> pa.Table:
    """Ray Data map: one output row per batch with its column statistics, invalid-value counts and samples."""
    hashes = batch.column(ROW_HASH).to_numpy()
    table = batch.drop_columns([ROW_HASH]).select(list(kinds))
    invalid = invalid_counts(table, kinds, _parsed_stats(real_stats)) if real_stats else {}
    holdout = in_holdout(hashes, split_seed, holdout_fraction)
    row = {"stats": [json.dumps(ColumnStats.of_batch(table, kinds).to_dict())], "invalid": [json.dumps(invalid)]}
    for side, fraction in fractions.items():
        rows = holdout if side == "holdout" else ~holdout
        picked = table.filter(pa.array(rows & in_holdout(hashes, sample_seed, fraction)))
        sink = io.BytesIO()
        pq.write_table(picked, sink)
        row[side] = [sink.getvalue()]
    return pa.table(row)


def _stream(fs: Any, files: list[str], kinds: dict[str, str], fractions: dict[str, float], split: Split,
            sample_seed: int, real_stats: ColumnStats | None) -> tuple[ColumnStats, dict[str, int], dict[str, pa.Table]]:
    """(merged statistics, invalid counts, samples by side) for one table, in one streaming pass."""
    summaries = read_table(fs, files, list(kinds)).map_batches(
        summarize_batch, batch_format="pyarrow", zero_copy_batch=True,
        fn_kwargs={"kinds": kinds, "fractions": fractions, "split_seed": split.seed,
                   "holdout_fraction": split.holdout_fraction, "sample_seed": sample_seed + SAMPLE_SEED_OFFSET,
                   "real_stats": json.dumps(real_stats.to_dict()) if real_stats else None})
    stats, invalid = ColumnStats(), {name: 0 for name in kinds}
    pieces: dict[str, list[pa.Table]] = {side: [] for side in fractions}
    for row in summaries.iter_rows():
        stats.merge(ColumnStats.from_dict(json.loads(row["stats"])))
        for name, count in json.loads(row["invalid"]).items():
            invalid[name] += count
        for side in fractions:
            pieces[side].append(pq.read_table(io.BytesIO(row[side])))
    return stats, invalid, {side: pa.concat_tables(tables, promote_options="permissive") for side, tables in pieces.items()}


def _synthetic_dataset(uri: str, storage_options: dict[str, Any]) -> DatasetManifest | None:
    """The cvae manifest of a finished dataset; None for a plain Parquet table; an error for an unfinished one."""
    sink = Sink(uri, storage_options)
    sink.fs.invalidate_cache()  # actors may have just written the parts this process lists next
    if not sink.exists(SPEC) and not sink.exists(MANIFEST):
        return None
    if not sink.exists(SUCCESS):
        raise UserError(f"evaluate.synthetic {redact(uri)} is an unfinished cvae dataset (no {SUCCESS}); rerun the same "
                        "cvae generate to complete it, then evaluate")
    return sink.manifest()


def _footer_rows(fs: Any, files: list[str], real: pa.Schema, kinds: dict[str, str], overrides: dict[str, str]) -> int:
    rows = 0
    for path in files:
        schema, metadata = parquet_footer(fs, path, key="evaluate.synthetic")
        rows += metadata.num_rows
        missing = [name for name in kinds if name not in schema.names]
        if missing:
            raise UserError(f"evaluate.synthetic: {redact(path)} lacks the real table's column(s) {', '.join(missing)}; "
                            "evaluate a table generated from a model of this data")
        mismatched = [f"{name} ({schema.field(name).type} vs {real.field(name).type})" for name in kinds
                      if column_kinds(pa.schema([schema.field(name)]), overrides)[name] != kinds[name]]
        if mismatched:
            raise UserError(f"evaluate.synthetic: {redact(path)} has column types unlike the real table's: "
                            f"{', '.join(mismatched)}; cast them to the real types")
    if rows == 0:
        raise UserError("evaluate.synthetic holds no rows; generate some first")
    return rows


def training_split(client: Any, manifest: DatasetManifest | None, config: Config) -> Split:
    """The split recorded by the model's training run when it trained on this table, else the config's."""
    own = Split(config.train.seed, config.data.holdout_fraction, "config (data.holdout_fraction, train.seed)")
    if not manifest or not manifest.model_version:
        return own
    name = registered_name(manifest.model_version_uri)
    try:
        run = client.get_run(client.get_model_version(name, str(manifest.model_version)).run_id)
    except MlflowException:
        return own
    params = run.data.params
    if params.get("data.path") != redact(config.data.path) or "train.seed" not in params:
        return own
    split = Split(int(params["train.seed"]), float(params["data.holdout_fraction"]), f"training run {run.info.run_id}")
    if (split.seed, split.holdout_fraction) != (own.seed, own.holdout_fraction):
        console.progress(f"holdout: the model trained with data.holdout_fraction={split.holdout_fraction} and "
              f"train.seed={split.seed}; evaluating on that holdout, not the config's")
    return split


def _fraction(sample_rows: int, rows: float) -> float:
    return min(1.0, sample_rows / rows) if rows > 0 else 1.0


def evaluate(config: Config) -> EvaluateOutcome:
    """Score `evaluate.synthetic` (default: where `cvae generate` with these settings writes) against `data.path`;
    log the report to MLflow."""
    ev, data = config.evaluate, config.data
    synthetic_uri = absolute(ev.synthetic or default_synthetic(config))
    synthetic_options = config.generate.storage_options
    manifest = _synthetic_dataset(synthetic_uri, synthetic_options)
    fs, files = parquet_files(data.path, data.storage_options)
    real_rows, real_schema = check_table(fs, files, data)
    kinds = scored_kinds(real_schema, data, manifest)
    target = ev.target or data.conditions[0]
    if target not in kinds or kinds[target] == "list":
        raise UserError(f"evaluate.target {target!r} is not a scalar column of the real table; choose one of "
                        f"{', '.join(name for name, kind in kinds.items() if kind != 'list')}")
    synthetic_fs, synthetic_files = parquet_files(synthetic_uri, synthetic_options, key="evaluate.synthetic")
    synthetic_rows = _footer_rows(synthetic_fs, synthetic_files, real_schema, kinds, data.columns)
    if ev.promote_alias and not (manifest and manifest.model_version):
        raise UserError("evaluate.promote_alias needs a cvae dataset with a manifest naming its model version; "
                        "evaluate the output of cvae generate or unset evaluate.promote_alias")
    tracking_uri = absolute_tracking_uri(config.mlflow.tracking_uri)
    check_tracking(tracking_uri)
    client = client_for(tracking_uri)
    split = training_split(client, manifest, config)
    experiment, evaluation_id = _evaluation_identity(client, config, manifest, synthetic_uri, synthetic_fs,
                                                     synthetic_files, fs, files)
    done = _finished_evaluation(client, experiment, evaluation_id)
    if done is not None:  # the same dataset, table and settings scored before: its report, not a second pass
        run_id, report = done
        console.progress(f"this dataset was evaluated before with these settings (run {run_id}): its report")
        promoted = promote(client, config, manifest, report["quality"]["overall"], run_id)
        print_summary(report, run_id)
        return EvaluateOutcome(run_id, report["quality"]["overall"], report, promoted)

    ensure_ray(config.ray.address)
    holdout_rows = real_rows * split.holdout_fraction
    fractions = {"train": _fraction(ev.sample_rows, real_rows - holdout_rows)}
    if holdout_rows:
        fractions["holdout"] = _fraction(ev.sample_rows, holdout_rows)
    # personal-data columns ride along for format validity only: their values are fresh by design
    streamed = kinds | {name: "categorical" for name in personal_columns(real_schema, data, manifest)}
    real_stats, _, real_samples = _stream(fs, files, streamed, fractions, split, ev.seed, None)
    synthetic_stats, invalid, synthetic_samples = _stream(
        synthetic_fs, synthetic_files, streamed, {"synthetic": _fraction(ev.sample_rows, synthetic_rows)},
        Split(0, 0.0, "none: every synthetic row"), ev.seed, real_stats)
    formats = format_validity(real_samples["train"], real_samples.get("holdout"), synthetic_samples["synthetic"])
    rules = rule_validity(real_samples["train"], real_samples.get("holdout"), synthetic_samples["synthetic"])
    # dates, times and numbers held in strings are scored as what they hold, not as categories
    typed = typed_columns(real_samples["train"], kinds)
    invalid = {name: count for name, count in invalid.items() if name in kinds and name not in typed}
    kinds = kinds | {name: "numeric" for name in typed}
    real_samples = {side: as_typed(table, typed) for side, table in real_samples.items()}
    report, reference, synthetic = build_report(real_samples, as_typed(synthetic_samples["synthetic"], typed), kinds,
                                                data.conditions, target, ev.privacy_rows, ev.seed)
    report["validity"] = validity(real_stats, synthetic_stats, invalid, kinds)
    report |= {"formats": formats, "rules": rules, "typed_columns": {
        name: ", ".join(fmt.describe() for fmt in fmts) for name, fmts in typed.items()}}
    report |= {"format": REPORT_FORMAT, "synthetic": redact(synthetic_uri), "real": redact(data.path),
               "rows": {"real": real_rows, "synthetic": synthetic_rows, **{f"sampled_{side}": table.num_rows for side, table
                                                                          in {**real_samples, **synthetic_samples}.items()}},
               "split": {"holdout_fraction": split.holdout_fraction, "seed": split.seed, "from": split.source},
               "model_version_uri": (manifest.model_version_uri or None) if manifest else None,
               "generation_run_id": (manifest.run_id or None) if manifest else None,
               "differential_privacy": manifest.differential_privacy if manifest else None}
    run_id = _evaluation_run(client, config, manifest, synthetic_uri, experiment, evaluation_id)
    try:
        figures = log_report(client, run_id, report, reference, synthetic, kinds, data.conditions)
        promoted = promote(client, config, manifest, report["quality"]["overall"], run_id)
        page = render(report, figures, gate_words(config, manifest, promoted))
        client.log_text(run_id, page, "evaluation/report.html")
        beside = _page_beside(synthetic_uri, synthetic_options, page) if manifest else None
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    print_summary(report, run_id)
    console.result(f"report to look at: {f'{beside} and ' if beside else ''}evaluation/report.html in MLflow run "
                   f"{run_id}")
    return EvaluateOutcome(run_id, report["quality"]["overall"], report, promoted)


def build_report(real: dict[str, pa.Table], synthetic_table: pa.Table, kinds: dict[str, str], conditions: list[str],
                 target: str, privacy_rows: int, seed: int) -> tuple[dict[str, Any], Sample, Sample]:
    """Fidelity (against the holdout when it has enough rows), per-condition fidelity, utility and privacy;
    with the reference and synthetic samples they were scored on, for the plots."""
    holdout_table = real.get("holdout")
    has_holdout = holdout_table is not None and holdout_table.num_rows >= MIN_HOLDOUT_ROWS
    if not has_holdout:  # no unseen rows: a seeded fifth of the training sample stands in as the test set
        test_mask = np.random.default_rng(seed).random(real["train"].num_rows) < 0.2
        train_table, holdout_table = real["train"].filter(pa.array(~test_mask)), real["train"].filter(pa.array(test_mask))
    else:
        train_table = real["train"]
    train, holdout, synthetic = prepare([train_table, holdout_table, synthetic_table], kinds)
    reference = holdout if has_holdout else train
    fidelity = quality(reference, synthetic)
    report: dict[str, Any] = {
        "reference": "holdout" if has_holdout else "training rows (no holdout)",
        "quality": {"overall": fidelity["overall"], "column_shapes": fidelity["column_shapes"],
                    "column_pair_trends": fidelity["column_pair_trends"],
                    "overall_vs_training": quality(train, synthetic)["overall"] if has_holdout else fidelity["overall"],
                    "real_holdout_vs_training": quality(train, holdout)["overall"] if has_holdout else None},
        "columns": fidelity["columns"], "pairs": fidelity["pairs"],
        "conditions": per_condition(reference, synthetic, conditions),
        "utility": utility(train, synthetic, holdout, target, seed),
        # a classifier telling the synthetic rows from the reference, beside the training rows' own score (the
        # ceiling: real rows the model saw, told from real rows it did not)
        "detection": {"synthetic": detection(reference, synthetic, seed),
                      "training_rows": detection(holdout, train, seed) if has_holdout else None},
    }
    rng = np.random.default_rng(seed)
    report["privacy"] = privacy(train, _subsample(synthetic, privacy_rows, rng),
                                _subsample(holdout, privacy_rows, rng) if has_holdout else None)
    return report, reference, synthetic


def _subsample(sample: Sample, rows: int, rng: np.random.Generator) -> Sample:
    if sample.rows <= rows:
        return sample
    mask = np.zeros(sample.rows, dtype=bool)
    mask[rng.choice(sample.rows, rows, replace=False)] = True
    return sample.subset(mask)


def validity(real: ColumnStats, synthetic: ColumnStats, invalid: dict[str, int], kinds: dict[str, str]) -> dict[str, Any]:
    """Exact over every synthetic row: null-rate agreement, values outside the real bounds, unknown categories."""
    columns = {}
    for name, kind in kinds.items():
        real_rate = real.nulls[name] / max(real.rows, 1)
        synthetic_rate = synthetic.nulls[name] / max(synthetic.rows, 1)
        checked = kind != "categorical" or real.categories.get(name) is not None
        columns[name] = {"null_rate_real": real_rate, "null_rate_synthetic": synthetic_rate,
                         "null_rate_agreement": 1.0 - abs(real_rate - synthetic_rate),
                         ("unknown_categories" if kind == "categorical" else "out_of_bounds"):
                             invalid.get(name) if checked else None}
    bad = sum(count for count in invalid.values())
    return {"columns": columns, "invalid_values": bad,
            "null_rate_agreement": float(np.mean([c["null_rate_agreement"] for c in columns.values()]))}


def default_synthetic(config: Config) -> str:
    """`generate.output`, or the folder `cvae generate` gives the model these settings name (resolved in the
    registry: `@champion` is the version it points at now)."""
    gen = config.generate
    if gen.output:
        return gen.output
    client = client_for(absolute_tracking_uri(config.mlflow.tracking_uri))
    model_uri, _ = resolve_model_uri(client, gen.model_uri or default_model_uri(config.mlflow))
    return gen.output_for(model_uri)


def _evaluation_params(config: Config) -> dict[str, Any]:
    return {key: value for key, value in config.flat().items()
            if key.startswith("evaluate.") or key in ("data.path", "data.conditions", "data.holdout_fraction", "train.seed")}


def _evaluation_identity(client: Any, config: Config, manifest: DatasetManifest | None, synthetic_uri: str,
                         synthetic_fs: Any, synthetic_files: list[str], real_fs: Any,
                         real_files: list[str]) -> tuple[str, str]:
    """(experiment id, evaluation id): one evaluation per (synthetic dataset, real table, evaluation settings),
    the files known by their listing digest (paths, sizes, dates)."""
    if manifest and manifest.run_id:
        experiment = client.get_run(manifest.run_id).info.experiment_id
    else:
        experiment = experiment_id(client, config)
    settings = {key: value for key, value in _evaluation_params(config).items()
                if key != "evaluate.synthetic"}  # named or by default, the same table: synthetic_uri says which
    identity = [synthetic_uri, digest(synthetic_fs, synthetic_files), digest(real_fs, real_files), settings,
                REPORT_FORMAT]
    return experiment, hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _finished_evaluation(client: Any, experiment: str, evaluation_id: str) -> tuple[str, dict[str, Any]] | None:
    """(run id, report) of this evaluation's finished run, if one holds its report."""
    runs = client.search_runs([experiment], filter_string=f"tags.`{EVALUATION_TAG}` = '{evaluation_id}' and "
                                                          "attributes.status = 'FINISHED'", max_results=1)
    if not runs:
        return None
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = client.download_artifacts(runs[0].info.run_id, "evaluation/report.json", folder)
            return runs[0].info.run_id, json.loads(Path(path).read_text())
    except (MlflowException, OSError, ValueError):  # a run without its report: evaluate again
        return None


def _evaluation_run(client: Any, config: Config, manifest: DatasetManifest | None, synthetic_uri: str,
                    experiment: str, evaluation_id: str) -> str:
    """One MLflow run per evaluation (`_evaluation_identity`); a rerun reuses it."""
    params = _evaluation_params(config)
    version = (manifest.model_version or None) if manifest else None
    name = registered_name(manifest.model_version_uri if manifest else "")
    tags = {"cvae.synthetic": redact(synthetic_uri)}
    if manifest:
        tags |= {"cvae.model_uri": manifest.model_version_uri, "cvae.model_version": str(version),
                 "cvae.generation_run_id": manifest.run_id}
    run_id, _ = tagged_run(client, experiment, EVALUATION_TAG, evaluation_id,
                           f"evaluate-{name}-v{version}" if manifest else "evaluate", params, tags)
    return run_id


def headline_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The report's numbers as flat MLflow metric names."""
    metrics = {f"quality_{key}": value for key, value in report["quality"].items() if value is not None}
    metrics |= {f"shape.{METRIC_UNSAFE.sub('_', name)}": score for name, score in report["columns"].items()}
    utility_report = report["utility"]
    for side in ("trtr", "tstr"):
        metrics |= {f"utility_{side}_{key}": value for key, value in utility_report.get(side, {}).items()
                    if isinstance(value, float)}
    if "ratio" in utility_report:
        metrics["utility_ratio"] = utility_report["ratio"]
    metrics |= {f"privacy_{key}": value for key, value in report["privacy"].items()}
    found = report.get("detection", {})
    metrics |= {"detection": found.get("synthetic"), "detection_training_rows": found.get("training_rows")}
    metrics |= {"validity_invalid_values": report["validity"]["invalid_values"],
                "validity_null_rate_agreement": report["validity"]["null_rate_agreement"]}
    formats = report.get("formats", {})
    metrics |= {"format_validity": formats.get("synthetic"), "format_validity_holdout": formats.get("holdout")}
    metrics |= {f"format.{METRIC_UNSAFE.sub('_', name)}": column["synthetic"]
                for name, column in formats.get("columns", {}).items()}
    rules = report.get("rules", {})
    metrics |= {"rule_validity": rules.get("synthetic"), "rule_validity_holdout": rules.get("holdout")}
    return {key: float(value) for key, value in metrics.items() if value is not None and math.isfinite(float(value))}


def log_report(client: Any, run_id: str, report: dict[str, Any], reference: Sample, synthetic: Sample,
               kinds: dict[str, str], conditions: list[str]) -> dict[str, bytes]:
    """Metrics, report.json and the figures to the run; returns the figures as PNG bytes by artifact path."""
    from pipeline.evaluate.plots import report_figures

    log_metrics(client, run_id, headline_metrics(report), step=0)
    client.log_dict(run_id, report, "evaluation/report.json")
    guarantee = report.get("differential_privacy")
    if guarantee:  # beside the quality metrics, so runs compare on both
        client.set_tag(run_id, "privacy.epsilon", f"{guarantee['epsilon']:.6g}")
        client.set_tag(run_id, "privacy.delta", f"{guarantee['delta']:.6g}")
    figures = {}
    with tempfile.TemporaryDirectory() as folder:  # each PNG rendered once: for MLflow and for the HTML page
        for path, figure in report_figures(reference, synthetic, kinds, conditions, report):
            target = Path(folder) / path
            target.parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(target, format="png")
            figures[path] = target.read_bytes()
        client.log_artifacts(run_id, folder, "evaluation")
    return figures


def promote(client: Any, config: Config, manifest: DatasetManifest | None, score: float, run_id: str) -> bool:
    """The promotion gate: move `evaluate.promote_alias` to the evaluated version only if quality clears the bar."""
    ev = config.evaluate
    if not manifest or not manifest.model_version:
        return False
    name = registered_name(manifest.model_version_uri)
    version = str(manifest.model_version)
    client.set_model_version_tag(name, version, "cvae.quality", f"{score:.4f}")
    if not ev.promote_alias:
        return False
    promoted = score >= ev.min_quality
    client.set_tag(run_id, "cvae.promotion", f"@{ev.promote_alias} -> v{version}" if promoted else "refused")
    if promoted:
        client.set_registered_model_alias(name, ev.promote_alias, version)
        console.result(f"promoted models:/{name}/{version} to @{ev.promote_alias}: quality {score:.4f} >= "
              f"evaluate.min_quality {ev.min_quality}")
    else:
        console.result(f"not promoted: quality {score:.4f} < evaluate.min_quality {ev.min_quality}; @{ev.promote_alias} "
              "stays where it was")
    return promoted


def _page_beside(synthetic_uri: str, options: dict[str, Any], page: str) -> str | None:
    """The report page written beside a cvae dataset's parts (the sink knows its name); where that folder cannot
    be written (a read-only share), a warning: the page is in MLflow either way."""
    try:
        Sink(synthetic_uri, options).write(REPORT_PAGE, page.encode())
    except Exception as exc:  # noqa: BLE001 - any filesystem's refusal; the evaluation itself stands
        console.warn(f"the report page could not be written beside the dataset ({type(exc).__name__}: "
                     f"{redact(str(exc))[:200]}); it is in MLflow")
        return None
    return f"{redact(synthetic_uri.rstrip('/'))}/{REPORT_PAGE}"


def gate_words(config: Config, manifest: DatasetManifest | None, promoted: bool) -> str:
    ev = config.evaluate
    if not ev.promote_alias or not (manifest and manifest.model_version):
        return "none (evaluate.promote_alias not set)"
    if promoted:
        return f"passed: quality >= {ev.min_quality}, @{ev.promote_alias} moved to version {manifest.model_version}"
    return f"refused: quality < {ev.min_quality}, @{ev.promote_alias} stays where it was"


def print_summary(report: dict[str, Any], run_id: str) -> None:
    q, utility_report, private = report["quality"], report["utility"], report["privacy"]
    baseline = q["real_holdout_vs_training"]
    console.result(f"quality {q['overall']:.4f} (column shapes {q['column_shapes']:.4f}, pair trends "
          f"{q['column_pair_trends']:.4f}) against the {report['reference']}"
          + (f"; real holdout vs training rows: {baseline:.4f}" if baseline is not None else ""))
    worst = sorted(report["columns"].items(), key=lambda item: item[1])[:3]
    console.result("weakest columns: " + ", ".join(f"{name} {score:.3f}" for name, score in worst))
    found = report.get("detection") or {}
    if found.get("synthetic") is not None:
        beside = (f"; real training rows: {found['training_rows']:.3f}" if found.get("training_rows") is not None
                  else "")
        console.result(f"detection {found['synthetic']:.3f} (1 = a classifier cannot tell synthetic rows from the "
                       f"{report['reference']}, 0 = always can{beside})")
    for column, entries in report["conditions"].items():
        scored = [f"{e['value']} {e['overall']:.3f}" for e in entries if "overall" in e][:6]
        console.result(f"per {column}: " + (", ".join(scored) if scored else
                                            f"no value holds {MIN_GROUP_ROWS} rows on both sides; not scored"))
    headline = "macro_f1" if utility_report["task"] == "classification" else "r2"
    tstr, trtr = utility_report.get("tstr", {}), utility_report.get("trtr", {})
    if headline in tstr and headline in trtr:
        console.result(f"utility ({utility_report['target']}, {headline}): train on synthetic {tstr[headline]:.3f}, "
              f"train on real {trtr[headline]:.3f}")
    else:  # skipped, with the reason: a table whose target a booster cannot fit is not a failed evaluation
        reason = tstr.get("error") or trtr.get("error") or "not computed"
        console.result(f"utility ({utility_report['target']}): skipped: {reason}")
    closer = private.get("share_closer_than_holdout_p5")
    console.result(f"privacy: {private['synthetic_exact_copies']} exact copies of training rows in "
          f"{private['synthetic_rows']:,} sampled; "
          + (f"{closer:.1%} of synthetic rows closer to a training row than the holdout's 5th percentile (5% expected)"
             if closer is not None else "no holdout to compare distances with"))
    guarantee = report.get("differential_privacy")
    console.result(f"differential privacy: ({guarantee['epsilon']:.3g}, {guarantee['delta']:.2g})-DP, "
                   f"{guarantee['accountant']} accountant" if guarantee else
                   "differential privacy: none (the model was not trained with train.privacy)")
    formats = report.get("formats", {})
    if formats.get("synthetic") is not None:
        holdout = formats.get("holdout")
        worst = sorted(formats["columns"].items(), key=lambda item: item[1]["synthetic"] or 0.0)[:3]
        console.result(f"format validity {formats['synthetic']:.1%} of string values written as the real ones"
                       + (f" (real holdout: {holdout:.1%})" if holdout is not None else "") + "; lowest: "
                       + ", ".join(f"{name} {column['synthetic']:.1%}" for name, column in worst))
    rules = report.get("rules", {})
    if rules.get("synthetic") is not None:
        holdout = rules.get("holdout")
        worst = sorted(rules["rules"].items(), key=lambda item: item[1]["synthetic"] or 0.0)[:3]
        console.result(f"rule validity {rules['synthetic']:.1%} of rows keep all {len(rules['rules'])} rules the real "
                       "training rows always keep" + (f" (real holdout: {holdout:.1%})" if holdout is not None else "")
                       + "; lowest: " + ", ".join(f"{name} {shares['synthetic']:.1%}" for name, shares in worst)[:600])
    console.result(f"validity: {report['validity']['invalid_values']:,} values outside the real bounds or categories; "
          f"report logged to mlflow run {run_id}")
