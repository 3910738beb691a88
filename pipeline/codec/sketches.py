"""Mergeable one-pass sketches of a column, what every codec is fitted from: `update` per block, `merge` across
blocks and workers, in bounded memory whatever the table's size."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.codec.arrow import numeric_values, plain
from pipeline.codec.counts import add_counts
from pipeline.codec.id_formats import ID_PREFIXES, IdShape, IdTemplates
from pipeline.codec.kinds import named_like_id
from pipeline.privacy import GRID_BINS, grid_bins
from pipeline.rowhash import sample_keys

if TYPE_CHECKING:
    from pipeline.codec.text_formats import TextFormatSketch

MAX_SAMPLE_VALUES = 8_000_000
TAIL_VALUES_KEPT = 1000
NEAR_UNIQUE = 0.9        # distinct / non-null rows above which a string column is an identifier
ID_NAMED_UNIQUE = 0.3    # the same, for a column named like an id (order ids repeat over an order's lines)
MAX_ID_COVERAGE = 0.5    # ...unless values seen k times or more still cover this share of its rows


class NumericSketch:
    """One pass over a numeric column: counts, exact bounds, the k smallest and largest values per element,
    and a bounded uniform sample (bottom-k by random key: fixed memory, mergeable across workers). Given row
    hashes, the keys come from them (`sample_keys`), so the sample does not depend on how rows were batched."""

    def __init__(self, width: int, sample_size: int, seed: int, extremes: int, private: bool = False):
        self.rows = 0
        self.nulls = 0
        self.capacity = max(100, min(sample_size, MAX_SAMPLE_VALUES // width))
        self.keys = np.empty(0)
        self.sample = np.empty((0, width))
        self.extremes = extremes
        self.smallest = np.empty((0, width))
        self.largest = np.empty((0, width))
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.grid = np.zeros((width, GRID_BINS), dtype=np.int64) if private else None  # counts per grid bin
        self.not_clock = 0  # values that are no HHMM clock time (pipeline/codec/clock.py): fractions, 1960, -5

    @property
    def width(self) -> int:
        return self.sample.shape[1]

    @property
    def values(self) -> int:
        return self.rows - self.nulls

    def update(self, arr: pa.Array, name: str, row_hash: np.ndarray | None = None) -> None:
        self.rows += len(arr)
        self.nulls += arr.null_count
        values = numeric_values(arr, name)
        if not len(values):
            return
        if row_hash is None:
            keys = self.rng.random(len(values))
        else:  # the rows `numeric_values` kept: the non-null ones
            keys = sample_keys(row_hash if not arr.null_count else row_hash[np.asarray(arr.is_valid())], self.seed)
        self._keep(keys, values)
        self._keep_extremes(values, values)
        if values.shape[1] == 1:
            v = values[:, 0]
            self.not_clock += int(((v != np.floor(v)) | (v < 0) | (v > 2400) | (np.mod(v, 100) >= 60)).sum())
        if self.grid is not None:
            for j in range(values.shape[1]):
                self.grid[j] += np.bincount(grid_bins(values[:, j]), minlength=GRID_BINS)

    def merge(self, other: "NumericSketch") -> None:
        self.rows += other.rows
        self.nulls += other.nulls
        if self.grid is not None:
            self.grid += other.grid
        self._keep(other.keys, other.sample)
        self._keep_extremes(other.smallest, other.largest)
        self.not_clock += other.not_clock

    def _keep(self, keys: np.ndarray, values: np.ndarray) -> None:
        keys = np.concatenate([self.keys, keys])
        values = np.concatenate([self.sample, values])
        if len(keys) > self.capacity:
            keep = np.argpartition(keys, self.capacity - 1)[: self.capacity]
            keys, values = keys[keep], values[keep]
        self.keys, self.sample = keys, values

    def _keep_extremes(self, low: np.ndarray, high: np.ndarray) -> None:
        k = self.extremes
        low, high = np.concatenate([self.smallest, low]), np.concatenate([self.largest, high])
        if len(low) > k:  # a batch's k smallest and largest in linear time; only those 2k get sorted
            low, high = np.partition(low, k - 1, axis=0)[:k], np.partition(high, len(high) - k, axis=0)[-k:]
        self.smallest, self.largest = np.sort(low, axis=0), np.sort(high, axis=0)

    def bounds(self, protect: bool) -> tuple[np.ndarray, np.ndarray]:
        """Exact min and max, or the k-th smallest and k-th largest: no single extreme value."""
        if not protect:
            return self.smallest[0], self.largest[-1]
        return self.smallest[-1], self.largest[0]

    def distinct_share(self) -> float:
        return len(np.unique(self.sample[:, 0])) / len(self.sample) if len(self.sample) else 0.0


class CategorySketch:
    """Value counts, pruned to a bound so a high-cardinality column never grows without limit.

    Pruning only drops counts, so every kept count is a lower bound: a value is never thought
    more frequent than it is (value protection stays safe). A string column that may turn out an
    identifier also records its ids' shape and which candidate id prefixes some value starts with, so fresh
    ids can look like them and avoid all of them."""

    def __init__(self, bound: int, tracks_prefixes: bool, formats: "TextFormatSketch | None" = None):
        self.rows = 0
        self.nulls = 0
        self.counts: dict[Any, int] = {}
        self.bound = bound
        self.pruned = False
        self.prefixes_used: set[str] = set()
        self.tracks_prefixes = tracks_prefixes
        self.shape = IdShape()
        self.templates = IdTemplates(bound)
        self.formats = formats  # dates, times and numbers written in strings (pipeline/codec/text_formats.py)

    def update(self, arr: pa.Array, name: str, row_hash: np.ndarray | None = None) -> None:
        arr = plain(arr)
        self.rows += len(arr)
        self.nulls += arr.null_count
        present = pc.drop_null(arr)
        counted = pc.value_counts(present)
        self._add(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist()))
        if self.formats is not None:
            self.formats.update(arr, counted.field("values"), np.asarray(counted.field("counts")), row_hash)
        if self.tracks_prefixes and len(present):
            values, counts = counted.field("values"), counted.field("counts")
            if pa.types.is_string_view(values.type):  # the string kernels below take string and large_string
                values = values.cast(pa.large_string())
            self.prefixes_used |= {p for p in ID_PREFIXES if pc.any(pc.starts_with(values, p)).as_py()}
            self.shape.update(values, counts)
            self.templates.update(values, counts)

    def merge(self, other: "CategorySketch") -> None:
        self.rows += other.rows
        self.nulls += other.nulls
        self.pruned |= other.pruned
        self.prefixes_used |= other.prefixes_used
        self.shape.merge(other.shape)
        self.templates.merge(other.templates)
        if self.formats is not None:
            self.formats.merge(other.formats)
        self._add(other.counts.items())

    def _add(self, pairs: Iterable[tuple[Any, int]]) -> None:
        self.pruned |= add_counts(self.counts, pairs, self.bound)

    def covered(self, min_count: int) -> float:
        """The share of non-null rows whose value k or more rows hold (what value protection keeps)."""
        present = self.rows - self.nulls
        return sum(count for count in self.counts.values() if count >= min_count) / present if present else 1.0

    def looks_like_id(self, name: str, min_count: int) -> bool:
        """Near-unique (or id-named and mostly unique) and not covered by values seen k times or more."""
        present = self.rows - self.nulls
        if not present:
            return False
        distinct = 1.0 if self.pruned else len(self.counts) / present
        covered = self.covered(min_count)
        unique_enough = distinct >= NEAR_UNIQUE or (named_like_id(name) and distinct >= ID_NAMED_UNIQUE)
        return unique_enough and covered < MAX_ID_COVERAGE
