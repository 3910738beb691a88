"""Bounded counts: value -> rows dictionaries that sketches merge across blocks and workers, pruned to the most
frequent values so a column of a million distinct values costs a bounded dictionary."""
from __future__ import annotations

import hashlib
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def summed(keys: pa.Array, counts: pa.Array, bound: int | None = None) -> list[tuple[Any, int]]:
    """(key, rows) pairs, unordered: the rows of each key over a block's distinct values (`counts` rows each); with
    `bound`, only the `bound` most frequent (cut before Python sees them: a serial run has a distinct key per id,
    and adding them all to a dict that keeps `bound` costs more than the rest of the fit)."""
    encoded = pc.dictionary_encode(keys)
    rows = np.bincount(encoded.indices.to_numpy(zero_copy_only=False), minlength=len(encoded.dictionary),
                       weights=counts.to_numpy(zero_copy_only=False)).astype(np.int64)
    top = np.arange(len(rows)) if bound is None or len(rows) <= bound else np.argpartition(-rows, bound)[:bound]
    return list(zip(encoded.dictionary.take(pa.array(top)).to_pylist(), rows[top].tolist()))


def by_count(item: tuple[Any, int]) -> tuple[int, str]:
    """Most frequent first; ties by value, so the order does not depend on the order rows were counted in."""
    return -item[1], str(item[0])


def by_count_spread(item: tuple[Any, int]) -> tuple[int, bytes]:
    """Most frequent first; ties in an order that is fixed but unrelated to the values, so cutting a tail of
    values seen once (dates, timestamps) keeps a spread of them rather than the earliest."""
    return -item[1], hashlib.blake2b(str(item[0]).encode(), digest_size=8).digest()


def add_counts(counts: dict[Any, int], pairs: Iterable[tuple[Any, int]], bound: int) -> bool:
    """Add counts in place; past 2 x bound values keep the `bound` most frequent (True: some were dropped, so
    every kept count is a lower bound)."""
    for value, count in pairs:
        counts[value] = counts.get(value, 0) + count
    if len(counts) <= 2 * bound:
        return False
    kept = sorted(counts.items(), key=by_count)[:bound]
    counts.clear()
    counts.update(kept)
    return True
