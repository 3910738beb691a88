"""Identifiers (near-unique strings, unique integers named like ids, or `data.columns.NAME: id`): not modelled,
only their nulls; each generated row gets a fresh value that no training value equals, written like the
training ids where they share a format (pipeline/codec/id_formats.py)."""
from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.codec.arrow import is_string_like, storage_type
from pipeline.codec.base import Codec, DecodeContext, FitSettings
from pipeline.codec.id_formats import ID_PREFIXES, IdTemplate, pick_by_weight
from pipeline.codec.kinds import Span
from pipeline.codec.sketches import CategorySketch, NumericSketch
from pipeline.errors import UserError
from pipeline.rowhash import sample_keys


class IdCodec(Codec):
    """An identifier column: not modelled, only its nulls. Generated row i (counted over the whole
    dataset) gets a string written from the training ids' templates where they share a format (IdTemplates),
    else `prefix + i` (i zero-padded to `digits`), or `start + i` for integers: unique within a dataset,
    deterministic, and never a training value (a template's serial run is longer than any training id's run
    of digits; no training string starts with the prefix; every training integer is below `start`, a power
    of ten). A string prefix is the training ids' shared prefix plus a character none of them has next
    (IdShape), or else a marker such as `syn-` that no training id starts with."""
    kinds = ("id",)
    kind = "id"

    def __init__(self, name: str, arrow_type: pa.DataType, prefix: str | None, start: int | None,
                 null_rate: float, nullable: bool, digits: int = 0, templates: list[IdTemplate] | None = None):
        self.name, self.arrow_type = name, arrow_type
        self.prefix, self.start, self.digits = prefix, start, digits
        self.templates = templates
        self.null_rate, self.nullable = null_rate, nullable
        self.stream = zlib.crc32(name.encode())  # the column's random stream: fresh ids depend on no seed

    @property
    def width(self) -> int:
        return int(self.nullable)

    @classmethod
    def fit(cls, field: pa.Field, kind: str, sketch: NumericSketch | CategorySketch, settings: FitSettings) -> "IdCodec":
        """String ids from the training ids' templates, or else their shared prefix, or else a marker; integers
        from the power of ten above the largest training id."""
        min_count = settings.config.min_value_count
        prefix = start = templates = None
        digits = 0
        if isinstance(sketch, CategorySketch):
            templates = sketch.templates.fresh(min_count, sketch.rows - sketch.nulls)
            if templates is None:
                prefix, digits = cls._fresh_prefix(field, sketch, min_count)
        else:
            largest = max(abs(float(sketch.smallest[0, 0])), abs(float(sketch.largest[-1, 0]))) if sketch.values else 0
            start = 10 ** len(str(int(largest)))
        return cls(field.name, field.type, prefix, start, sketch.nulls / max(sketch.rows, 1), sketch.nulls > 0, digits,
                   templates)

    @staticmethod
    def _fresh_prefix(field: pa.Field, sketch: CategorySketch, min_count: int) -> tuple[str, int]:
        """(prefix, digits): the training ids' shared prefix (IdShape), else a marker no training id starts with."""
        shaped = sketch.shape.fresh_prefix(min_count)
        if shaped is not None:
            return shaped
        free = [p for p in ID_PREFIXES if p not in sketch.prefixes_used]
        if not free:
            raise UserError(f"column {field.name!r}: every fresh-id prefix ({', '.join(ID_PREFIXES)}) starts some "
                            f"training value; set data.columns.{field.name}=categorical")
        return free[0], 0

    @classmethod
    def fit_private(cls, field: pa.Field, kind: str, sketch: NumericSketch | CategorySketch, settings: FitSettings,
                    noise: Any, fine: Any = None) -> "IdCodec":
        """Fresh ids that depend on no training value: the first candidate prefix, or integers from the largest
        power of ten the type holds (a training id that starts with the prefix, or is that large, could be
        matched); a noisy null rate."""
        prefix = start = None
        if is_string_like(field.type):
            prefix = ID_PREFIXES[0]
        else:
            start = 10 ** (len(str(np.iinfo(storage_type(field.type).to_pandas_dtype()).max)) - 1)
        noisy_nulls = noise.nulls(sketch.nulls, field.name)
        return cls(field.name, field.type, prefix, start, min(1.0, noisy_nulls / max(sketch.rows, 1)),
                   noisy_nulls >= noise.post_cut(1))

    def spans(self, start: int) -> list[Span]:
        return [Span(self.name, "bernoulli", start, 1)] if self.nullable else []

    def encode(self, arr: pa.Array) -> np.ndarray:
        return np.asarray(arr.is_null(), dtype=np.float32).reshape(-1, 1)[:, : self.width]

    def capacity(self) -> int | None:
        """How many rows fit before integer ids overflow the column's type (None: unbounded)."""
        if self.start is None:
            return None
        return np.iinfo(self.arrow_type.to_pandas_dtype()).max - self.start + 1

    def decode(self, block: np.ndarray, context: DecodeContext) -> pa.Array:
        n, row_offset = len(block), context.row_offset
        is_null = block[:, 0] > 0.5 if self.nullable else None
        index = np.arange(row_offset, row_offset + n, dtype=np.int64)
        if self.templates or self.prefix is not None:
            values = self._written(index) if self.templates else pc.binary_join_element_wise(
                self.prefix, pc.utf8_lpad(pa.array(index).cast(pa.string()), self.digits, "0"), "")
            if is_null is not None:
                values = pc.if_else(pa.array(is_null), pa.scalar(None, pa.string()), values)
            return values.cast(self.arrow_type)
        return pa.array(self.start + index, mask=is_null).cast(self.arrow_type)

    def _written(self, index: np.ndarray) -> pa.Array:
        """Fresh string ids from the templates, each row's template drawn by the templates' shares."""
        template = pick_by_weight([t.weight for t in self.templates], sample_keys(index, self.stream))
        values = np.empty(len(index), dtype=object)
        for i in np.unique(template).tolist():
            rows = np.flatnonzero(template == i)
            values[rows] = self.templates[i].write(index[rows], self.stream + 1 + i).to_numpy(zero_copy_only=False)
        return pa.array(values, pa.string())

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "id", "prefix": self.prefix, "start": self.start, "digits": self.digits,
                "null_rate": self.null_rate, "nullable": self.nullable,
                "templates": [t.to_dict() for t in self.templates] if self.templates else None}

    @classmethod
    def from_dict(cls, field: pa.Field, spec: dict[str, Any]) -> "IdCodec":
        templates = spec.get("templates")  # absent before encoder format 5
        return cls(field.name, field.type, spec["prefix"], spec["start"], spec["null_rate"], spec["nullable"],
                   spec.get("digits", 0), [IdTemplate.from_dict(t) for t in templates] if templates else None)

    def stored_values(self) -> list[str]:
        """The run contents k ids share: the only training strings an id codec keeps."""
        return [value for template in self.templates or [] for run in template.runs.values() for value in run.values]
