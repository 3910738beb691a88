"""The contract every column codec keeps, so the table encoder, the generation plan and the audit never ask
which class a codec is.

A codec is fitted once from its column's merged sketch (`fit`, or `fit_private` from noisy counts), turns an
Arrow column into a float32 block of `width` columns (`encode`) and back (`decode`), says which likelihood each
part of its block gets (`spans`), and round-trips through JSON (`to_dict` / `from_dict`; the dict's "kind"
names the class in the registry). A new column kind is one file with a Codec subclass and one line in
pipeline/codec/registry.py.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from pipeline.codec.kinds import Span
from pipeline.config import EncoderConfig


@dataclass(frozen=True)
class FitSettings:
    """What a codec's fit reads besides its sketch: the encoder settings, and whether the column is a condition
    (condition columns keep every value: users request them by name)."""
    config: EncoderConfig
    condition: bool = False
    role: str | None = None  # a personal-data role the user gave (`data.columns.NAME: email`)

    @property
    def protect(self) -> int | None:
        """k, the rows a value needs before it may be stored; None: keep every value."""
        return None if self.condition else self.config.min_value_count


@dataclass(frozen=True)
class DecodeContext:
    """What decoding a block may draw on: the part's random stream, the first row's index in the whole
    generated dataset (fresh identifiers count from it), and the row's columns decoded before this one (those a
    codec `needs`: an e-mail built from the row's names)."""
    rng: np.random.Generator
    row_offset: int = 0
    columns: dict[str, pa.Array] = field(default_factory=dict)


class Codec(ABC):
    """One column's fitted transform between Arrow values and the model's float32 block."""
    kinds: ClassVar[tuple[str, ...]]  # the column kinds (pipeline/codec/kinds.py) this class serves
    kind: str  # the column kind as fitted; also the "kind" of `to_dict`, which the registry reads back
    name: str
    arrow_type: pa.DataType
    nullable: bool

    @property
    @abstractmethod
    def width(self) -> int:
        """Columns of the block."""

    @classmethod
    @abstractmethod
    def fit(cls, field: pa.Field, kind: str, sketch: Any, settings: FitSettings) -> "Codec":
        """From the column's merged sketch (pipeline/codec/sketches.py)."""

    @classmethod
    @abstractmethod
    def fit_private(cls, field: pa.Field, kind: str, sketch: Any, settings: FitSettings, noise: Any,
                    fine: Any) -> "Codec":
        """From noisy counts only (`noise`: privacy.StatisticsNoise; `fine`: the second pass's FineHistograms)."""

    @abstractmethod
    def spans(self, start: int) -> list[Span]:
        """Where each part of the block lives when the block starts at column `start`, and its likelihood."""

    @abstractmethod
    def encode(self, arr: pa.Array) -> np.ndarray:
        """(rows, width) float32; NaN where a Gaussian part has no value (the loss skips it)."""

    @abstractmethod
    def decode(self, block: np.ndarray, context: DecodeContext) -> pa.Array:
        """The column, in its Arrow type, from the model's (rows, width) output."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; `from_dict` reads it back (every format the encoder file has had)."""

    @classmethod
    @abstractmethod
    def from_dict(cls, field: pa.Field, spec: dict[str, Any]) -> "Codec":
        ...

    @abstractmethod
    def stored_values(self) -> list[Any]:
        """Every training value the codec keeps (categories, knots, bounds, id runs): what the audit checks."""

    def levels(self) -> list[Any] | None:
        """The values a condition may request, for a codec of discrete values; None for numbers."""
        return None

    def bounds(self) -> tuple[float, float] | None:
        """The (low, high) range a numeric condition may request without extrapolating; None otherwise."""
        return None

    def replacement_token(self) -> str | None:
        """The token this codec writes in place of protected values, if it writes one."""
        return None

    def modelled_values(self, arr: pa.Array) -> pa.Array:
        """The column's values as the codec models them: the column itself, or for strings that hold dates, times
        or numbers, the values they write (what the audit compares with the protected bounds)."""
        return arr

    @property
    def modelled_type(self) -> pa.DataType:
        """The Arrow type of `modelled_values`: a date for a string that holds dates."""
        return self.arrow_type

    def written_as(self) -> str | None:
        """How the column's values are written when not as a model's plain categories or numbers (dates held in
        strings, names from Faker), for the console and the manifest; None otherwise."""
        return None

    def needs(self) -> list[str]:
        """Other columns of the row this codec's decode reads (from `DecodeContext.columns`): decoded first."""
        return []

    def linked(self, columns: dict[str, str]) -> "Codec":
        """This codec told which columns of the table play which part ("country", "first_name", ...)."""
        return self

    def capacity(self) -> int | None:
        """How many rows one dataset may hold before the codec runs out of fresh values (None: unbounded)."""
        return None
