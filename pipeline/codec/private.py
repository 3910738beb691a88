"""The private fit's own steps (under `train.privacy`): the second pass over the training split for numeric
quantiles, a column's codec from noisy counts, and the condition combinations that pass the noise threshold.
The noise itself and its accounting live in pipeline/privacy.py."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.codec.arrow import is_string_like, numeric_values, plain
from pipeline.codec.base import Codec, FitSettings
from pipeline.codec.kinds import named_like_id
from pipeline.codec.registry import codec_class
from pipeline.codec.sketches import MAX_ID_COVERAGE, CategorySketch, NumericSketch
from pipeline.privacy import FineGrid, StatisticsNoise


class FineHistograms:
    """The second pass of a private fit: each private numeric element's counts on its fine grid, and nulls."""

    def __init__(self, grids: dict[str, list[FineGrid | None]]):
        self.grids = grids
        self.counts = {name: [np.zeros(g.bins, dtype=np.int64) if g else None for g in elements]
                       for name, elements in grids.items()}

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        for name, elements in self.grids.items():
            values = numeric_values(plain(batch.column(name)), name)
            for j, grid in enumerate(elements):
                if grid is not None and len(values):
                    self.counts[name][j] += np.bincount(grid.index(values[:, j]), minlength=grid.bins)

    def merge(self, other: "FineHistograms") -> "FineHistograms":
        for name, elements in self.counts.items():
            for j, counts in enumerate(elements):
                if counts is not None:
                    counts += other.counts[name][j]
        return self


def private_codec(field: pa.Field, kind: str, sketch: NumericSketch | CategorySketch, settings: FitSettings,
                  noise: StatisticsNoise, fine: FineHistograms | None, inferred: bool) -> Codec:
    """A column's codec from noisy counts. An `inferred` string column named like an id whose kept values cover
    under MAX_ID_COVERAGE of its rows (by their noisy counts: no further budget) is an identifier; integer columns
    are identifiers only when the user says so (their uniqueness would cost budget to measure)."""
    codec = codec_class(kind).fit_private(field, kind, sketch, settings, noise, fine)
    if (kind == "categorical" and inferred and is_string_like(field.type) and named_like_id(field.name)
            and codec.covered_share() < MAX_ID_COVERAGE):
        return codec_class("id").fit_private(field, "id", sketch, settings, noise, fine)
    return codec


def private_combinations(combinations: dict[tuple, int], noise: StatisticsNoise,
                         codecs: list[Codec]) -> dict[tuple, int]:
    """Condition combinations whose noisy count passes the threshold, with rounded noisy counts, and only those
    whose category values the (private) condition codecs kept: a plan never asks for a dropped value."""
    kept = noise.select(combinations, "condition_combinations")
    allowed = [None if codec.levels() is None else set(codec.levels()) | ({None} if codec.nullable else set())
               for codec in codecs]
    return {combo: max(1, round(count)) for combo, count in kept.items()
            if all(values is None or value in values for value, values in zip(combo, allowed))}
