"""Categories: one-hot over the values seen at least k times (at most `encoder.max_categories`), then one
"other" class, then a null class. Condition columns keep every value, since users request them by name."""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.codec.arrow import is_string_like, plain
from pipeline.codec.base import Codec, DecodeContext, FitSettings
from pipeline.codec.kinds import Span
from pipeline.codec.sketches import TAIL_VALUES_KEPT, CategorySketch

PROTECTED_TOKEN = "_RARE_"


class CategoricalCodec(Codec):
    """One-hot over the kept categories, then an optional "other" class, then an optional null class.

    "Other" stands for the frequent tail beyond `max_categories` (decoded to one of `tail_values` by
    weight) and for protected values seen fewer than k times (decoded to `replacement`: a token for
    string columns, else a frequent value drawn by frequency). Values the training split never held
    encode as "other" too, or as no class at all when the column has no "other"."""
    kinds = ("categorical",)
    kind = "categorical"

    def __init__(self, name: str, arrow_type: pa.DataType, categories: list[Any], frequencies: list[float],
                 tail_values: list[Any], tail_weights: list[float], has_other: bool, replacement: str,
                 nullable: bool):
        self.name, self.arrow_type = name, arrow_type
        self.categories, self.frequencies = categories, frequencies
        self.tail_values, self.tail_weights = tail_values, tail_weights
        self.has_other, self.replacement, self.nullable = has_other, replacement, nullable
        value_type = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
        self._value_type = pa.string() if pa.types.is_null(value_type) else value_type
        self._lookup = pa.array(categories, self._value_type)
        token = [PROTECTED_TOKEN] if replacement == "token" else []
        self._vocabulary = pa.array(categories + tail_values + token, self._value_type)

    @property
    def width(self) -> int:
        return len(self.categories) + self.has_other + self.nullable

    @classmethod
    def fit(cls, field: pa.Field, kind: str, sketch: CategorySketch, settings: FitSettings) -> "CategoricalCodec":
        max_categories, protect, replacement = (settings.config.max_categories, settings.protect,
                                                settings.config.rare_replacement)
        ranked = sorted(sketch.counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
        present = sketch.rows - sketch.nulls
        eligible = ranked if protect is None else [(v, c) for v, c in ranked if c >= protect]
        unprotected = sum(c for _, c in eligible)
        if protect is None or (len(eligible) <= max_categories and unprotected == present):
            kept = len(eligible)  # every value has its own class (condition columns always)
        else:
            kept = min(len(eligible), max_categories - 1)
        tail = eligible[kept: kept + TAIL_VALUES_KEPT]
        other_rows = present - sum(c for _, c in eligible[:kept])
        if replacement == "token" and not is_string_like(field.type):
            replacement = "frequent"  # a token only fits a string column
        return cls(field.name, field.type, [v for v, _ in eligible[:kept]],
                   [c / max(sketch.rows, 1) for _, c in eligible[:kept]],
                   [v for v, _ in tail], [c / max(other_rows, 1) for _, c in tail],
                   other_rows > 0, replacement, sketch.nulls > 0)

    @classmethod
    def fit_private(cls, field: pa.Field, kind: str, sketch: CategorySketch, settings: FitSettings, noise: Any,
                    fine: Any = None) -> "CategoricalCodec":
        """Values whose noisy count passes the threshold (and k), ranked and weighted by noisy counts; every other
        value is "other", so the class is always there. Condition columns are selected the same way: a condition
        value the selection dropped cannot be requested."""
        max_categories, protect, replacement = (settings.config.max_categories, settings.config.min_value_count,
                                                settings.config.rare_replacement)
        kept = noise.select(sketch.counts, f"{field.name}/values", protect)
        ranked = sorted(kept.items(), key=lambda kv: (-kv[1], str(kv[0])))
        noisy_nulls = noise.nulls(sketch.nulls, field.name)
        head, tail = ranked[: max_categories - 1], ranked[max_categories - 1: max_categories - 1 + TAIL_VALUES_KEPT]
        other_rows = max(sketch.rows - noisy_nulls - sum(c for _, c in head), sum(c for _, c in tail), 1.0)
        if replacement == "token" and not is_string_like(field.type):
            replacement = "frequent"
        return cls(field.name, field.type, [v for v, _ in head], [c / max(sketch.rows, 1) for _, c in head],
                   [v for v, _ in tail], [c / other_rows for _, c in tail], True, replacement,
                   noisy_nulls >= noise.post_cut(1))

    def spans(self, start: int) -> list[Span]:
        return [Span(self.name, "softmax", start, self.width)]

    def encode(self, arr: pa.Array) -> np.ndarray:
        arr = plain(arr)
        index = pc.index_in(arr.cast(self._value_type), value_set=self._lookup)
        out = np.zeros((len(arr), self.width), dtype=np.float32)
        found = np.asarray(index.is_valid())
        out[found, np.asarray(index.filter(index.is_valid()))] = 1.0
        is_null = np.asarray(arr.is_null(), dtype=bool)
        if self.nullable:
            out[is_null, self.width - 1] = 1.0
        if self.has_other:
            out[~found & ~is_null, len(self.categories)] = 1.0
        return out

    def decode(self, block: np.ndarray, context: DecodeContext) -> pa.Array:
        rng = context.rng
        if pa.types.is_null(self.arrow_type):
            return pa.nulls(len(block))
        choice = block.argmax(axis=1).astype(np.int64)
        kept = len(self.categories)
        is_null = choice == self.width - 1 if self.nullable else np.zeros(len(block), dtype=bool)
        if self.has_other:
            other = np.flatnonzero(choice == kept)
            # one draw per "other" row over the tail values and, with the rest of the mass, the replacement
            weights = np.append(self.tail_weights, max(0.0, 1.0 - sum(self.tail_weights)))
            drawn = rng.choice(len(weights), size=len(other), p=weights / weights.sum())
            replaced = drawn == len(self.tail_values)
            choice[other] = kept + drawn
            if self.replacement == "frequent":
                if kept:
                    p = np.asarray(self.frequencies) / sum(self.frequencies)
                    choice[other[replaced]] = rng.choice(kept, size=int(replaced.sum()), p=p)
                else:
                    is_null[other[replaced]] = True  # nothing frequent to draw from
                    choice[other[replaced]] = 0
        return pc.take(self._vocabulary, pa.array(choice, mask=is_null)).cast(self.arrow_type)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "categorical", "categories": self.categories, "frequencies": self.frequencies,
                "tail_values": self.tail_values, "tail_weights": self.tail_weights, "has_other": self.has_other,
                "replacement": self.replacement, "nullable": self.nullable}

    @classmethod
    def from_dict(cls, field: pa.Field, spec: dict[str, Any]) -> "CategoricalCodec":
        return cls(field.name, field.type, spec["categories"], spec["frequencies"], spec["tail_values"],
                   spec["tail_weights"], spec["has_other"], spec["replacement"], spec["nullable"])

    def stored_values(self) -> list[Any]:
        return self.categories + self.tail_values

    def levels(self) -> list[Any]:
        return self.categories

    def replacement_token(self) -> str | None:
        return PROTECTED_TOKEN if self.has_other and self.replacement == "token" else None

    def covered_share(self) -> float:
        """The share of rows its kept values stand for, the tail's share of "other" included: under a private fit,
        how much of a string column named like an id is not one-off values."""
        return sum(self.frequencies) + sum(self.tail_weights) * max(0.0, 1 - sum(self.frequencies))
