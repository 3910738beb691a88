"""Numbers that are clock times written HHMM (flights' dep_time 517 is 05:17, 2400 is midnight): modelled as
minutes since midnight by a numeric codec and written back as HHMM, so every generated value is a time of day.

Modelled as plain numbers they came back as 1996, 984 or 2012.88: values between two real ones that no clock
shows. A column is read as one when every value is a whole number from 0 to 2400 whose last two digits are
below 60, at least one is 100 or more and its sample holds many distinct values (a month or an hour of day never
qualifies): a column of other numbers breaks that in two rows of five. HHMM order is time order, so the
column's statistics (sample, bounds) carry over to minutes value by value; the model never sees the gaps
between 59 and 100.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.codec.arrow import numeric_storage
from pipeline.codec.base import DecodeContext, FitSettings
from pipeline.codec.numeric import NumericCodec, ReadAsNumbers
from pipeline.codec.sketches import NumericSketch

MIN_CLOCK_VALUES = 60  # distinct sampled values a clock column shows (hours of day, 0-23, are not one)


def is_clock(sketch: NumericSketch) -> bool:
    """Every value HHMM (counted as the sketch saw them), some past 99, many distinct."""
    return (sketch.width == 1 and sketch.values > 0 and sketch.not_clock == 0 and len(sketch.largest)
            and float(sketch.largest[-1, 0]) >= 100 and len(np.unique(sketch.sample[:, 0])) >= MIN_CLOCK_VALUES)


def minutes(hhmm: np.ndarray) -> np.ndarray:
    """517 -> 317, 2400 -> 1440: monotonic, so quantiles and bounds map value by value."""
    return np.floor(hhmm / 100) * 60 + np.mod(hhmm, 100)


def hhmm(minute: np.ndarray) -> np.ndarray:
    minute = np.round(minute)
    return np.floor(minute / 60) * 100 + np.mod(minute, 60)


class ClockCodec(ReadAsNumbers):
    """An HHMM column read as minutes since midnight into an integer NumericCodec."""
    kinds = ("clock",)

    def __init__(self, name: str, arrow_type: pa.DataType, inner: NumericCodec):
        self.name, self.arrow_type, self.kind, self.inner = name, arrow_type, "clock", inner
        self.nullable = inner.nullable

    @classmethod
    def fit(cls, field: pa.Field, kind: str, sketch: NumericSketch, settings: FitSettings) -> "ClockCodec":
        in_minutes = copy.copy(sketch)
        in_minutes.sample, in_minutes.smallest, in_minutes.largest = (
            minutes(values) for values in (sketch.sample, sketch.smallest, sketch.largest))
        return cls(field.name, field.type, NumericCodec.fit(pa.field(field.name, pa.int64()), "integer", in_minutes,
                                                            settings))

    @classmethod
    def fit_private(cls, field: pa.Field, kind: str, sketch: Any, settings: FitSettings, noise: Any,
                    fine: Any) -> "ClockCodec":
        raise ValueError("clock columns are found from exact values; a private fit keeps them numeric")

    def modelled_values(self, arr: pa.Array) -> pa.Array:
        """The times as minutes since midnight."""
        values = numeric_storage(arr).cast(pa.float64()).to_numpy(zero_copy_only=False)
        return pa.array(minutes(values), mask=np.asarray(arr.is_null())).cast(pa.int64(), safe=False)

    def decode(self, block: np.ndarray, context: DecodeContext) -> pa.Array:
        values = self.inner.decode(block, context)
        valid = np.asarray(values.is_valid(), dtype=bool)
        written = hhmm(values.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64))
        return pa.array(written, mask=~valid).cast(self.arrow_type, safe=False)

    def written_as(self) -> str:
        return "clock times written HHMM (517 = 05:17), modelled as minutes since midnight"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "clock", "inner": self.inner.to_dict()}

    @classmethod
    def from_dict(cls, field: pa.Field, spec: dict[str, Any]) -> "ClockCodec":
        return cls(field.name, field.type, NumericCodec.from_dict(pa.field(field.name, pa.int64()), spec["inner"]))
