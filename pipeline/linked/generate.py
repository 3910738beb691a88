"""Linked tables, generation: synthetic parents, then each parent's children, written per range of parents.

Part k holds parents [k * rows_per_part, (k+1) * rows_per_part) of the plan (`generate.num_rows` counts parents)
and all their children, one Parquet file per table:

    OUTPUT/<parent>/part-00000.parquet    parents, fresh keys
    OUTPUT/<child>/part-00000.parquet     their children: the foreign key is a generated parent's key, the
                                          rows in `order_by` order within each parent
    OUTPUT/_manifest.json, OUTPUT/_SUCCESS (last)

A parent's number of children is its generated count column; each child row is drawn from the child model given
its parent's columns and its place in the sequence. Part k's bytes depend only on (seed, k, plan, model versions),
so any number of writers, or a rerun after a crash, gives the same files.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import resource
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
import torch

from pipeline import console
from pipeline.artifact import load_artifact_files
from pipeline.cluster import ensure_ray
from pipeline.codec.arrow import plain
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.generate.driver import code_version, generation_run
from pipeline.generate.part_writer import write_with_actors, writer_pool
from pipeline.generate.plan import ConditionPlan, build_plan
from pipeline.generate.sink import JOURNAL, Sink, failpoint, part_name
from pipeline.linked.tables import LENGTH, POSITION, PREVIOUS_PREFIX, ChildLayout, count_column
from pipeline.linked.train import linked_record
from pipeline.model.sampling import part_seed, synthesize
from pipeline.registry import default_model_uri, fetch_model, resolve_model_uri
from pipeline.storage import absolute, absolute_tracking_uri, redact
from pipeline.tracking import check_tracking, client_for, log_metrics

LINKED_DATASET_FORMAT = "cvae-linked-synthetic/1"


@dataclass(frozen=True)
class ChildModel:
    layout: ChildLayout
    model_uri: str           # models:/NAME.child/VERSION
    files: dict[str, bytes]  # the registered model's files


@dataclass(frozen=True)
class LinkedWriterSettings:
    """What every linked part writer is handed, the same for the whole dataset."""
    parent_table: str
    key: str
    parent_files: dict[str, bytes]
    children: dict[str, ChildModel]
    plan: ConditionPlan
    output: str
    storage_options: dict[str, Any]
    seed: int
    rows_per_part: int
    precision: str


def child_seed(seed: int, child: str, part: int) -> int:
    """Child table `child`'s draw in part k: apart from the parents' and other children's draws."""
    return int.from_bytes(hashlib.sha256(f"cvae-linked:{seed}:{child}:{part}".encode()).digest()[:8], "little") >> 1


def draw_children(model: Any, encoder: Any, parents: pa.Table, layout: ChildLayout, counts: np.ndarray, seed: int,
                  precision: str, row_offset: int) -> tuple[pa.Table | None, np.ndarray]:
    """Each parent's `counts` children, one place in the sequence at a time for all parents together: the rows at
    place p are drawn given their parent's columns, p, the sequence's length and the row at place p - 1 (the
    `history` columns), so a sequence carries on from row to row. Returns the rows in (parent, place) order and
    each row's parent (row index into `parents`); None when no parent has children."""
    schema = encoder.condition_schema()
    pieces, owners, done, previous, active_before = [], [], 0, None, None
    for place in range(int(counts.max()) if len(counts) else 0):
        active = np.flatnonzero(counts > place)  # a subset of the parents active at place - 1, in the same order
        rows = pa.array(active)
        columns = {derived: plain(parents.column(column)).take(rows) for derived, column in layout.context.items()}
        back = pa.array(np.searchsorted(active_before, active)) if previous is not None else None
        for column in layout.history:
            columns[PREVIOUS_PREFIX + column] = previous.column(column).take(back) if previous is not None else \
                pa.nulls(len(active), schema.field(PREVIOUS_PREFIX + column).type)
        columns[POSITION] = pa.array(np.full(len(active), place, dtype=np.int64))
        columns[LENGTH] = pa.array(counts[active].astype(np.int64))
        conditions = pa.table([columns[f.name].cast(f.type) for f in schema], schema=schema)
        previous = synthesize(model, encoder, conditions, seed + place, precision=precision,
                              row_offset=row_offset + done)
        pieces.append(previous)
        owners.append(active)
        active_before, done = active, done + len(active)
    if not pieces:
        return None, np.zeros(0, dtype=np.int64)
    owner = np.concatenate(owners)
    order = np.argsort(owner, kind="stable")  # places were drawn in order: a stable sort keeps them within a parent
    return pa.concat_tables(pieces).take(pa.array(order)), owner[order]


