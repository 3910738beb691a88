"""Source: the training table as a Ray Dataset read from any fsspec URI, split into train and holdout."""
from __future__ import annotations

import functools
import pickle
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray.data

from pipeline.config import DataConfig, EncoderConfig
from pipeline.codec import EncoderSketch, FineHistograms, TableEncoder, infer_kind
from pipeline.errors import UserError, user_error_in
from pipeline.privacy import FineGrid, PrivateFit
from pipeline.rowhash import ROW_HASH, split_rows
from pipeline.rules import RuleSet, RuleSketch, parse_rules, table_rules
from pipeline.storage import arrow_filesystem, redact

SKETCH = "sketch"
ENCODE_BATCH_ROWS = 65_536


def parquet_footer(fs: Any, path: str, key: str = "data.path") -> tuple[pa.Schema, pq.FileMetaData]:
    """A file's schema and metadata, read from its footer; a one-line error naming `key` when it is not Parquet."""
    try:
        with fs.open(path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            return parquet.schema_arrow, parquet.metadata
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{key}: {redact(path)} is not a readable Parquet file ({exc}); replace or remove it") from None


def check_table(fs: Any, files: list[str], config: DataConfig) -> tuple[int, pa.Schema]:
    """Footers only, before any work: readable Parquet, one schema, rows present, condition columns usable.
    Returns the row count and the schema."""
    schema, rows = None, 0
    nulls: dict[str, int | None] = {name: 0 for name in config.condition_columns}  # None: no statistics to tell
    for path in files:
        file_schema, metadata = parquet_footer(fs, path)
        if schema is None:
            schema = file_schema
        elif file_schema.names != schema.names:
            raise UserError(f"data.path: {redact(path)} has columns {file_schema.names}, other files have "
                            f"{schema.names}; every file must share one schema")
        rows += metadata.num_rows
        leaves = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
        for name, count in nulls.items():
            for group in range(metadata.num_row_groups):
                statistics = metadata.row_group(group).column(leaves[name]).statistics if name in leaves else None
                count = count + statistics.null_count if count is not None and statistics and \
                    statistics.has_null_count else None
            nulls[name] = count
    if rows == 0:
        raise UserError(f"data.path {redact(config.path)} holds an empty table (0 rows); point it at data with rows")
    for name in [*config.condition_columns, *config.columns, *config.exclude]:
        if name not in schema.names:
            raise UserError(f"column {name!r} is not in the table at {redact(config.path)}; its columns are: "
                            f"{', '.join(schema.names)}")
    for field in schema:
        if field.name not in config.exclude:
            infer_kind(field, config.columns.get(field.name))
    for name, count in nulls.items():
        if count == rows:
            raise UserError(f"condition column {name!r} is entirely null; choose another data.conditions column")
    return rows, schema


def modelled_schema(schema: pa.Schema, config: DataConfig) -> pa.Schema:
    """Every column but those the user left out with `data.exclude`."""
    return pa.schema([field for field in schema if field.name not in config.exclude])


def read_table(fs: Any, files: list[str], columns: list[str] | None = None) -> ray.data.Dataset:
    """Streams the Parquet files (only `columns`, if given); each row carries Ray's deterministic row hash
    (for the holdout split). Ray Data pushes the column selection down into the Parquet read."""
    dataset = ray.data.read_parquet(files, filesystem=arrow_filesystem(fs), include_row_hash=True)
    return dataset.select_columns([*columns, ROW_HASH]) if columns is not None else dataset


def encode_split(batch: pa.Table, encoder: ray.ObjectRef, split: str, seed: int, fraction: float) -> dict[str, np.ndarray]:
    """Ray Data map: raw Parquet rows -> {"x", "c"} float32 matrices for one side of the split."""
    x, c = _parsed_encoder(encoder).transform(split_rows(batch, split, seed, fraction)[0])
    return {"x": x, "c": c}


@functools.lru_cache(maxsize=1)
def _parsed_encoder(encoder: ray.ObjectRef) -> TableEncoder:
    """Fetch and parse the encoder once per worker process, not once per batch."""
    return TableEncoder.from_json(ray.get(encoder))


def encoded_splits(ds: ray.data.Dataset, encoder: ray.ObjectRef, seed: int, fraction: float) -> dict[str, ray.data.Dataset]:
    """Lazy train and holdout datasets of encoded matrices, for Ray Train's `datasets=`. `encoder`: the encoder's
    JSON in the object store (put once by the driver; each task gets the reference, not the 57 KB string). Encoding
    a bounded number of rows per call keeps a read task's memory flat whatever the size of the files and blocks."""

    def encoded(split: str) -> ray.data.Dataset:
        return ds.map_batches(encode_split, batch_format="pyarrow", batch_size=ENCODE_BATCH_ROWS, zero_copy_batch=True,
                              fn_kwargs={"encoder": encoder, "split": split, "seed": seed, "fraction": fraction})
    return {split: encoded(split) for split in (["train", "holdout"] if fraction > 0 else ["train"])}


def object_store_share() -> float:
    """A quarter of the cluster's object store: what kept (cached) training data may take, and what a streamed
    epoch may hold in flight, leaving the rest for the kept holdout (a holdout near the store's size still spills:
    0.88 GB in a 2 GiB store did, in bench/streaming_bench.py)."""
    return ray.cluster_resources().get("object_store_memory", 0) / 4


def cache_splits(splits: dict[str, ray.data.Dataset], size: int, policy: str) -> dict[str, ray.data.Dataset]:
    """Encoded data (`size` bytes for the whole table) that fits in a quarter of the object store is computed once,
    not every epoch (`train.cache=auto`; `always` keeps it whatever its size, `never` streams everything). A bigger
    table streams the training split, reading the table once per epoch, and computes the holdout once: validation
    does not read the table a second time every epoch. Ray spills materialised blocks to disk when memory is short."""
    if policy == "never":
        return splits
    if policy == "always" or size <= object_store_share():
        return {name: ds.materialize() for name, ds in splits.items()}
    return {name: ds.materialize() if name == "holdout" else ds for name, ds in splits.items()}


def training_rows(batch: pa.Table, schema: pa.Schema, seed: int, fraction: float) -> tuple[pa.Table, np.ndarray]:
    """The training side of the split, cast to the footer's `schema`, and those rows' hashes."""
    rows, row_hash = split_rows(batch, "train", seed, fraction)
    return rows.select(schema.names).cast(schema), row_hash


def rules_block(batch: pa.Table, schema: pa.Schema, seed: int, fraction: float, declared: tuple) -> pa.Table:
    """Ray Data map: one block's training rows -> a one-row table holding their pickled `RuleSketch`."""
    sketch = RuleSketch(schema, declared)
    rows, _ = training_rows(batch, schema, seed, fraction)
    sketch.update(rows)
    return _pickled(sketch)


def sketch_block(batch: pa.Table, schema: pa.Schema, conditions: list[str], kinds: dict[str, str],
                 config: EncoderConfig, seed: int, fraction: float, private: bool, rules: RuleSet,
                 context: list[str]) -> pa.Table:
    """Ray Data map: one block's training rows -> a one-row table holding their pickled `EncoderSketch`."""
    sketch = EncoderSketch(schema, conditions, config, kinds, seed, private, rules, context)
    rows, row_hash = training_rows(batch, schema, seed, fraction)
    if rows.num_rows:
        sketch.update(rows, row_hash)
    return _pickled(sketch)


def fine_block(batch: pa.Table, schema: pa.Schema, grids: dict[str, list[FineGrid | None]], seed: int,
               fraction: float, rules: RuleSet) -> pa.Table:
    """Ray Data map, the second pass of a private fit: one block's training rows -> pickled `FineHistograms`."""
    histograms = FineHistograms(grids)
    rows, _ = training_rows(batch, schema, seed, fraction)
    if rows.num_rows:
        histograms.update(rules.forward(rules.screen(rows)))
    return _pickled(histograms)


def _pickled(state: Any) -> pa.Table:
    return pa.table({SKETCH: pa.array([pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)], pa.large_binary())})


