"""Audit: the training values that value protection promises never leave, and every place they turn up.

Protected are, outside condition columns, the categories seen in fewer than k training rows and the
numbers beyond the k-th smallest or k-th largest training value (k = `encoder.min_value_count`).
`audit` counts them in a model artifact (every file of it, as text, and the encoder's stored values)
and in a synthetic table; a data engineer runs it before sharing, the tests assert zero. Both sides are read
as the model learns them, through the encoder's rules (pipeline/rules): a fixed group's values as one joined
value (a combination seen in fewer than k rows is protected), a column kept within others as its gap.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.codec import TableEncoder, numeric_storage, plain
from pipeline.rowhash import split_rows
from pipeline.source import read_table
from pipeline.storage import parquet_files


@dataclass
class Protected:
    categories: dict[str, set[Any]] = field(default_factory=dict)           # column -> values seen < k times
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)    # column -> (k-th smallest, k-th largest)

    @property
    def count(self) -> int:
        return sum(len(values) for values in self.categories.values())


def training_split(uri: str, columns: list[str], seed: int, fraction: float) -> pa.Table:
    """The rows `cvae train` trained on (same row hash, seed and fraction), read with Ray Data."""
    fs, files = parquet_files(uri)
    return pa.concat_tables(split_rows(batch, "train", seed, fraction)[0]
                            for batch in read_table(fs, files, columns).iter_batches(batch_format="pyarrow"))


def protected_values(train: pa.Table, encoder: TableEncoder) -> Protected:
    """What the encoder fitted on `train` (the training split) must never store or emit."""
    k, protected = encoder.min_value_count, Protected()
    train = encoder.rules.forward(train)
    for name, kind in encoder.kinds().items():
        if name in encoder.conditions or kind in ("id", "list", "personal"):  # fresh or library values
            continue
        column = pc.drop_null(plain(train.column(name)))
        if kind == "categorical":
            counted = pc.value_counts(column)
            protected.categories[name] = {value for value, count in zip(counted.field("values").to_pylist(),
                                                                        counted.field("counts").to_pylist()) if count < k}
        else:
            values = np.sort(_numbers(column, encoder.codecs[name]))
            usable = len(values) >= 2 * k - 1
            protected.bounds[name] = (values[k - 1], values[-k]) if usable else (math.inf, -math.inf)
    return protected


def audit(protected: Protected, artifact_dir: str | Path, synthetic: pa.Table) -> dict[str, int]:
    """Hits of protected values: in the artifact's text files, in the encoder's stored values, in the rows."""
    # every file but weights and the package's own source (a registered pyfunc ships pipeline/ as code: the same for
    # every model, holding no training value, though a word in it may equal one: Faker's country code "IT")
    texts = [path.read_text(errors="ignore") for path in Path(artifact_dir).rglob("*")
             if path.is_file() and path.suffix not in (".pt", ".pkl", ".bin", ".py")]
    encoder_file = next(Path(artifact_dir).rglob("encoder.json"))
    encoder = TableEncoder.from_json(encoder_file.read_text())
    stored_by_column = {name: set(codec.stored_values()) for name, codec in encoder.codecs.items()
                        if codec.kind in ("categorical", "id")}  # the strings; numbers are checked by bounds
    hits = {"artifact_text": 0, "artifact_values": 0, "output_values": 0}
    synthetic = encoder.rules.forward(synthetic)
    for name, values in protected.categories.items():
        # a value rare here may be frequent (and rightly stored) in another column: only the rest is a text hit
        elsewhere = set().union(*(stored for other, stored in stored_by_column.items() if other != name))
        strings = [json.dumps(value) for value in values if isinstance(value, str) and value not in elsewhere]
        hits["artifact_text"] += sum(text.count(quoted) for quoted in strings for text in texts)
        hits["artifact_values"] += len(stored_by_column[name] & values)
        emitted = set(pc.unique(plain(synthetic.column(name))).to_pylist())
        hits["output_values"] += len(emitted & values)
    for name, (low, high) in protected.bounds.items():
        stored = np.asarray(encoder.codecs[name].stored_values(), dtype=np.float64)
        hits["artifact_values"] += int(((stored < low) | (stored > high)).sum())
        emitted = _numbers(pc.drop_null(plain(synthetic.column(name))), encoder.codecs[name])
        hits["output_values"] += int(((emitted < low) | (emitted > high)).sum())
    return hits


def _numbers(column: pa.Array, codec: Any) -> np.ndarray:
    """A column's non-null values as the float64 numbers its codec models (a date string's date)."""
    modelled = pc.drop_null(codec.modelled_values(column))
    return numeric_storage(modelled).to_numpy(zero_copy_only=False).astype(np.float64)
