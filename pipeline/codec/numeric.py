"""Numbers, dates, times and fixed-size numeric lists: a quantile-to-normal transform per element, point masses
as classes of their own, a null indicator.

The transform is fitted on a bounded uniform sample. It copes with skew, and every tied value owns a z interval
and decodes back to itself. Outside condition columns the bounds are the k-th smallest and k-th largest values,
not the min and max, and there are at most rows/k knots. A value that holds `encoder.point_mass_share` of an
element's rows (and k rows or more), or any value held by k rows in an element of at most FEW_LEVELS distinct
values, is a point mass: Adult's capital-gain is 92% zeros, its education-num 16 levels, a digit image's pixels
mostly 0. Point masses are one class each of a softmax, beside a class for "between them", and only the rows
between them get the quantile z: decoding draws Gaussian noise around z, which would otherwise smear a point
mass over its neighbours. An element with no value (a null, a point-mass row) is NaN in x: the model skips it
in the loss instead of fitting a made-up 0.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.codec.arrow import from_storage, numeric_values, storage_type
from pipeline.codec.base import Codec, DecodeContext, FitSettings
from pipeline.codec.kinds import Span
from pipeline.codec.sketches import NumericSketch

Z_MAX = 4.0
MAX_POINT_MASSES = 64  # point masses per numeric element at most, the most frequent values
MAX_DECIMALS = 6  # a float column's values with more decimals than this have no grain
FEW_LEVELS = 32  # a numeric element with at most this many distinct values is levels: each held by k rows is a mass


class NumericCodec(Codec):
    """Per element: a quantile-to-normal transform of its values, and a softmax over its point masses when it has
    any (then the transform covers only the values between them); plus a null indicator when the column had
    nulls. x holds the Gaussian elements first, then each element's softmax, then the null flag."""
    kinds = ("integer", "continuous", "list")

    def __init__(self, name: str, arrow_type: pa.DataType, kind: str, knots: list[dict[str, list[float]] | None],
                 low: list[float], high: list[float], null_rate: float, nullable: bool,
                 masses: list[list[float]] | None = None, decimals: int | None = None):
        self.name, self.arrow_type, self.kind = name, arrow_type, kind
        self.decimals = decimals  # a float column's grain: its values have at most this many decimals
        self.knots, self.low, self.high = knots, low, high  # knots[j] None: every value of element j is a mass
        self.null_rate, self.nullable = null_rate, nullable
        self.masses = masses if masses is not None else [[] for _ in knots]  # per element, ascending
        self._masses = [np.asarray(m, dtype=np.float64) for m in self.masses]
        self._gaussian = [j for j, k in enumerate(knots) if k is not None]  # elements with a z, in x order
        self._z_column = {j: i for i, j in enumerate(self._gaussian)}
        self._class_start, start = {}, len(self._gaussian)  # element -> first column of its softmax in the block
        for j in range(len(knots)):
            if self.classes(j):
                self._class_start[j], start = start, start + self.classes(j)
        self._decode = {j: _decoding_knots(knots[j]) for j in self._gaussian}
        self._encode = {j: (np.asarray(knots[j]["values"]), np.asarray(knots[j]["z_low"]),
                            np.asarray(knots[j]["z_high"])) for j in self._gaussian}

    @property
    def size(self) -> int:
        """Numeric elements per row (1, or the list length); 0 for a column with no value to model."""
        return len(self.knots)

    def classes(self, j: int) -> int:
        """Element j's softmax classes: one per point mass, then "between them" when it kept values between them."""
        return len(self.masses[j]) + (self.knots[j] is not None) if self.masses[j] else 0

    @property
    def width(self) -> int:
        return len(self._gaussian) + sum(self.classes(j) for j in range(self.size)) + self.nullable

    @classmethod
    def fit(cls, field: pa.Field, kind: str, sketch: NumericSketch, settings: FitSettings) -> "NumericCodec":
        """A condition column keeps exact bounds and no point masses (a request names any value in range)."""
        protect = settings.protect if settings.protect and settings.protect > 1 else None
        return cls.fit_sample(field, kind, sketch, settings.config.quantiles, protect,
                              0.0 if settings.condition else settings.config.point_mass_share)

    @classmethod
    def fit_sample(cls, field: pa.Field, kind: str, sketch: NumericSketch, quantiles: int,
                   protect: int | None, point_mass_share: float = 0.0) -> "NumericCodec":
        """`protect` = k: bounds are the k-th smallest and largest values, each knot stands for about k rows or
        more, and a point mass holds k rows or more; a column with fewer than 2k - 1 values keeps none (it decodes
        to nulls). None: exact bounds. `point_mass_share` 0: no point masses."""
        knots: list[dict[str, list[float]] | None] = []
        masses: list[list[float]] = []
        low = high = np.empty(0)
        usable = len(sketch.sample) > 0 and (protect is None or sketch.values >= 2 * protect - 1)
        if usable:
            low, high = sketch.bounds(protect is not None)
            for j in range(sketch.sample.shape[1]):
                values = sketch.sample[:, j]
                mass = (_point_masses(values, point_mass_share, protect or 1)  # before clipping, which
                        if point_mass_share > 0 else np.empty(0))                             # adds ties at the bounds
                between = np.sort(np.clip(values[~np.isin(values, mass)], low[j], high[j]))
                rows = sketch.values * len(between) / len(values)  # the column's values between its point masses
                masses.append(mass.tolist())
                knots.append(_quantile_knots(between, rows, low[j], high[j], quantiles, protect, beside=len(mass) > 0))
        nullable = sketch.nulls > 0 or (sketch.values > 0 and not usable)
        null_rate = sketch.nulls / max(sketch.rows, 1) if usable else 1.0
        decimals = decimal_grain(sketch.sample) if usable and _is_float(field.type) else None
        return cls(field.name, field.type, kind, knots, low.tolist(), high.tolist(), null_rate, nullable, masses,
                   decimals)

    @classmethod
    def fit_private(cls, field: pa.Field, kind: str, sketch: NumericSketch, settings: FitSettings, noise: Any,
                    fine: Any) -> "NumericCodec":
        """Bounds from the coarse grid (`fine.grids`), knots from the noisy fine-grid counts (`fine.counts`), a noisy
        null rate. An element without private bounds (too few values for the budget) leaves the whole column to
        decode as nulls."""
        if fine is None:
            raise ValueError(f"a private fit of numeric column {field.name!r} needs the second pass's histograms")
        grids, counts = fine.grids[field.name], fine.counts[field.name]
        z_grid, probs = _z_grid(settings.config.quantiles)
        knots, low, high = [], [], []
        for j, (grid, fine) in enumerate(zip(grids, counts)):
            mass = np.clip(noise.noisy(fine, f"{field.name}/quantiles/{j}"), 0, None) if grid is not None else None
            if mass is None or mass.sum() <= 0:
                knots, low, high = [], [], []
                break
            knots.append(_knots(grid.quantiles(mass, probs), grid.low, grid.high, z_grid))
            low.append(grid.low)
            high.append(grid.high)
        noisy_nulls = noise.nulls(sketch.nulls, field.name)
        nullable = noisy_nulls >= noise.post_cut(1) or not knots
        null_rate = min(1.0, noisy_nulls / max(sketch.rows, 1)) if knots else 1.0
        return cls(field.name, field.type, kind, knots, low, high, null_rate, nullable)

    def spans(self, start: int) -> list[Span]:
        spans = [Span(self.name, "gaussian", start + i, 1) for i in range(len(self._gaussian))]
        spans += [Span(self.name, "softmax", start + first, self.classes(j)) for j, first in self._class_start.items()]
        if self.nullable:
            spans.append(Span(self.name, "bernoulli", start + self.width - 1, 1))
        return spans

    def encode(self, arr: pa.Array) -> np.ndarray:
        """Gaussian elements are NaN where the row has no value there (a null, a point mass)."""
        out = np.zeros((len(arr), self.width), dtype=np.float32)
        out[:, : len(self._gaussian)] = np.nan
        if self.size:
            rows = np.flatnonzero(np.asarray(arr.is_valid()))
            values = numeric_values(arr, self.name)  # the valid rows'
            for j in range(self.size):
                between = np.ones(len(values), dtype=bool)
                if j in self._class_start:
                    drawn, between = self._classes_of(values[:, j], j)
                    out[rows, self._class_start[j] + drawn] = 1.0
                if j in self._z_column:
                    out[rows[between], self._z_column[j]] = _to_z(values[between, j], *self._encode[j])
        if self.nullable:
            out[:, -1] = np.asarray(arr.is_null(), dtype=np.float32) if self.size else 1.0
        return out

    def _classes_of(self, values: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Element j's softmax class per value, and whether the value lies between its point masses. With no
        values kept between them (too few for k), every value takes its nearest point mass."""
        masses = self._masses[j]
        slot = np.searchsorted(masses, values).clip(max=len(masses) - 1)
        if self.knots[j] is None:
            below = (slot - 1).clip(min=0)
            nearer_below = np.abs(values - masses[below]) < np.abs(values - masses[slot])
            return np.where(nearer_below, below, slot), np.zeros(len(values), dtype=bool)
        at_mass = masses[slot] == values
        return np.where(at_mass, slot, len(masses)), ~at_mass

    def decode(self, block: np.ndarray, context: DecodeContext) -> pa.Array:
        n = len(block)
        is_null = block[:, -1] > 0.5 if self.nullable else np.zeros(n, dtype=bool)
        if not self.size:
            return pa.nulls(n, self.arrow_type)
        values = np.zeros((n, self.size))
        for j, i in self._z_column.items():
            values[:, j] = np.interp(block[:, i].astype(np.float64), *self._decode[j])
        for j, first in self._class_start.items():
            drawn = block[:, first: first + self.classes(j)].argmax(axis=1)
            at_mass = drawn < len(self.masses[j])
            values[at_mass, j] = self._masses[j][drawn[at_mass]]
        if self.kind == "list":
            value_type = self.arrow_type.value_type
            if pa.types.is_integer(value_type):
                values = np.clip(np.rint(values), self.low, self.high)
            elif self.decimals is not None:
                values = np.round(values, self.decimals)
            child = pa.array(values.ravel()).cast(value_type, safe=False)
            return pa.FixedSizeListArray.from_arrays(child, type=self.arrow_type, mask=pa.array(is_null))
        if pa.types.is_decimal(self.arrow_type):
            return pc.round(pa.array(values[:, 0], mask=is_null), self.arrow_type.scale).cast(self.arrow_type)
        storage = storage_type(self.arrow_type)
        if pa.types.is_integer(storage):
            values = np.clip(np.rint(values), self.low, self.high)
        elif self.decimals is not None:
            values = np.round(values, self.decimals)
        return from_storage(pa.array(values[:, 0], mask=is_null).cast(storage, safe=False), self.arrow_type)

    def bounds(self) -> tuple[float, float]:
        return self.low[0], self.high[0]

    def stored_values(self) -> list[float]:
        """Every number the codec keeps from the training values: knots, bounds, point masses (for the audit)."""
        return ([v for knots in self.knots if knots is not None for v in knots["values"]] + self.low + self.high
                + [v for masses in self.masses for v in masses])

    def to_dict(self) -> dict[str, Any]:
        grain = {} if self.decimals is None else {"decimals": self.decimals}
        return {"kind": self.kind, "knots": self.knots, "low": self.low, "high": self.high,
                "null_rate": self.null_rate, "nullable": self.nullable, "masses": self.masses, **grain}

    @classmethod
    def from_dict(cls, field: pa.Field, spec: dict[str, Any]) -> "NumericCodec":
        return cls(field.name, field.type, spec["kind"], spec["knots"], spec["low"], spec["high"],
                   spec["null_rate"], spec["nullable"], spec.get("masses"), spec.get("decimals"))


class ReadAsNumbers(Codec):
    """A column its codec reads as numbers (`modelled_values`: dates held in strings, HHMM clock times) and models
    with an inner NumericCodec, which gives the block, its spans, the requestable range and the stored values, in
    the units `modelled_values` reads (the audit compares them with the protected bounds in the same units)."""
    inner: NumericCodec

    @property
    def width(self) -> int:
        return self.inner.width

    @property
    def modelled_type(self) -> pa.DataType:
        return self.inner.arrow_type

    def spans(self, start: int) -> list[Span]:
        return self.inner.spans(start)

    def encode(self, arr: pa.Array) -> np.ndarray:
        """Values `modelled_values` cannot read are encoded as nulls."""
        return self.inner.encode(self.modelled_values(arr))

    def bounds(self) -> tuple[float, float]:
        return self.inner.bounds()

    def stored_values(self) -> list[Any]:
        return self.inner.stored_values()


def _is_float(t: pa.DataType) -> bool:
    return pa.types.is_floating(t) or (pa.types.is_fixed_size_list(t) and pa.types.is_floating(t.value_type))


def decimal_grain(values: np.ndarray) -> int | None:
    """The fewest decimals (0 to MAX_DECIMALS) that write every value exactly: a double of whole numbers (a
    population, an HHMM time) is generated whole, a price with 2 decimals with 2. None: no such grain. (The
    encoder's numeric codecs and the rules' grains read columns with this one definition.)"""
    for decimals in range(MAX_DECIMALS + 1):
        scaled = values * 10.0 ** decimals
        if np.allclose(scaled, np.round(scaled), rtol=1e-12, atol=1e-6):
            return decimals
    return None


def _point_masses(values: np.ndarray, share: float, min_rows: int) -> np.ndarray:
    """The values holding `share` of an element's sampled values, or all of them when the element has at most
    FEW_LEVELS distinct values (pizzaplace's 25 prices: its XXL price is 0.06% of the rows and, left to the
    quantile z, was never generated); ascending, at most MAX_POINT_MASSES, the most frequent ones. Each was
    sampled `min_rows` (k) times, so its true count is k or more whatever the sample rate."""
    unique, counts = np.unique(values, return_counts=True)
    kept = counts >= (min_rows if len(unique) <= FEW_LEVELS else max(share * len(values), min_rows))
    unique, counts = unique[kept], counts[kept]
    return np.sort(unique[np.argsort(-counts, kind="stable")[:MAX_POINT_MASSES]])


def _quantile_knots(ordered: np.ndarray, rows: float, low: float, high: float, quantiles: int, protect: int | None,
                    beside: bool) -> dict[str, list[float]] | None:
    """Knots for one element's sorted, clipped sample standing for `rows` values; None when there are none, or
    too few for k. `beside` point masses, the ends are the sample's own k-th extremes (of the values between
    the masses), not the column's bounds, so no value between 0 and the first non-zero one is invented."""
    if not len(ordered) or (protect is not None and rows < 2 * protect - 1):
        return None
    levels = quantiles if protect is None else max(2, min(quantiles, int(rows) // protect))
    z_grid, probs = _z_grid(levels)
    index = np.clip(np.ceil(probs * len(ordered)).astype(int) - 1, 0, len(ordered) - 1)
    k = min(protect or 1, len(ordered)) - 1
    return _knots(ordered[index], ordered[k] if beside else low, ordered[-1 - k] if beside else high, z_grid)


def _z_grid(levels: int) -> tuple[np.ndarray, np.ndarray]:
    """`levels` + 1 evenly spaced z values in [-Z_MAX, Z_MAX] and their standard-normal probabilities."""
    z_grid = np.linspace(-Z_MAX, Z_MAX, levels + 1)
    return z_grid, np.array([0.5 * (1.0 + math.erf(z / math.sqrt(2.0))) for z in z_grid])


def _knots(values: np.ndarray, low: float, high: float, z_grid: np.ndarray) -> dict[str, list[float]]:
    """Quantile values at `z_grid` (first and last set to the bounds) -> knots; a value repeated over several
    grid points (a point mass) owns the z interval it spans and decodes back to itself."""
    values = np.array(values, dtype=np.float64)
    values[0], values[-1] = low, high
    unique, first = np.unique(values, return_index=True)
    last = len(values) - 1 - np.unique(values[::-1], return_index=True)[1]
    return {"values": unique.tolist(), "z_low": z_grid[first].tolist(), "z_high": z_grid[last].tolist()}


def _to_z(x: np.ndarray, unique: np.ndarray, z_low: np.ndarray, z_high: np.ndarray) -> np.ndarray:
    """Ties map to the middle of their z interval; values between knots interpolate linearly in z;
    values beyond the (protected) bounds clip to the ends."""
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
