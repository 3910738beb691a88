"""Generation: a registered model -> a conditional synthetic table in Parquet parts, written by Ray Data actors.

Part k holds plan rows [k * rows_per_part, (k+1) * rows_per_part) and is drawn
with its own seed derived from (generate.seed, k): its bytes depend only on
(seed, k, plan, model version), never on how many actors ran or in which order.
A rerun skips parts already in the journal, so a crashed job resumes and ends
byte-identical to an uninterrupted one.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version as package_version
from typing import Any, Iterator

import numpy as np
import ray

from pipeline import console
from pipeline.artifact import load_artifact_files, privacy_guarantee
from pipeline.cluster import ensure_ray
from pipeline.config import Config
from pipeline.codec import TableEncoder
from pipeline.generate.plan import ConditionPlan, build_plan
from pipeline.registry import default_model_uri, fetch_model, registered_name, resolve_model_uri
from pipeline.tracking import check_tracking, client_for, log_metrics, tagged_run
from pipeline.generate.part_writer import PartWriter, WriterSettings, write_with_actors, writer_pool
from pipeline.generate.sink import DatasetManifest, Sink, failpoint
from pipeline.storage import absolute, absolute_tracking_uri, redact

GENERATION_TAG = "cvae.generation_id"
PROGRESS_EVERY_S = 5.0


@dataclass(frozen=True)
class GenerateOutcome:
    output: str
    model_uri: str
    rows: int
    parts: int
    run_id: str | None
    skipped: bool
    actor_peak_rss_mb: float = 0.0
    seconds_to_first_part: float = 0.0  # from the command's start: Ray, writers, model loads (the start-up cost)


def generate(config: Config, overwrite: bool = False) -> GenerateOutcome:
    began = time.perf_counter()
    gen = config.generate
    tracking_uri = absolute_tracking_uri(config.mlflow.tracking_uri)
    check_tracking(tracking_uri, must_exist=True)
    client = client_for(tracking_uri)
    requested = gen.model_uri or default_model_uri(config.mlflow)
    model_uri, version = resolve_model_uri(client, requested)  # once: a moved alias cannot mix versions
    model_files = fetch_model(model_uri)
    _, encoder = load_artifact_files(model_files)
    plan = build_plan(gen, encoder, gen.storage_options)
    encoder.check_capacity(plan.num_rows)
    num_parts = math.ceil(plan.num_rows / gen.rows_per_part)
    output = absolute(gen.output_for(model_uri))
    spec = {"format": "cvae-synthetic/1", "model": model_uri, "seed": gen.seed, "rows_per_part": gen.rows_per_part,
            "precision": gen.precision,
            "num_rows": plan.num_rows, "plan": plan.fingerprint(), "code_version": code_version()}
    sink = Sink(output, gen.storage_options)
    if sink.claim(spec, overwrite) == "done":
        console.result(f"{redact(output)} already holds this dataset ({plan.num_rows:,} rows from {model_uri}); "
                       "nothing to do")
        return GenerateOutcome(output, model_uri, plan.num_rows, num_parts, None, skipped=True)

    failpoint("after_spec")
    run_id = generation_run(client, model_uri, version, output, spec, config)
    started = time.perf_counter()
    done = sink.completed_parts()
    todo = [part for part in range(num_parts) if part not in done]
    console.progress(f"generating {plan.num_rows:,} rows in {num_parts} part(s) from {model_uri} into "
                     f"{redact(output)} ({len(done)} already done)")
    try:
        actor_rss, first_part = _write_parts(config, model_files, plan, output, todo,
                                             plan.num_rows - sum(e["rows"] for e in done.values())) \
            if todo else (0.0, time.perf_counter())
        parts = sink.completed_parts()
        missing = sorted(set(range(num_parts)) - set(parts))
        if missing:
            raise RuntimeError(f"parts {missing[:5]} were not written; rerun the same command to finish them")
    except Exception:
        client.set_terminated(run_id, status="FAILED")  # the rerun finds this run by its tag and continues it
        raise
    seconds = time.perf_counter() - started
    failpoint("before_manifest")
    sink.finish(_manifest(requested, model_uri, version, run_id, config, plan, encoder,
                          [parts[k] for k in range(num_parts)], privacy_guarantee(model_files)))
    new_rows = sum(parts[k]["rows"] for k in todo)
    log_metrics(client, run_id, {"rows": plan.num_rows, "parts": num_parts, "seconds": seconds,
                                 "rows_per_s": new_rows / seconds if seconds else 0.0,
                                 "actor_peak_rss_mb": actor_rss, "seconds_to_first_part": first_part - began},
                step=0)
    client.set_terminated(run_id)
    console.result(f"wrote {plan.num_rows:,} rows in {num_parts} part(s) to {redact(output)} from {model_uri} "
                   f"in {seconds:.1f}s; mlflow run {run_id}")
    return GenerateOutcome(output, model_uri, plan.num_rows, num_parts, run_id, skipped=False,
                           actor_peak_rss_mb=actor_rss, seconds_to_first_part=first_part - began)


def _write_parts(config: Config, model_files: dict[str, bytes], plan: ConditionPlan, output: str, todo: list[int],
                 rows_todo: int) -> tuple[float, float]:
    """Writes the parts in `todo`, printing progress; returns the largest writer's peak RSS (MB) and when the first
    part was done (perf_counter)."""
    started, rows, count, peak_rss, shown, first = time.perf_counter(), 0, 0, 0.0, 0.0, 0.0
    for row in _written(config, model_files, plan, output, todo, rows_todo):
        rows += int(row["rows"])
        count += 1
        first = first or time.perf_counter()
        peak_rss = max(peak_rss, float(row["peak_rss_mb"]))
        now = time.perf_counter()
        if now - shown >= PROGRESS_EVERY_S or count == len(todo):  # periodic lines, not one per part
            shown, rate = now, rows / (now - started)
            console.progress(f"{count}/{len(todo)} parts  {rows:,}/{rows_todo:,} rows  {rate:,.0f} rows/s  "
                             f"ETA {(rows_todo - rows) / rate if rate else 0:.0f}s")
    return peak_rss, first


def _written(config: Config, model_files: dict[str, bytes], plan: ConditionPlan, output: str, todo: list[int],
             rows_todo: int) -> Iterator[dict[str, Any]]:
    """One result row per written part. A small CPU job is written by this process (no Ray, no actors to start:
    its fixed cost is the model load); anything bigger by an actor pool sized to the cluster."""
    gen = config.generate
    settings = WriterSettings(model_files, plan, output, gen.storage_options, gen.seed, gen.rows_per_part, gen.use_gpu,
                              gen.precision)
    if rows_todo <= gen.in_process_rows and not gen.use_gpu:
        writer = PartWriter(settings, threads=len(os.sched_getaffinity(0)))
        for part in todo:
            done = writer({"part": np.array([part])})
            yield {key: values[0] for key, values in done.items()}
        return
    ensure_ray(config.ray.address)
    pool = writer_pool(gen.num_workers, gen.cpus_per_worker, gen.use_gpu, ray.cluster_resources())
    yield from write_with_actors(todo, pool, settings, gen.cpus_per_worker)


def generation_run(client: Any, model_uri: str, version: str, output: str, spec: dict[str, Any],
                    config: Config) -> str:
    """One MLflow run per dataset, in the model's experiment; a resumed job continues it."""
    name = registered_name(model_uri)
    experiment_id = client.get_run(client.get_model_version(name, version).run_id).info.experiment_id
    generation_id = hashlib.sha256(json.dumps([output, spec], sort_keys=True).encode()).hexdigest()[:16]
    params = {key: value for key, value in config.flat().items() if key.startswith("generate.")}
    run_id, _ = tagged_run(client, experiment_id, GENERATION_TAG, generation_id, f"generate-{name}-v{version}", params,
                           tags={"cvae.model_uri": model_uri, "cvae.model_version": version,
                                 "cvae.output": redact(output)})
    return run_id


