"""Source: the training table as a Ray Dataset read from any fsspec URI, split into train and holdout."""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import ray.data

from pipeline.config import DataConfig, EncoderConfig
from pipeline.encoding import TableEncoder
from pipeline.errors import UserError
from pipeline.storage import arrow_filesystem, parquet_files

ROW_HASH = "row_hash"
SPLIT_BUCKETS = 1 << 20


def read_table(config: DataConfig) -> ray.data.Dataset:
    """Streams the Parquet files at `data.path`; each row carries Ray's deterministic row hash."""
    fs, files = parquet_files(config.path, config.storage_options)
    try:
        return ray.data.read_parquet(files, filesystem=arrow_filesystem(fs), include_row_hash=True)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"data.path {config.path}: not readable as Parquet ({exc}); "
                        "check the files are complete Parquet files") from None


def holdout_mask(row_hash: np.ndarray, seed: int, fraction: float) -> np.ndarray:
    """A seeded split from the row hash: the same rows go to the holdout on every read and every worker count."""
    mixed = row_hash.astype(np.uint64) ^ np.uint64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
    mixed = (mixed ^ (mixed >> np.uint64(31))) * np.uint64(0xBF58476D1CE4E5B9)
    mixed ^= mixed >> np.uint64(29)
    return (mixed % np.uint64(SPLIT_BUCKETS)) < np.uint64(int(fraction * SPLIT_BUCKETS))


def select_split(batch: pa.Table, split: str, seed: int, fraction: float) -> pa.Table:
    """Rows of one side of the split ("train" or "holdout"), without the row hash."""
    in_holdout = holdout_mask(batch.column(ROW_HASH).to_numpy(), seed, fraction)
    keep = in_holdout if split == "holdout" else ~in_holdout
    return batch.drop_columns([ROW_HASH]).filter(pa.array(keep))


def encode_split(batch: pa.Table, encoder_json: str, split: str, seed: int, fraction: float) -> dict[str, np.ndarray]:
    """Ray Data map: raw Parquet rows -> {"x", "c"} float32 matrices for one side of the split."""
    encoder = _cached_encoder(encoder_json)
    x, c = encoder.transform(select_split(batch, split, seed, fraction))
    return {"x": x, "c": c}


_ENCODERS: dict[int, TableEncoder] = {}


def _cached_encoder(encoder_json: str) -> TableEncoder:
    """Parse the encoder once per worker process, not once per batch."""
    key = hash(encoder_json)
    if key not in _ENCODERS:
        _ENCODERS.clear()
        _ENCODERS[key] = TableEncoder.from_json(encoder_json)
    return _ENCODERS[key]


def encoded_splits(ds: ray.data.Dataset, encoder: TableEncoder, seed: int, fraction: float) -> dict[str, ray.data.Dataset]:
    """Lazy train and holdout datasets of encoded matrices, for Ray Train's `datasets=`."""
    encoder_json = encoder.to_json()
    splits = {"train": ds.map_batches(encode_split, batch_format="pyarrow", zero_copy_batch=True,
                                      fn_kwargs={"encoder_json": encoder_json, "split": "train", "seed": seed,
                                                 "fraction": fraction})}
    if fraction > 0:
        splits["holdout"] = ds.map_batches(encode_split, batch_format="pyarrow", zero_copy_batch=True,
                                           fn_kwargs={"encoder_json": encoder_json, "split": "holdout", "seed": seed,
                                                      "fraction": fraction})
    return splits


def encoded_bytes(fs: Any, files: list[str], encoder: TableEncoder, max_files: int = 64) -> int | None:
    """Size of the encoded matrices, from Parquet footers; None when there are too many files to ask cheaply."""
    if len(files) > max_files:
        return None
    import pyarrow.parquet as pq

    rows = 0
    for path in files:
        with fs.open(path, "rb") as handle:
            rows += pq.ParquetFile(handle).metadata.num_rows
    return rows * (encoder.x_dim + encoder.c_dim) * 4


def cache_if_small(splits: dict[str, ray.data.Dataset], size: int | None, policy: str) -> dict[str, ray.data.Dataset]:
    """Encoded data that fits in a quarter of the object store is computed once, not re-read every epoch."""
    capacity = ray.cluster_resources().get("object_store_memory", 0)
    if policy == "always" or (policy == "auto" and size is not None and size <= capacity / 4):
        return {name: ds.materialize() for name, ds in splits.items()}
    return splits


def fit_encoder(ds: ray.data.Dataset, conditions: list[str], config: EncoderConfig, column_kinds: dict[str, str],
                seed: int, fraction: float) -> TableEncoder:
    """One streaming pass over the training side of the split; Ray reads in parallel, the driver keeps sketches."""
    batches = (select_split(batch, "train", seed, fraction)
               for batch in ds.iter_batches(batch_format="pyarrow", batch_size=65536))
    return TableEncoder.fit(batches, conditions, config, column_kinds, seed)
