"""Arrow types and casts every codec shares: numbers, dates, times and decimals live as one numeric storage type,
dictionary and chunked arrays are read plain, and values JSON lacks a type for are written as strings."""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import UserError


def is_string_like(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def is_numeric_temporal(t: pa.DataType) -> bool:
    """Dates, times, timestamps and durations: integers underneath. Intervals are not."""
    return (pa.types.is_date(t) or pa.types.is_time(t) or pa.types.is_timestamp(t)
            or pa.types.is_duration(t))


def storage_type(t: pa.DataType) -> pa.DataType:
    """Temporal values live as their integer storage (date64 as days, the unit its values come in) and
    decimals as doubles, so one numeric path serves all."""
    if pa.types.is_date64(t):
        return pa.int32()
    if is_numeric_temporal(t):
        return pa.int32() if t.bit_width == 32 else pa.int64()
    if pa.types.is_decimal(t):
        return pa.float64()
    return t


def numeric_storage(arr: pa.Array) -> pa.Array:
    if pa.types.is_date64(arr.type):
        arr = arr.cast(pa.date32())
    return arr.cast(storage_type(arr.type))


def from_storage(arr: pa.Array, arrow_type: pa.DataType) -> pa.Array:
    if pa.types.is_date64(arrow_type):
        return arr.cast(pa.date32()).cast(arrow_type)
    return arr.cast(arrow_type)


def written(numbers: Any, arrow_type: pa.DataType | None) -> list[str]:
    """Numbers of a column's storage as its values read: `1987-10-19` for a date, not 6500."""
    if arrow_type is None or not is_numeric_temporal(arrow_type):
        return [f"{number:g}" for number in numbers]
    storage = pa.array(np.floor(np.asarray(numbers, dtype=np.float64))).cast(storage_type(arrow_type), safe=False)
    return [str(value) for value in from_storage(storage, arrow_type).to_pylist()]


def plain(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr


def numeric_values(arr: pa.Array, name: str) -> np.ndarray:
    """Non-null values as float64 rows of shape (n, width)."""
    valid = pc.drop_null(arr)
    if pa.types.is_fixed_size_list(arr.type):
        flat = valid.flatten()
        if flat.null_count:
            raise UserError(f"column {name!r} has nulls inside its lists; fill them or null the whole list")
        values = flat.to_numpy(zero_copy_only=False).astype(np.float64).reshape(len(valid), arr.type.list_size)
    else:
        values = numeric_storage(valid).to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, 1)
    if not np.isfinite(values).all():
        raise UserError(f"column {name!r} holds NaN or infinite values; replace them with nulls or numbers")
    return values


def json_value(value: Any) -> Any:
    """Category and condition values JSON has no type for (dates, times, decimals, bytes) as strings;
    they are cast back to the column's Arrow type when read."""
    return str(value)