def _manifest(requested: str, model_uri: str, version: str, run_id: str, config: Config, plan: ConditionPlan,
              encoder: TableEncoder, parts: list[dict[str, Any]], privacy: dict | None) -> DatasetManifest:
    gen = config.generate
    return DatasetManifest(
        model_uri=requested, model_version_uri=model_uri, model_version=version, run_id=run_id, seed=gen.seed,
        conditions=json.loads(redact(json.dumps(gen.conditions, default=str))),
        plan_fingerprint=plan.fingerprint(), num_rows=plan.num_rows, rows_per_part=gen.rows_per_part, parts=parts,
        schema=[{"name": f.name, "type": str(f.type)} for f in encoder.schema],
        excluded_columns=encoder.excluded, generated_ids=encoder.id_columns,
        personal_columns=encoder.personal_columns, column_formats=encoder.formats(),
        rules=encoder.rules.describe(), training_rows_left_out=encoder.rules.left_out,
        value_protection=encoder.protection(), differential_privacy=privacy,
        arrow_schema=base64.b64encode(encoder.schema.serialize().to_pybytes()).decode("ascii"),
        created_at=datetime.now(timezone.utc).isoformat(), code_version=code_version())


def code_version() -> str:
    return f"cvae-synth {package_version('cvae-synth')}"