class LinkedPartWriter:
    """Loads the parent and child models once, then draws and writes whole parts (a Ray Data actor, or the
    driver for a small job)."""

    def __init__(self, settings: LinkedWriterSettings, threads: int):
        torch.set_num_threads(threads)
        self.settings = settings
        self.parent = load_artifact_files(settings.parent_files)
        self.children = {name: load_artifact_files(child.files) for name, child in settings.children.items()}
        self.sink = LinkedSink(settings.output, settings.storage_options,
                               [settings.parent_table, *settings.children])

    def draw(self, part: int) -> dict[str, pa.Table]:
        """Part `part`'s tables: parents, then each child table in parent then sequence order."""
        s = self.settings
        start = part * s.rows_per_part
        stop = min(start + s.rows_per_part, s.plan.num_rows)
        model, encoder = self.parent
        parents = synthesize(model, encoder, s.plan.rows(start, stop), part_seed(s.seed, part),
                             precision=s.precision, row_offset=start)
        tables = {}
        for name, child in s.children.items():
            layout, (model, encoder) = child.layout, self.children[name]
            counts = plain(parents.column(count_column(name))).fill_null(0).to_numpy(zero_copy_only=False)
            counts = np.clip(np.rint(counts), 0, None).astype(np.int64)
            most = int(encoder.codecs[LENGTH].bounds()[1])  # fresh child ids of part k count from k x parents x most
            drawn, owner = draw_children(model, encoder, parents, layout, counts, child_seed(s.seed, name, part),
                                         s.precision, start * max(most, 1))
            keys = plain(parents.column(s.key)).take(pa.array(owner))
            tables[name] = _child_table(drawn, parents, keys, owner, layout)
        lifted = [column for child in s.children.values() for column in child.layout.lifted.values()]
        tables[s.parent_table] = parents.drop_columns([*(count_column(name) for name in s.children), *lifted])
        return {name: tables[name] for name in [s.parent_table, *s.children]}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        done: dict[str, list] = {"part": [], "rows": [], "seconds": [], "peak_rss_mb": []}
        for part in batch["part"].tolist():
            started = time.perf_counter()
            tables = self.draw(part)
            self.sink.write_tables(part, {name: (_parquet(table), table.num_rows) for name, table in tables.items()})
            done["part"].append(part)
            done["rows"].append(sum(table.num_rows for table in tables.values()))
            done["seconds"].append(time.perf_counter() - started)
            done["peak_rss_mb"].append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return {key: np.asarray(values) for key, values in done.items()}


def _child_table(drawn: pa.Table | None, parents: pa.Table, keys: pa.Array, owner: np.ndarray,
                 layout: ChildLayout) -> pa.Table:
    """Drawn child rows in the child table's own schema: the foreign key from their parent, rows ordered by
    parent and then `order_by` (the order a sequence keeps by construction)."""
    schema = layout.schema
    if drawn is None:
        return schema.empty_table()
    columns = []
    for f in schema:
        if f.name == layout.foreign_key:
            column = keys
        elif f.name in layout.lifted:  # the parent's column, shared by all its children
            column = plain(parents.column(layout.lifted[f.name])).take(pa.array(owner))
        else:
            column = drawn.column(f.name)
        columns.append(column.cast(f.type))
    table = pa.table(columns, schema=schema).append_column("__owner", pa.array(owner))
    order = [("__owner", "ascending"), *[(column, "ascending") for column in layout.order_by]]
    return table.take(pc.sort_indices(table, sort_keys=order)).drop_columns(["__owner"])


def _parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


