"""Strings that are dates, times, timestamps or numbers (pipeline/codec/text_formats.py): modelled as what they are
by a numeric codec, written back as strings in the formats the training values use, each in its share of rows.

A date string so gets what a native date gets (a quantile transform, point masses, protected bounds) and every
value generated parses in the column's format: no `_RARE_`, no `03:00000:17`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.codec.arrow import numeric_storage
from pipeline.codec.base import DecodeContext, FitSettings
from pipeline.codec.numeric import NumericCodec, ReadAsNumbers
from pipeline.codec.sketches import CategorySketch
from pipeline.codec.text_formats import FAMILIES, TextFormat, read_as


class FormattedCodec(ReadAsNumbers):
    """A string column read through its formats into a NumericCodec of the family's Arrow type."""
    kinds = ("formatted",)

    def __init__(self, name: str, arrow_type: pa.DataType, family: str, formats: list[TextFormat],
                 shares: list[float], inner: NumericCodec, coverage: float):
        self.name, self.arrow_type, self.kind = name, arrow_type, "formatted"
        self.family, self.formats, self.shares, self.inner = family, formats, shares, inner
        self.coverage = coverage  # the share of training values the formats read; the rest were modelled as nulls
        self.nullable = inner.nullable

    @classmethod
    def fit(cls, field: pa.Field, kind: str, sketch: CategorySketch, settings: FitSettings) -> "FormattedCodec":
        choice = sketch.formats.choice(settings.protect or 1)
        if choice is None:
            raise ValueError(f"column {field.name!r} has no format that reads its values")
        inner_type, inner_kind = FAMILIES[choice.family]
        inner = NumericCodec.fit(pa.field(field.name, inner_type), inner_kind, choice.sketch, settings)
        return cls(field.name, field.type, choice.family, choice.formats, choice.shares, inner, choice.coverage)

    @classmethod
    def fit_private(cls, field: pa.Field, kind: str, sketch: Any, settings: FitSettings, noise: Any,
                    fine: Any) -> "FormattedCodec":
        raise ValueError("formats are found from exact counts; a private fit keeps string columns categorical")

    def modelled_values(self, arr: pa.Array) -> pa.Array:
        """The values as the family's Arrow type; null where no format of the column reads them."""
        return read_as(arr, self.formats)

    def decode(self, block: np.ndarray, context: DecodeContext) -> pa.Array:
        """The numbers the model drew, each written in a format drawn by the training values' shares."""
        values = self.inner.decode(block, context)
        valid = np.asarray(values.is_valid(), dtype=bool)
        numbers = numeric_storage(values).fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)
        which = (np.zeros(len(numbers), dtype=np.int64) if len(self.formats) == 1
                 else context.rng.choice(len(self.formats), size=len(numbers), p=self.shares))
        text = np.empty(len(numbers), dtype=object)
        for i, fmt in enumerate(self.formats):
            rows = np.flatnonzero((which == i) & valid)
            if len(rows):
                text[rows] = fmt.render(numbers[rows]).to_numpy(zero_copy_only=False)
        return pa.array(text, pa.string(), mask=~valid).cast(self.arrow_type)

    def written_as(self) -> str:
        """The formats found, for the console and the manifest: `date as %Y-%m-%d`."""
        shown = ", ".join(fmt.describe() if len(self.formats) == 1 else f"{fmt.describe()} {share:.0%}"
                          for fmt, share in zip(self.formats, self.shares))
        unread = f"; {1 - self.coverage:.1%} of values in no format, modelled as nulls" if self.coverage < 1 else ""
        return f"{self.family} as {shown}{unread}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "formatted", "family": self.family, "formats": [fmt.to_dict() for fmt in self.formats],
                "shares": self.shares, "coverage": self.coverage, "inner": self.inner.to_dict()}

    @classmethod
    def from_dict(cls, field: pa.Field, spec: dict[str, Any]) -> "FormattedCodec":
        inner = NumericCodec.from_dict(pa.field(field.name, FAMILIES[spec["family"]][0]), spec["inner"])
        return cls(field.name, field.type, spec["family"], [TextFormat.from_dict(f) for f in spec["formats"]],
                   spec["shares"], inner, spec["coverage"])

