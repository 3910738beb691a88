"""Condition plans: which condition rows to generate, addressable by row range without materializing them.

`generate.conditions` is one of:
- `proportional`: `generate.num_rows` rows spread over the training distribution of conditions;
- `{column: {value: count}}`: counts per value of one condition column;
- `[{column: value, ..., count: N}]`: counts per combination (columns left out are filled in
  from the training distribution of combinations that match the given ones);
- a Parquet URI of condition rows: one synthetic row per row, in order.
Every value is checked against the model's encoder before anything is written.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import GenerateConfig
from pipeline.codec import TableEncoder
from pipeline.codec.arrow import numeric_storage, plain, written
from pipeline.errors import UserError
from pipeline.storage import digest, parquet_files, redact

COUNT_KEY = "count"


class ConditionPlan(Protocol):
    num_rows: int

    def rows(self, start: int, stop: int) -> pa.Table: ...

    def fingerprint(self) -> str: ...


@dataclass
class CountsPlan:
    """Blocks of identical condition rows: (combination, count) in a fixed order."""
    schema: pa.Schema
    combos: list[list[Any]]
    counts: list[int]
    offsets: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.offsets = np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)])
        self._values = [pa.array([combo[i] for combo in self.combos], f.type) for i, f in enumerate(self.schema)]

    @property
    def num_rows(self) -> int:
        return int(self.offsets[-1])

    def rows(self, start: int, stop: int) -> pa.Table:
        combo = np.searchsorted(self.offsets, np.arange(start, stop), side="right") - 1
        index = pa.array(combo)
        return pa.table([values.take(index) for values in self._values], schema=self.schema)

    def fingerprint(self) -> str:
        return _sha({"combos": self.combos, "counts": self.counts}, default=str)


@dataclass
class ParquetPlan:
    """Condition rows read from Parquet files, one row group at a time."""
    uri: str
    storage_options: dict[str, Any]
    schema: pa.Schema
    row_groups: list[tuple[str, int, int]]  # (file, row group, rows)
    files_digest: str

    @property
    def num_rows(self) -> int:
        return sum(rows for _, _, rows in self.row_groups)

    def rows(self, start: int, stop: int) -> pa.Table:
        from pipeline.storage import filesystem

        fs, _ = filesystem(self.uri, self.storage_options)
        pieces, offset = [], 0
        for path, group, rows in self.row_groups:
            if offset + rows > start and offset < stop:
                with fs.open(path, "rb") as handle:
                    table = pq.ParquetFile(handle).read_row_group(group, columns=self.schema.names)
                lo, hi = max(start - offset, 0), min(stop - offset, rows)
                pieces.append(_cast(table.slice(lo, hi - lo), self.schema))
            offset += rows
            if offset >= stop:
                break
        return pa.concat_tables(pieces) if pieces else self.schema.empty_table()

    def fingerprint(self) -> str:
        return _sha({"uri": redact(self.uri), "files": self.files_digest, "rows": self.num_rows})


def _sha(value: Any, default: Any = None) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=default).encode()).hexdigest()[:16]


def _cast(table: pa.Table, schema: pa.Schema) -> pa.Table:
    try:
        return pa.table([table.column(f.name).cast(f.type) for f in schema], schema=schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise UserError(f"condition rows do not fit the training types {schema}: {exc}") from None


def build_plan(config: GenerateConfig, encoder: TableEncoder, storage_options: dict[str, Any] | None = None) -> ConditionPlan:
    """The validated plan for `generate.conditions`; raises UserError before anything is written."""
    spec = config.conditions
    schema = encoder.condition_schema()
    if spec == "proportional":
        if not encoder.condition_distribution:
            raise UserError("generate.conditions=proportional: no condition combination of this differentially "
                            "private model passed its noise threshold; request conditions by value, e.g. "
                            "{column: {value: count}}, or retrain with a larger train.privacy.epsilon")
        combos = [_coerce(schema, dict(zip(encoder.conditions, entry["values"])), "the training distribution")
                  for entry in encoder.condition_distribution]
        counts = apportion(config.num_rows, [entry["count"] for entry in encoder.condition_distribution])
        return _counts_plan(schema, combos, counts)
    if isinstance(spec, str):
        return _parquet_plan(spec, storage_options or {}, schema, encoder, config.allow_unseen_continuous)
    if isinstance(spec, dict):
        if len(spec) != 1:
            raise UserError("generate.conditions: the {column: {value: count}} form takes one column; "
                            "for several columns use a list of {column: value, ..., count: N}")
        (column, counts), = spec.items()
        requests = [({column: value}, count) for value, count in counts.items()]
    else:
        requests = []
        for i, entry in enumerate(spec):
            if COUNT_KEY not in entry:
                raise UserError(f"generate.conditions[{i}]: missing 'count'; write {{column: value, ..., count: N}}")
            values = {k: v for k, v in entry.items() if k != COUNT_KEY}
            requests.append((values, entry[COUNT_KEY]))
    combos, counts = [], []
    for values, count in requests:
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise UserError(f"generate.conditions: count for {values} must be a positive integer, got {count!r}")
        for combo, share in _expand(schema, encoder, values, count, config.allow_unseen_continuous):
            combos.append(combo)
            counts.append(share)
    return _counts_plan(schema, combos, counts)


def _counts_plan(schema: pa.Schema, combos: list[list[Any]], counts: list[int]) -> CountsPlan:
    kept = [(combo, count) for combo, count in zip(combos, counts) if count > 0]
    if not kept:
        raise UserError("generate: the plan has no rows; set generate.num_rows or the counts to at least 1")
    return CountsPlan(schema, [combo for combo, _ in kept], [count for _, count in kept])


def apportion(total: int, weights: list[float]) -> list[int]:
    """Split `total` in proportion to `weights` by rounding the running total: exact, deterministic, each count
    within one of its quota, and the extra rows of equal weights spread evenly along the list (largest remainder
    would give them all to the first entries: to the earliest dates when each date is one combination)."""
    running = np.cumsum(np.asarray(weights, dtype=np.float64))
    edges = np.floor(total * running / running[-1] + 0.5).astype(np.int64)
    edges[-1] = total
    return np.diff(edges, prepend=0).tolist()


def _expand(schema: pa.Schema, encoder: TableEncoder, values: dict[str, Any], count: int,
            allow_unseen_continuous: bool) -> list[tuple[list[Any], int]]:
    """A (possibly partial) combination -> full combinations with their share of `count`."""
    for name in values:
        if name not in encoder.conditions:
            known = ", ".join(encoder.conditions)
            raise UserError(f"generate.conditions: {name!r} is not a condition column of this model (it has: {known})")
    given = _coerce(schema, values, "generate.conditions")
    for name in values:
        _check_seen(encoder, name, given[schema.get_field_index(name)], allow_unseen_continuous)
    if len(values) == len(encoder.conditions):
        return [(given, count)]
    matches = []
    for entry in encoder.condition_distribution:
        combo = _coerce(schema, dict(zip(encoder.conditions, entry["values"])), "the training distribution")
        if all(combo[schema.get_field_index(name)] == given[schema.get_field_index(name)] for name in values):
            matches.append((combo, entry["count"]))
    if not matches:
        raise UserError(f"generate.conditions: no training rows have {values}; give a value for every condition "
                        f"column ({', '.join(encoder.conditions)})")
    shares = apportion(count, [weight for _, weight in matches])
    return [(combo, share) for (combo, _), share in zip(matches, shares)]


def _coerce(schema: pa.Schema, values: dict[str, Any], where: str) -> list[Any]:
    """Values in the training column types, in condition-column order."""
    combo = []
    for f in schema:
        try:
            combo.append(pa.array([values.get(f.name)]).cast(f.type)[0].as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            raise UserError(f"{where}: {f.name}={values.get(f.name)!r} is not a {f.type} value") from None
    return combo


def _check_seen(encoder: TableEncoder, name: str, value: Any, allow_unseen_continuous: bool) -> None:
    codec = encoder.codecs[name]
    if value is None:
        if not codec.nullable:
            raise UserError(f"generate.conditions: {name}=null never occurs in training; request a non-null value")
        return
    levels = codec.levels()
    if levels is not None:
        if value not in levels:
            if encoder.privacy is not None and name not in encoder.privacy.get("public", []):
                raise UserError(f"generate.conditions: {name}={value!r} is not among the values this differentially "
                                "private model kept (a value must be frequent enough to pass its noise threshold); "
                                "request a kept value, or retrain with a larger train.privacy.epsilon")
            shown = ", ".join(map(str, levels[:8])) + (" ..." if len(levels) > 8 else "")
            raise UserError(f"generate.conditions: {name}={value!r} was never seen in training (seen: {shown})")
        return
    column = pa.array([value], encoder.condition_schema().field(name).type)
    _check_range(encoder, name, column, allow_unseen_continuous)


def _check_range(encoder: TableEncoder, name: str, column: pa.Array, allow_unseen_continuous: bool) -> None:
    """Numbers, dates and times (native, or held in strings in the column's formats) within the training range."""
    codec = encoder.codecs[name]
    modelled = codec.modelled_values(column)
    if modelled.null_count > column.null_count:  # a string no format of the column reads
        unread = pc.filter(column, pc.and_(pc.is_valid(column), pc.is_null(modelled)))[0].as_py()
        raise UserError(f"generate.conditions: {name}={unread!r} is not written as the training values are "
                        f"({codec.written_as()}); write it that way")
    numbers = numeric_storage(pc.drop_null(modelled)).to_numpy(zero_copy_only=False).astype(np.float64)
    if not len(numbers):
        return
    low, high = codec.bounds()
    for number in (numbers.min(), numbers.max()):
        if not low <= number <= high:
            shown = written([number, low, high], codec.modelled_type)
            message = (f"generate.conditions: {name}={shown[0]} is outside the training range "
                       f"[{shown[1]}, {shown[2]}]")
            if not allow_unseen_continuous:
                raise UserError(message + "; set generate.allow_unseen_continuous=true to extrapolate")
            warnings.warn(message + "; extrapolating", stacklevel=2)
            return


def _parquet_plan(uri: str, storage_options: dict[str, Any], schema: pa.Schema, encoder: TableEncoder,
                  allow_unseen_continuous: bool) -> ParquetPlan:
    fs, files = parquet_files(uri, storage_options)
    row_groups = []
    for path in files:
        try:
            with fs.open(path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                missing = [name for name in schema.names if name not in parquet.schema_arrow.names]
                if missing:
                    raise UserError(f"generate.conditions {redact(uri)}: {path} lacks condition column(s) "
                                    f"{', '.join(missing)}")
                row_groups.extend((path, i, parquet.metadata.row_group(i).num_rows)
                                  for i in range(parquet.num_row_groups))
                for batch in parquet.iter_batches(columns=schema.names, batch_size=65536):
                    _check_batch(encoder, _cast(pa.Table.from_batches([batch]), schema), allow_unseen_continuous)
        except pa.ArrowInvalid as exc:
            raise UserError(f"generate.conditions {redact(uri)}: {path} is not a readable Parquet file ({exc})") from None
    plan = ParquetPlan(uri, storage_options, schema, row_groups, digest(fs, files))
    if plan.num_rows == 0:
        raise UserError(f"generate.conditions {redact(uri)} holds no rows; give at least one condition row")
    return plan


def _check_batch(encoder: TableEncoder, table: pa.Table, allow_unseen_continuous: bool) -> None:
    for name in table.column_names:
        column = plain(table.column(name))
        if encoder.codecs[name].levels() is not None:
            for value in pc.unique(column).to_pylist():
                _check_seen(encoder, name, value, allow_unseen_continuous)
            continue
        if column.null_count:
            _check_seen(encoder, name, None, allow_unseen_continuous)
        _check_range(encoder, name, column, allow_unseen_continuous)
