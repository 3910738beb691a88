"""Table encoder: Arrow table <-> float32 matrices, with a fit / transform / inverse_transform contract.

Numeric values get a quantile-to-normal transform fitted on a bounded uniform
sample (bottom-k by random key: one pass, fixed memory, mergeable across
workers). It copes with skew and point masses (Adult's capital-gain is 92%
zeros) because every tied value owns a z interval and decodes back to itself;
knots are evenly spaced in z, which keeps float32 round trips exact for
integers. Categories are one-hot with a frequency cap and a rare-value bucket;
a categorical null is one more class. Numeric nulls get their own indicator.
"""
from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import EncoderConfig
from pipeline.errors import UserError

Z_MAX = 4.0
MAX_SAMPLE_VALUES = 8_000_000
RARE_VALUES_KEPT = 1000
OTHER = "__other__"


@dataclass(frozen=True)
class Span:
    """Where one column's output lives in the matrix, and which likelihood it gets."""
    column: str
    kind: str  # "gaussian" | "softmax" | "bernoulli"
    start: int
    width: int


def infer_kind(field: pa.Field, override: str | None = None) -> str:
    """The column kind from its Arrow type, or the user's override if the type allows it."""
    t = field.type
    if pa.types.is_temporal(t):
        allowed, default = ("integer", "continuous"), "integer"
    elif pa.types.is_integer(t):
        allowed, default = ("integer", "continuous", "categorical"), "integer"
    elif pa.types.is_floating(t):
        allowed, default = ("continuous", "categorical"), "continuous"
    elif (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t)
          or pa.types.is_dictionary(t) or pa.types.is_null(t) or pa.types.is_string_view(t)):
        allowed, default = ("categorical",), "categorical"
    elif pa.types.is_fixed_size_list(t) and (pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type)):
        allowed, default = ("list",), "list"
    else:
        raise UserError(f"column {field.name!r} has Arrow type {t}, which the encoder cannot model; "
                        "cast it to a number, string or fixed-size numeric list before training")
    if override is None:
        return default
    if override not in allowed:
        raise UserError(f"data.columns.{field.name}: kind {override!r} does not fit Arrow type {t}; "
                        f"use one of {', '.join(allowed)}")
    return "integer" if override == "continuous" and not pa.types.is_floating(t) else override


def _storage_type(t: pa.DataType) -> pa.DataType:
    """Temporal values live as their integer storage, so one numeric path serves both."""
    if pa.types.is_temporal(t):
        return pa.int32() if t.bit_width == 32 else pa.int64()
    return t


def _numeric_storage(arr: pa.Array) -> pa.Array:
    return arr.cast(_storage_type(arr.type))


def _plain(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr


def _numeric_values(arr: pa.Array, name: str) -> np.ndarray:
    """Non-null values as float64 rows of shape (n, width)."""
    valid = pc.drop_null(arr)
    if pa.types.is_fixed_size_list(arr.type):
        flat = valid.flatten()
        if flat.null_count:
            raise UserError(f"column {name!r} has nulls inside its lists; fill them or null the whole list")
        return flat.to_numpy(zero_copy_only=False).astype(np.float64).reshape(len(valid), arr.type.list_size)
    return _numeric_storage(valid).to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, 1)