def _merged(ds: ray.data.Dataset, block_fn: Any, kwargs: dict[str, Any], into: Any) -> Any:
    """Map every block to a pickled sketch with `block_fn` and merge them into `into` on the driver as they arrive.
    A data problem a Ray task found (NaN values...) is raised as the driver would raise it."""
    sketches = ds.map_batches(block_fn, batch_format="pyarrow", batch_size=None, zero_copy_batch=True, fn_kwargs=kwargs)
    try:
        for row in sketches.iter_rows():
            into.merge(pickle.loads(row[SKETCH]))
    except Exception as exc:
        found = user_error_in(exc)
        if found is None:
            raise
        raise found from None
    return into


def fit_encoder(ds: ray.data.Dataset, schema: pa.Schema, data: DataConfig, config: EncoderConfig,
                seed: int, private: PrivateFit | None = None) -> TableEncoder:
    """One distributed pass over the training split only: no statistic the model stores has seen a holdout row
    (holdout values the split lacks encode as "other" or clip to the bounds). Ray tasks sketch each block and
    the driver merges the bounded sketches as they arrive, never holding rows. Sample keys come from the row
    hash, so the encoder is the same whatever the block sizes, worker count or merge order. Batches take the
    footer's Arrow `schema`, so the model's output has exactly the types a Parquet reader sees in the input.
    A `private` fit reads the training split a second time, for the numeric columns' quantiles between their
    private bounds (pipeline/privacy.py)."""
    rules = plan_rules(ds, schema, data, config, seed, private is not None)
    merged = EncoderSketch(schema, data.condition_columns, config, data.columns, seed,  # bad columns fail here
                           private is not None, rules, data.context)
    _merged(ds, sketch_block, {"schema": schema, "conditions": data.condition_columns, "kinds": data.columns,
                               "config": config, "seed": seed, "fraction": data.holdout_fraction,
                               "private": private is not None, "rules": rules, "context": data.context}, merged)
    if private is None:
        return merged.finalize(data.exclude)
    noise = merged.statistics_noise(private)
    grids = merged.private_grids(noise)
    fine = FineHistograms(grids)
    if grids:
        _merged(ds, fine_block, {"schema": schema, "grids": grids, "seed": seed, "fraction": data.holdout_fraction,
                                 "rules": rules}, fine)
    return merged.finalize(data.exclude, noise, fine)


def plan_rules(ds: ray.data.Dataset, schema: pa.Schema, data: DataConfig, config: EncoderConfig, seed: int,
               private: bool) -> RuleSet:
    """The rules this table's rows will keep: those in `data.rules`, and (`data.rules_found: apply`) those the
    training split keeps in every row, found in one distributed pass (pipeline/rules/found.py). Under
    `train.privacy` nothing is found: a rule read off the rows is a statistic the budget does not pay for, and
    declared rules apply without the float grains that pass would measure."""
    declared = parse_rules(data.rules)
    RuleSet.plan(schema, data.condition_columns, declared, [], {})  # a declared rule that cannot fit fails before a pass
    sketch = None
    if not private and (data.rules_found != "off" or declared):
        sketch = _merged(ds, rules_block, {"schema": schema, "seed": seed, "fraction": data.holdout_fraction,
                                           "declared": tuple(declared)}, RuleSketch(schema, tuple(declared)))
    return table_rules(schema, data.condition_columns, declared, data.rules_found, config.min_value_count, sketch,
                       data.rules_breaking == "leave_out")