class LinkedSink(Sink):
    """A linked dataset's layout: one folder of parts per table, one journal entry per part (all its tables)."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None, tables: list[str]):
        super().__init__(uri, storage_options)
        self.tables = tables

    def write_tables(self, part: int, written: dict[str, tuple[bytes, int]]) -> dict[str, Any]:
        entry = {"part": part, "tables": {}}
        for table, (data, rows) in written.items():
            name = f"{table}/{part_name(part)}"
            self.write(name, data)
            entry["tables"][table] = {"file": name, "rows": rows, "bytes": len(data),
                                      "sha256": hashlib.sha256(data).hexdigest()}
        self.write_json(f"{JOURNAL}/{part_name(part)}.json", entry)  # the part is complete once this exists
        return entry

    def completed_parts(self) -> dict[int, dict[str, Any]]:
        """Journal entries whose files are all present with the recorded sizes."""
        self.fs.invalidate_cache(self.root)
        if not self.exists(JOURNAL):
            return {}
        sizes = {path: info["size"] for path, info in self.fs.find(self.root, maxdepth=2, detail=True).items()}
        done = {}
        for path in self.fs.glob(self.path(f"{JOURNAL}/part-*.json")):
            with self.fs.open(path, "rb") as handle:
                entry = json.loads(handle.read())
            if all(sizes.get(self.path(t["file"])) == t["bytes"] for t in entry["tables"].values()):
                done[entry["part"]] = entry
        return done

    def clear(self) -> None:
        super().clear()
        for table in self.tables:
            for path in self.fs.glob(self.path(f"{table}/part-*.parquet")):
                self.fs.rm(path)

    def _foreign_files(self) -> list[str]:
        ours = tuple(f"{table}/part-" for table in self.tables)
        return [name for name in super()._foreign_files() if not name.startswith(ours)]


@dataclass(frozen=True)
class LinkedManifest:
    """`_manifest.json` of a linked dataset."""
    model_uri: str
    model_version_uri: str
    children_models: dict[str, str]
    run_id: str
    seed: int
    conditions: Any
    plan_fingerprint: str
    num_parents: int
    parents_per_part: int
    key: str
    tables: dict[str, dict[str, Any]]  # table -> rows, parts, schema, its key or foreign key
    training_rows_left_out: dict[str, dict[str, int]]  # child -> reason -> rows
    created_at: str
    code_version: str
    format: str = LINKED_DATASET_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LinkedGenerateOutcome:
    output: str
    model_uri: str
    parents: int
    rows: dict[str, int] = field(default_factory=dict)
    parts: int = 0
    run_id: str | None = None
    skipped: bool = False


def generate_linked(config: Config, overwrite: bool = False) -> LinkedGenerateOutcome:
    """Fetch the linked model's versions, plan the parents, write every part, then the manifest and _SUCCESS."""
    gen = config.generate
    tracking_uri = absolute_tracking_uri(config.mlflow.tracking_uri)
    check_tracking(tracking_uri, must_exist=True)
    client = client_for(tracking_uri)
    requested = gen.model_uri or default_model_uri(config.mlflow)
    model_uri, version = resolve_model_uri(client, requested)
    record = linked_record(client, model_uri)
    if record is None:
        raise UserError(f"{model_uri} is a single-table model; drop data.children to generate from it, or train the "
                        "linked job (cvae train with data.children) and generate from its parent model")
    parent_files = fetch_model(model_uri)
    _, parent_encoder = load_artifact_files(parent_files)
    children = {name: ChildModel(ChildLayout.from_dict(entry), entry["model"], fetch_model(entry["model"]))
                for name, entry in record["children"].items()}
    plan = build_plan(gen, parent_encoder, gen.storage_options)
    parent_encoder.check_capacity(plan.num_rows)
    num_parts = math.ceil(plan.num_rows / gen.rows_per_part)
    output = absolute(gen.output_for(model_uri))
    spec = {"format": LINKED_DATASET_FORMAT, "model": model_uri,
            "children": {name: child.model_uri for name, child in children.items()}, "seed": gen.seed,
            "rows_per_part": gen.rows_per_part, "precision": gen.precision, "num_rows": plan.num_rows,
            "plan": plan.fingerprint(), "code_version": code_version()}
    tables = [record["parent"], *children]
    sink = LinkedSink(output, gen.storage_options, tables)
    if sink.claim(spec, overwrite) == "done":
        console.result(f"{redact(output)} already holds this dataset ({plan.num_rows:,} parents from {model_uri}); "
                       "nothing to do")
        return LinkedGenerateOutcome(output, model_uri, plan.num_rows, parts=num_parts, skipped=True)
    failpoint("after_spec")
    run_id = generation_run(client, model_uri, version, output, spec, config)
    settings = LinkedWriterSettings(record["parent"], record["key"], parent_files, children, plan, output,
                                    gen.storage_options, gen.seed, gen.rows_per_part, gen.precision)
    done = sink.completed_parts()
    todo = [part for part in range(num_parts) if part not in done]
    console.progress(f"generating {plan.num_rows:,} parents and their {', '.join(children)} in {num_parts} part(s) "
                     f"from {model_uri} into {redact(output)} ({len(done)} already done)")
    started = time.perf_counter()
    try:
        for count, row in enumerate(_written(config, settings, todo), start=1):
            console.progress(f"{count}/{len(todo)} parts  {int(row['rows']):,} rows in part {int(row['part'])}")
        parts = sink.completed_parts()
        missing = sorted(set(range(num_parts)) - set(parts))
        if missing:
            raise RuntimeError(f"parts {missing[:5]} were not written; rerun the same command to finish them")
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    seconds = time.perf_counter() - started
    failpoint("before_manifest")
    rows = {table: sum(parts[k]["tables"][table]["rows"] for k in range(num_parts)) for table in tables}
    derived = [*(count_column(name) for name in children),
               *(column for child in children.values() for column in child.layout.lifted.values())]
    parent_schema = pa.schema([f for f in parent_encoder.schema if f.name not in derived])
    sink.finish(_manifest(requested, model_uri, run_id, config, plan, record, children, parts, num_parts, rows,
                          parent_schema))
    log_metrics(client, run_id, {"parents": plan.num_rows, "parts": num_parts, "seconds": seconds,
                                 **{f"rows_{table}": count for table, count in rows.items()}}, step=0)
    client.set_terminated(run_id)
    console.result(f"wrote {plan.num_rows:,} {record['parent']} rows and " +
                   ", ".join(f"{rows[name]:,} {name} rows" for name in children) +
                   f" in {num_parts} part(s) to {redact(output)} from {model_uri} in {seconds:.1f}s; mlflow run {run_id}")
    return LinkedGenerateOutcome(output, model_uri, plan.num_rows, rows, num_parts, run_id)