class NumericSketch:
    """One pass over a numeric column: counts, exact bounds and a bounded uniform sample."""

    def __init__(self, width: int, sample_size: int, seed: int):
        self.rows = 0
        self.nulls = 0
        self.capacity = max(100, min(sample_size, MAX_SAMPLE_VALUES // width))
        self.keys = np.empty(0)
        self.sample = np.empty((0, width))
        self.low = np.full(width, np.inf)
        self.high = np.full(width, -np.inf)
        self.rng = np.random.default_rng(seed)

    def update(self, arr: pa.Array, name: str) -> None:
        self.rows += len(arr)
        self.nulls += arr.null_count
        values = _numeric_values(arr, name)
        if not len(values):
            return
        if not np.isfinite(values).all():
            raise UserError(f"column {name!r} holds NaN or infinite values; replace them with nulls or numbers")
        self.low = np.minimum(self.low, values.min(axis=0))
        self.high = np.maximum(self.high, values.max(axis=0))
        self._keep(self.rng.random(len(values)), values)

    def merge(self, other: "NumericSketch") -> None:
        self.rows += other.rows
        self.nulls += other.nulls
        self.low = np.minimum(self.low, other.low)
        self.high = np.maximum(self.high, other.high)
        self._keep(other.keys, other.sample)

    def _keep(self, keys: np.ndarray, values: np.ndarray) -> None:
        keys = np.concatenate([self.keys, keys])
        values = np.concatenate([self.sample, values])
        if len(keys) > self.capacity:
            keep = np.argpartition(keys, self.capacity - 1)[: self.capacity]
            keys, values = keys[keep], values[keep]
        self.keys, self.sample = keys, values


class CategorySketch:
    """Value counts, pruned to a bound so a high-cardinality column never grows without limit."""

    def __init__(self, bound: int):
        self.rows = 0
        self.nulls = 0
        self.counts: dict[Any, int] = {}
        self.bound = bound

    def update(self, arr: pa.Array, name: str) -> None:
        arr = _plain(arr)
        self.rows += len(arr)
        self.nulls += arr.null_count
        counted = pc.value_counts(pc.drop_null(arr))
        self._add(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist()))

    def merge(self, other: "CategorySketch") -> None:
        self.rows += other.rows
        self.nulls += other.nulls
        self._add(other.counts.items())

    def _add(self, pairs: Iterable[tuple[Any, int]]) -> None:
        for value, count in pairs:
            self.counts[value] = self.counts.get(value, 0) + count
        if len(self.counts) > 2 * self.bound:
            self.counts = dict(sorted(self.counts.items(), key=lambda kv: -kv[1])[: self.bound])


class EncoderSketch:
    """Streaming fit state for a whole table; `update` per batch, `merge` across workers, then `finalize`."""

    def __init__(self, schema: pa.Schema, conditions: list[str], config: EncoderConfig,
                 column_kinds: dict[str, str] | None = None, seed: int = 0):
        column_kinds = column_kinds or {}
        for name in [*conditions, *column_kinds]:
            if name not in schema.names:
                raise UserError(f"column {name!r} is not in the table; its columns are: {', '.join(schema.names)}")
        self.schema = schema
        self.conditions = list(conditions)
        self.config = config
        self.kinds = {f.name: infer_kind(f, column_kinds.get(f.name)) for f in schema}
        for name in conditions:
            if self.kinds[name] == "list":
                raise UserError(f"data.conditions: {name!r} is a list column; condition on scalar columns only")
        self.sketches: dict[str, NumericSketch | CategorySketch] = {}
        for i, field in enumerate(schema):
            if self.kinds[field.name] == "categorical":
                self.sketches[field.name] = CategorySketch(max(10 * config.max_categories, 10 * RARE_VALUES_KEPT))
            else:
                width = field.type.list_size if self.kinds[field.name] == "list" else 1
                self.sketches[field.name] = NumericSketch(width, config.sample_size, seed * 1_000_003 + i)
        self.combinations: dict[tuple, int] = {}

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        if batch.schema.names != self.schema.names:
            raise UserError(f"a data file has columns {batch.schema.names}, expected {self.schema.names}; "
                            "every Parquet file under data.path must share one schema")
        for name, sketch in self.sketches.items():
            sketch.update(_plain(batch.column(name)), name)
        keys = pa.table({name: _numeric_storage(_plain(batch.column(name))) for name in self.conditions})
        grouped = keys.group_by(self.conditions, use_threads=False).aggregate([([], "count_all")])
        counts = grouped.column("count_all").to_pylist()
        combos = zip(*(grouped.column(name).to_pylist() for name in self.conditions))
        self._add_combinations(zip(combos, counts))

    def merge(self, other: "EncoderSketch") -> "EncoderSketch":
        for name, sketch in self.sketches.items():
            sketch.merge(other.sketches[name])
        self._add_combinations(other.combinations.items())
        return self

    def _add_combinations(self, pairs: Iterable[tuple[tuple, int]]) -> None:
        for combo, count in pairs:
            self.combinations[combo] = self.combinations.get(combo, 0) + count
        limit = self.config.max_condition_combinations
        if len(self.combinations) > 2 * limit:
            self.combinations = dict(sorted(self.combinations.items(), key=lambda kv: -kv[1])[:limit])

    def finalize(self) -> "TableEncoder":
        rows = next(iter(self.sketches.values())).rows
        if rows == 0:
            raise UserError("the training table has no rows; point data.path at a non-empty table")
        for name in self.conditions:
            if self.sketches[name].nulls == rows:
                raise UserError(f"condition column {name!r} is entirely null; choose another data.conditions column")
        codecs = {}
        for field in self.schema:
            sketch = self.sketches[field.name]
            if isinstance(sketch, CategorySketch):
                codecs[field.name] = CategoricalCodec.fit(field, sketch, self.config.max_categories)
            else:
                codecs[field.name] = NumericCodec.fit(field, self.kinds[field.name], sketch, self.config.quantiles)
        top = sorted(self.combinations.items(), key=lambda kv: -kv[1])[: self.config.max_condition_combinations]
        distribution = [{"values": list(combo), "count": count} for combo, count in top]
        return TableEncoder(self.schema, self.conditions, codecs, distribution, self.config.unseen)


class NumericCodec:
    """Quantile-to-normal transform per element, plus a null indicator when the column had nulls."""

    def __init__(self, name: str, arrow_type: pa.DataType, kind: str, knots: list[dict[str, list[float]]],
                 low: list[float], high: list[float], null_rate: float, nullable: bool):
        self.name, self.arrow_type, self.kind = name, arrow_type, kind
        self.knots, self.low, self.high = knots, low, high
        self.null_rate, self.nullable = null_rate, nullable
        self._decode = [_decoding_knots(k) for k in knots]
        self._encode = [(np.asarray(k["values"]), np.asarray(k["z_low"]), np.asarray(k["z_high"])) for k in knots]

    @property
    def size(self) -> int:
        """Numeric elements per row (1, or the list length); 0 for a column that was all null."""
        return len(self.knots)

    @property
    def width(self) -> int:
        return self.size + self.nullable

    @classmethod
    def fit(cls, field: pa.Field, kind: str, sketch: NumericSketch, quantiles: int) -> "NumericCodec":
        knots = []
        if len(sketch.sample):
            z_grid = np.linspace(-Z_MAX, Z_MAX, quantiles + 1)
            probs = np.array([0.5 * (1.0 + math.erf(z / math.sqrt(2.0))) for z in z_grid])
            ordered = np.sort(sketch.sample, axis=0)
            index = np.clip(np.ceil(probs * len(ordered)).astype(int) - 1, 0, len(ordered) - 1)
            for j in range(ordered.shape[1]):
                values = ordered[index, j]
                values[0], values[-1] = sketch.low[j], sketch.high[j]
                unique, first = np.unique(values, return_index=True)
                last = len(values) - 1 - np.unique(values[::-1], return_index=True)[1]
                knots.append({"values": unique.tolist(), "z_low": z_grid[first].tolist(), "z_high": z_grid[last].tolist()})
        low = sketch.low.tolist() if len(sketch.sample) else []
        high = sketch.high.tolist() if len(sketch.sample) else []
        return cls(field.name, field.type, kind, knots, low, high, sketch.nulls / max(sketch.rows, 1), sketch.nulls > 0)

    def spans(self, start: int) -> list[Span]:
        spans = [Span(self.name, "gaussian", start + j, 1) for j in range(self.size)]
        if self.nullable:
            spans.append(Span(self.name, "bernoulli", start + self.size, 1))
        return spans

    def encode(self, arr: pa.Array) -> np.ndarray:
        out = np.zeros((len(arr), self.width), dtype=np.float32)
        if self.size:
            valid = np.asarray(arr.is_valid())
            values = _numeric_values(arr, self.name)
            for j, (unique, z_low, z_high) in enumerate(self._encode):
                out[valid, j] = _to_z(values[:, j], unique, z_low, z_high)
        if self.nullable:
            out[:, self.size] = np.asarray(arr.is_null(), dtype=np.float32)
        return out

    def decode(self, block: np.ndarray, rng: np.random.Generator) -> pa.Array:
        n = len(block)
        is_null = block[:, self.size] > 0.5 if self.nullable else np.zeros(n, dtype=bool)
        if not self.size:
            return pa.nulls(n, self.arrow_type)
        values = np.stack([np.interp(block[:, j].astype(np.float64), z_knots, x_knots)
                           for j, (z_knots, x_knots) in enumerate(self._decode)], axis=1)
        value_type = self.arrow_type.value_type if self.kind == "list" else _storage_type(self.arrow_type)
        if pa.types.is_integer(value_type):
            values = np.clip(np.rint(values), self.low, self.high)
        if self.kind == "list":
            child = pa.array(values.ravel()).cast(value_type, safe=False)
            return pa.FixedSizeListArray.from_arrays(child, type=self.arrow_type, mask=pa.array(is_null))
        return pa.array(values[:, 0], mask=is_null).cast(value_type, safe=False).cast(self.arrow_type)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "knots": self.knots, "low": self.low, "high": self.high,
                "null_rate": self.null_rate, "nullable": self.nullable}


