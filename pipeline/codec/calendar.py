"""Calendar phases: a date or timestamp condition column also feeds the network the phase of its calendar cycles
(time of day, day of week, day of year) as sine and cosine pairs. Its quantile z value orders a year of hours on
one axis, on which the daily cycle is 365 wiggles no small MLP fits, while a phase is one smooth input."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CALENDAR_SECONDS = {"day": 86_400.0, "week": 7 * 86_400.0, "year": 365.2425 * 86_400.0}  # mean Gregorian year
SECONDS_PER_UNIT = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def calendar_cycles(t: pa.DataType) -> list[str]:
    """The calendar cycles a date or timestamp column's condition vector carries (a date has no time of day)."""
    if pa.types.is_timestamp(t):
        return ["day", "week", "year"]
    return ["week", "year"] if pa.types.is_date(t) else []


def calendar_phases(arr: pa.Array, cycles: list[str]) -> np.ndarray:
    """(rows, 2 * len(cycles)) sine and cosine of each cycle's phase, in the column's local time when it has a
    time zone; a null row is all zeros (no phase)."""
    if pa.types.is_timestamp(arr.type):
        local = pc.local_timestamp(arr) if arr.type.tz else arr
        seconds = local.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64)
        seconds *= SECONDS_PER_UNIT[arr.type.unit]
    else:
        seconds = arr.cast(pa.date32()).cast(pa.int32()).to_numpy(zero_copy_only=False).astype(np.float64) * 86_400.0
    out = np.zeros((len(arr), 2 * len(cycles)), dtype=np.float32)
    valid = np.asarray(arr.is_valid())
    for i, cycle in enumerate(cycles):
        angle = 2.0 * np.pi * np.mod(seconds[valid], CALENDAR_SECONDS[cycle]) / CALENDAR_SECONDS[cycle]
        out[valid, 2 * i], out[valid, 2 * i + 1] = np.sin(angle), np.cos(angle)
    return out