def _written(config: Config, settings: LinkedWriterSettings, todo: list[int]):
    """One result row per written part: by this process for a small CPU job, else by an actor pool."""
    gen = config.generate
    if not todo:
        return
    if settings.plan.num_rows <= gen.in_process_rows and not gen.use_gpu:
        writer = LinkedPartWriter(settings, threads=len(os.sched_getaffinity(0)))
        for part in todo:
            done = writer({"part": np.array([part])})
            yield {key: values[0] for key, values in done.items()}
        return
    ensure_ray(config.ray.address)
    pool = writer_pool(gen.num_workers, gen.cpus_per_worker, False, ray.cluster_resources())
    yield from write_with_actors(todo, pool, settings, gen.cpus_per_worker, LinkedPartWriter)


def _manifest(requested: str, model_uri: str, run_id: str, config: Config, plan: ConditionPlan,
              record: dict[str, Any], children: dict[str, ChildModel], parts: dict[int, dict[str, Any]],
              num_parts: int, rows: dict[str, int], parent_schema: pa.Schema) -> LinkedManifest:
    gen = config.generate
    tables = {}
    for table in [record["parent"], *children]:
        child = children.get(table)
        schema = child.layout.schema if child else parent_schema
        tables[table] = {"rows": rows[table], "parts": [parts[k]["tables"][table] for k in range(num_parts)],
                         **({"foreign_key": child.layout.foreign_key, "references": f"{record['parent']}.{record['key']}",
                             "order_by": child.layout.order_by} if child else {"primary_key": record["key"]}),
                         "schema": [{"name": f.name, "type": str(f.type)} for f in schema]}
    return LinkedManifest(
        model_uri=requested, model_version_uri=model_uri,
        children_models={name: child.model_uri for name, child in children.items()}, run_id=run_id, seed=gen.seed,
        conditions=json.loads(redact(json.dumps(gen.conditions, default=str))), plan_fingerprint=plan.fingerprint(),
        num_parents=plan.num_rows, parents_per_part=gen.rows_per_part, key=record["key"], tables=tables,
        training_rows_left_out={name: child.layout.left_out for name, child in children.items()},
        created_at=datetime.now(timezone.utc).isoformat(), code_version=code_version())