def _to_z(x: np.ndarray, unique: np.ndarray, z_low: np.ndarray, z_high: np.ndarray) -> np.ndarray:
    """Ties map to the middle of their z interval; values between knots interpolate linearly in z."""
    upper = np.clip(np.searchsorted(unique, x, side="left"), 0, len(unique) - 1)
    lower = np.clip(upper - 1, 0, len(unique) - 1)
    gap = unique[upper] - unique[lower]
    fraction = np.divide(x - unique[lower], gap, out=np.zeros_like(x), where=gap > 0)
    between = z_high[lower] + fraction * (z_low[upper] - z_high[lower])
    middle = (z_low[upper] + z_high[upper]) / 2
    z = np.where(unique[upper] == x, middle, between)
    z = np.where(x < unique[0], z_low[0], z)
    return np.where(x > unique[-1], z_high[-1], z)


def _decoding_knots(knots: dict[str, list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Strictly increasing z knots; a tied value spans [z_low, z_high] and decodes to itself."""
    z, x = [], []
    for value, low, high in zip(knots["values"], knots["z_low"], knots["z_high"]):
        z.extend([low, high] if high > low else [low])
        x.extend([value, value] if high > low else [value])
    return np.asarray(z), np.asarray(x)


class CategoricalCodec:
    """One-hot over the kept categories, then an optional rare-value bucket, then an optional null class."""

    def __init__(self, name: str, arrow_type: pa.DataType, categories: list[Any], frequencies: list[float],
                 rare_values: list[Any], rare_weights: list[float], nullable: bool):
        self.name, self.arrow_type = name, arrow_type
        self.categories, self.frequencies = categories, frequencies
        self.rare_values, self.rare_weights = rare_values, rare_weights
        self.nullable = nullable
        value_type = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
        self._value_type = pa.string() if pa.types.is_null(value_type) else value_type
        self._lookup = pa.array(categories, self._value_type)
        self._vocabulary = pa.array(categories + rare_values, self._value_type)
        self._rare = pa.array(rare_values, self._value_type)

    @property
    def has_other(self) -> bool:
        return bool(self.rare_values)

    @property
    def width(self) -> int:
        return len(self.categories) + self.has_other + self.nullable

    @classmethod
    def fit(cls, field: pa.Field, sketch: CategorySketch, max_categories: int) -> "CategoricalCodec":
        ranked = sorted(sketch.counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
        kept = len(ranked) if len(ranked) <= max_categories else max_categories - 1
        rare = ranked[kept: kept + RARE_VALUES_KEPT]
        rare_total = sum(count for _, count in rare) or 1
        return cls(field.name, field.type, [v for v, _ in ranked[:kept]],
                   [c / max(sketch.rows, 1) for _, c in ranked[:kept]],
                   [v for v, _ in rare], [c / rare_total for _, c in rare], sketch.nulls > 0)

    def spans(self, start: int) -> list[Span]:
        return [Span(self.name, "softmax", start, self.width)]

    def encode(self, arr: pa.Array, unseen: str) -> np.ndarray:
        arr = _plain(arr)
        index = pc.index_in(arr.cast(self._value_type), value_set=self._lookup)
        out = np.zeros((len(arr), self.width), dtype=np.float32)
        found = np.asarray(index.is_valid())
        out[found, np.asarray(index.filter(index.is_valid()))] = 1.0
        is_null = np.asarray(arr.is_null(), dtype=bool)
        if self.nullable:
            out[is_null, self.width - 1] = 1.0
        unknown = ~found & ~(is_null & self.nullable)
        if self.has_other and unknown.any():
            rare = np.asarray(pc.is_in(arr.cast(self._value_type), value_set=self._rare), dtype=bool) & unknown
            out[rare, len(self.categories)] = 1.0  # seen in training, below the cap: the rare bucket
            unknown &= ~rare
        if unknown.any():
            if unseen == "error":
                examples = sorted({str(v) for v in arr.filter(pa.array(unknown)).to_pylist()[:1000]})[:3]
                raise UserError(f"column {self.name!r}: {int(unknown.sum())} value(s) not seen in training "
                                f"(e.g. {', '.join(examples)}); set encoder.unseen=other to map them to the rare bucket")
            if self.has_other:
                out[unknown, len(self.categories)] = 1.0
        return out

    def decode(self, block: np.ndarray, rng: np.random.Generator) -> pa.Array:
        if pa.types.is_null(self.arrow_type):
            return pa.nulls(len(block))
        choice = block.argmax(axis=1).astype(np.int64)
        kept = len(self.categories)
        if self.has_other:
            rare_rows = choice == kept
            choice[rare_rows] = kept + rng.choice(len(self.rare_values), size=int(rare_rows.sum()), p=self.rare_weights)
        is_null = choice == self.width - 1 if self.nullable else None
        return pc.take(self._vocabulary, pa.array(choice, mask=is_null)).cast(self.arrow_type)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "categorical", "categories": self.categories, "frequencies": self.frequencies,
                "rare_values": self.rare_values, "rare_weights": self.rare_weights, "nullable": self.nullable}


Codec = NumericCodec | CategoricalCodec


class TableEncoder:
    """A fitted encoder: feature matrix x for the columns the model reconstructs, condition matrix c for the rest."""

    def __init__(self, schema: pa.Schema, conditions: list[str], codecs: dict[str, Codec],
                 condition_distribution: list[dict[str, Any]], unseen: str = "error"):
        self.schema = schema
        self.conditions = list(conditions)
        self.features = [name for name in schema.names if name not in conditions]
        self.codecs = codecs
        self.condition_distribution = condition_distribution
        self.unseen = unseen
        self.feature_spans = self._spans(self.features)
        self.condition_spans = self._spans(self.conditions)

    @classmethod
    def fit(cls, batches: Iterable[pa.RecordBatch | pa.Table], conditions: list[str], config: EncoderConfig,
            column_kinds: dict[str, str] | None = None, seed: int = 0) -> "TableEncoder":
        """One pass over the batches in bounded memory."""
        sketch = None
        for batch in batches:
            if sketch is None:
                sketch = EncoderSketch(batch.schema, conditions, config, column_kinds, seed)
            sketch.update(batch)
        if sketch is None:
            raise UserError("the training table has no rows; point data.path at a non-empty table")
        return sketch.finalize()

    def _spans(self, names: list[str]) -> list[Span]:
        spans, start = [], 0
        for name in names:
            codec = self.codecs[name]
            spans.extend(codec.spans(start))
            start += codec.width
        return spans

    @property
    def x_dim(self) -> int:
        return sum(self.codecs[name].width for name in self.features)

    @property
    def c_dim(self) -> int:
        return sum(self.codecs[name].width for name in self.conditions)

    def transform(self, table: pa.Table | pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        """(x, c) float32 matrices for the feature and condition columns."""
        missing = [name for name in self.schema.names if name not in table.schema.names]
        if missing:
            raise UserError(f"table lacks column(s) {', '.join(missing)} that the encoder was fitted on; "
                            "use data with the training schema")
        return self._encode(table, self.features), self.encode_conditions(table)

    def encode_conditions(self, table: pa.Table | pa.RecordBatch) -> np.ndarray:
        return self._encode(table, self.conditions)

    def _encode(self, table: pa.Table | pa.RecordBatch, names: list[str]) -> np.ndarray:
        blocks = []
        for name in names:
            codec = self.codecs[name]
            column = _plain(table.column(name))
            blocks.append(codec.encode(column, self.unseen) if isinstance(codec, CategoricalCodec) else codec.encode(column))
        if not blocks:
            return np.zeros((table.num_rows, 0), dtype=np.float32)
        return np.concatenate(blocks, axis=1)

    def inverse_transform(self, x: np.ndarray, conditions: pa.Table, rng: np.random.Generator | None = None) -> pa.Table:
        """Rows in the training schema: features decoded from x, condition columns copied from `conditions` exactly."""
        rng = rng or np.random.default_rng(0)
        if x.shape != (conditions.num_rows, self.x_dim):
            raise ValueError(f"x has shape {x.shape}, expected ({conditions.num_rows}, {self.x_dim})")
        columns, start = {}, 0
        for name in self.features:
            codec = self.codecs[name]
            columns[name] = codec.decode(x[:, start: start + codec.width], rng)
            start += codec.width
        for name in self.conditions:
            columns[name] = _plain(conditions.column(name)).cast(self.schema.field(name).type)
        return pa.table([columns[name] for name in self.schema.names], schema=self.schema)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "cvae-table-encoder/1",
            "schema": base64.b64encode(self.schema.serialize().to_pybytes()).decode("ascii"),
            "columns": [{"name": f.name, "type": str(f.type)} for f in self.schema],
            "conditions": self.conditions,
            "unseen": self.unseen,
            "codecs": {name: codec.to_dict() for name, codec in self.codecs.items()},
            "condition_distribution": self.condition_distribution,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TableEncoder":
        if not isinstance(data, dict) or data.get("format") != "cvae-table-encoder/1":
            raise UserError("encoder JSON is not a cvae-table-encoder/1 document; re-export the model")
        try:
            schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(data["schema"])))
            codecs: dict[str, Codec] = {}
            for field in schema:
                spec = data["codecs"][field.name]
                if spec["kind"] == "categorical":
                    codecs[field.name] = CategoricalCodec(field.name, field.type, spec["categories"], spec["frequencies"],
                                                          spec["rare_values"], spec["rare_weights"], spec["nullable"])
                else:
                    codecs[field.name] = NumericCodec(field.name, field.type, spec["kind"], spec["knots"], spec["low"],
                                                      spec["high"], spec["null_rate"], spec["nullable"])
            return cls(schema, data["conditions"], codecs, data["condition_distribution"], data["unseen"])
        except (KeyError, TypeError, ValueError, pa.ArrowInvalid) as exc:
            raise UserError(f"encoder JSON is malformed ({type(exc).__name__}: {exc}); re-export the model") from None

    @classmethod
    def from_json(cls, text: str) -> "TableEncoder":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise UserError(f"encoder JSON does not parse ({exc}); re-export the model") from None
