"""Row hashes: the one place a row's deterministic uint64 hash (Ray Data's `include_row_hash`) becomes a split or
a random key, so every stage that reads the table (source, encoder fit, evaluator, audit) agrees on which rows
are training rows and draws the same per-row keys on every read, block size and worker count.

Two mixers, each a bijection on uint64, keyed apart so their uses never correlate:
- `in_holdout`: the train / holdout split. It takes any per-row uint64 key: today the row's own hash, for a
  child table the hash of its parent's key, so a parent and its children land on the same side.
- `sample_keys`: a uniform key in [0, 1) per row and stream (the encoder's bottom-k samples, fresh id runs).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

ROW_HASH = "row_hash"  # the column Ray Data adds with include_row_hash=True
SPLIT_BUCKETS = 1 << 20
UINT64 = 0xFFFFFFFFFFFFFFFF
GOLDEN = 0x9E3779B97F4A7C15
SAMPLE_KEY_SALT = 0x5A17_C0DE_D15C_0001  # keeps sample keys apart from the holdout split's use of the row hash


def in_holdout(key: np.ndarray, seed: int, fraction: float) -> np.ndarray:
    """(n,) bool: a seeded split of per-row uint64 keys; the same rows go to the holdout on every read."""
    mixed = key.astype(np.uint64) ^ np.uint64((seed * GOLDEN) & UINT64)
    mixed = (mixed ^ (mixed >> np.uint64(31))) * np.uint64(0xBF58476D1CE4E5B9)
    mixed ^= mixed >> np.uint64(29)
    return (mixed % np.uint64(SPLIT_BUCKETS)) < np.uint64(int(fraction * SPLIT_BUCKETS))


def split_rows(batch: pa.Table, split: str, seed: int, fraction: float) -> tuple[pa.Table, np.ndarray]:
    """One side of the split ("train" or "holdout") of a batch read with its row hash: the rows without the
    hash column, and their hashes."""
    hashes = batch.column(ROW_HASH).to_numpy()
    holdout = in_holdout(hashes, seed, fraction)
    keep = holdout if split == "holdout" else ~holdout
    return batch.drop_columns([ROW_HASH]).filter(pa.array(keep)), hashes[keep]


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer (a bijection on uint64), vectorized; wraps around like C."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def sample_keys(row_hash: np.ndarray, stream: int) -> np.ndarray:
    """A uniform key in [0, 1) per row from its deterministic row hash and a stream (seed and column): the same
    row gets the same key on every read, block size, worker and merge order, so a bottom-k sample is one set."""
    salt = splitmix64(np.array([(stream * GOLDEN ^ SAMPLE_KEY_SALT) & UINT64], dtype=np.uint64))
    mixed = splitmix64(np.asarray(row_hash, dtype=np.uint64) ^ salt)
    return (mixed >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
