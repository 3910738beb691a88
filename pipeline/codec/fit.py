"""Fitting a table encoder: one streaming pass of mergeable sketches over the training split (two under
`train.privacy`), then one codec per column from its merged sketch.

Given each row's deterministic hash (`update(batch, row_hash)`), the fitted encoder depends only on which rows
were seen, not on how they were batched or in which order sketches merged. Ray Data runs `EncoderSketch.update`
per block and the driver merges (pipeline/source.py); `fit_table` does the same in one process.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pyarrow as pa

from pipeline.codec.arrow import is_string_like, numeric_storage, plain, storage_type
from pipeline.codec.base import FitSettings
from pipeline.codec.clock import is_clock
from pipeline.codec.counts import by_count, by_count_spread
from pipeline.codec.kinds import PERSONAL_ROLES, infer_kind, named_like_id
from pipeline.codec.personal import COUNTRY_WORDS, GENDER_WORDS, GENDERS, locale_of, name_words, role_of
from pipeline.codec.private import FineHistograms, private_codec, private_combinations
from pipeline.codec.registry import codec_class
from pipeline.codec.sketches import TAIL_VALUES_KEPT, CategorySketch, NumericSketch
from pipeline.codec.table import TableEncoder
from pipeline.codec.text_formats import TextFormatSketch
from pipeline.config import EncoderConfig
from pipeline.errors import UserError
from pipeline.privacy import FineGrid, PrivateFit, StatisticsNoise, private_grid, statistics_noise
from pipeline.rules.construct import SEPARATOR, RuleSet

INT_ID_UNIQUE = 0.99     # an integer column named like an id and this unique is an identifier
UNIQUE_CONDITION_SHARE = 0.5  # text conditions with this many distinct combinations per row cannot work...
MIN_UNIQUE_CONDITIONS = 1_000  # ...once there are at least this many


class EncoderSketch:
    """Streaming fit state for a whole table; `update` per batch, `merge` across workers, then `finalize`
    (order-independent while category and condition counts stay under their pruning bounds)."""

    def __init__(self, schema: pa.Schema, conditions: list[str], config: EncoderConfig,
                 column_kinds: dict[str, str] | None = None, seed: int = 0, private: bool = False,
                 rules: RuleSet | None = None, context: Iterable[str] = ()):
        self.private = private
        # conditions given row by row (data.context): no training distribution of combinations to count or check
        self.by_row = bool(list(context))
        for name in [*conditions, *(column_kinds or {})]:
            if name not in schema.names:
                raise UserError(f"column {name!r} is not in the table; its columns are: {', '.join(schema.names)}")
        # the sketches see the rows the model learns: the rules' reparametrisation of the table's rows
        self.source_schema = schema
        self.rules = rules or RuleSet(schema, conditions, [], {})
        schema = self.rules.modelled_schema
        self.overrides = {name: kind for name, kind in (column_kinds or {}).items() if name in schema.names}
        self.overrides.update({name: "categorical" for name in [*self.rules.merged, *self.rules.which]})
        self.schema = schema
        self.conditions = list(conditions)
        self.config = config
        self.kinds = {f.name: infer_kind(f, self.overrides.get(f.name)) for f in schema}
        for name in conditions:
            if self.kinds[name] in ("list", "id"):
                raise UserError(f"data.conditions: {name!r} is a {self.kinds[name]} column; condition on scalar "
                                "columns that are not identifiers")
        self.sketches: dict[str, NumericSketch | CategorySketch] = {}
        for i, field in enumerate(schema):
            kind = self.kinds[field.name]
            if kind in ("categorical", "personal") or (kind == "id" and is_string_like(field.type)):
                may_be_id = (is_string_like(field.type) and field.name not in conditions
                             and self.overrides.get(field.name) in (None, "id"))  # the cases final_kind decides
                # a condition too: a date held in a string conditions by value, as a Parquet date does
                may_be_formatted = (is_string_like(field.type) and field.name not in self.overrides
                                    and not private and config.typed_strings)
                formats = TextFormatSketch(config.sample_size, seed * 1_000_003 + i, config.min_value_count) \
                    if may_be_formatted else None
                self.sketches[field.name] = CategorySketch(max(10 * config.max_categories, 10 * TAIL_VALUES_KEPT),
                                                           may_be_id, formats)
            else:
                width = field.type.list_size if kind == "list" else 1
                self.sketches[field.name] = NumericSketch(width, config.sample_size, seed * 1_000_003 + i,
                                                          config.min_value_count, private)
        self.combinations: dict[tuple, int] = {}
        self.pruned = False  # more combinations were seen than the kept `max_condition_combinations`

    def update(self, batch: pa.RecordBatch | pa.Table, row_hash: np.ndarray | None = None) -> None:
        """`row_hash`: one uint64 per row of `batch` for reproducible sample keys; None draws them at random."""
        if batch.schema.names != self.source_schema.names:
            raise UserError(f"a data file has columns {batch.schema.names}, expected {self.source_schema.names}; "
                            "every Parquet file under data.path must share one schema")
        if row_hash is not None and len(row_hash) != batch.num_rows:
            raise ValueError(f"{len(row_hash)} row hashes for {batch.num_rows} rows")
        batch = pa.table(batch) if isinstance(batch, pa.RecordBatch) else batch
        keep = self.rules.kept(batch)  # rows breaking a declared rule, under data.rules_breaking=leave_out
        if keep is not None and not keep.all():
            batch, row_hash = batch.filter(pa.array(keep)), row_hash[keep] if row_hash is not None else None
        batch = self.rules.forward(batch)
        for name, sketch in self.sketches.items():
            sketch.update(plain(batch.column(name)), name, row_hash)
        if self.by_row:
            return
        keys = pa.table({name: numeric_storage(plain(batch.column(name))) for name in self.conditions})
        grouped = keys.group_by(self.conditions, use_threads=False).aggregate([([], "count_all")])
        counts = grouped.column("count_all").to_pylist()
        combos = zip(*(grouped.column(name).to_pylist() for name in self.conditions))
        self._add_combinations(zip(combos, counts))

    def merge(self, other: "EncoderSketch") -> "EncoderSketch":
        for name, sketch in self.sketches.items():
            sketch.merge(other.sketches[name])
        self._add_combinations(other.combinations.items())
        self.pruned |= other.pruned
        return self

    def _add_combinations(self, pairs: Iterable[tuple[tuple, int]]) -> None:
        for combo, count in pairs:
            self.combinations[combo] = self.combinations.get(combo, 0) + count
        limit = self.config.max_condition_combinations
        if len(self.combinations) > 2 * limit:
            self.combinations = dict(sorted(self.combinations.items(), key=by_count_spread)[:limit])
            self.pruned = True

    def final_kind(self, field: pa.Field) -> str:
        """The inferred kind, with identifiers recognised where the user gave no kind."""
        name, kind, sketch = field.name, self.kinds[field.name], self.sketches[field.name]
        if name in self.overrides or self.private:  # private: uniqueness is decided on noisy counts at the end
            return kind
        k = 1 if name in self.conditions else self.config.min_value_count  # conditions keep every value
        if kind == "categorical" and sketch.formats is not None and sketch.formats.choice(k) is not None:
            return "formatted"  # before ids: a column of unique timestamps is timestamps
        if name in self.conditions:
            return kind
        if kind in ("integer", "continuous") and is_clock(sketch):
            return "clock"  # dep_time 517: a time of day written HHMM, not a number between 500 and 600
        if kind == "categorical" and sketch.formats is not None and \
                role_of(name, sketch, k) is not None:
            return "personal"  # before ids: unique e-mails are e-mails
        if kind == "categorical" and is_string_like(field.type) and sketch.looks_like_id(name, k):
            return "id"
        if (kind == "integer" and pa.types.is_integer(field.type) and field.type.bit_width >= 32
                and named_like_id(name) and sketch.values >= 2 * k and sketch.distinct_share() >= INT_ID_UNIQUE):
            return "id"
        return kind

    def statistics_noise(self, private: PrivateFit) -> StatisticsNoise:
        """The noise for this table's statistics: one histogram per category, id and condition-combination
        column, two per numeric element (bounds, then quantiles); `public` columns count none."""
        public = private.public
        for name in public:
            if name not in self.schema.names:
                raise UserError(f"train.privacy.public_columns: {name!r} is not a modelled column; its columns "
                                f"are: {', '.join(self.schema.names)}")
        histograms = keyed = 0
        for field in self.schema:
            if field.name in public:
                continue
            kind, sketch = self.final_kind(field), self.sketches[field.name]
            if kind == "id":
                histograms += 1
            elif isinstance(sketch, CategorySketch):
                histograms, keyed = histograms + 1, keyed + 1
            else:
                histograms += 2 * sketch.sample.shape[1]
        if not all(name in public for name in self.conditions):
            histograms, keyed = histograms + 1, keyed + 1
        return statistics_noise(private.epsilon, private.delta, histograms, keyed, private.seed, tuple(public))

    def private_grids(self, noise: StatisticsNoise) -> dict[str, list[FineGrid | None]]:
        """Per private numeric column, each element's fine grid between its private bounds (from the coarse grid):
        what the second pass over the training split counts."""
        grids = {}
        for field in self.schema:
            sketch = self.sketches[field.name]
            if field.name in noise.public or not isinstance(sketch, NumericSketch) or self.final_kind(field) == "id":
                continue
            integers = self.kinds[field.name] in ("integer", "list") and pa.types.is_integer(
                storage_type(field.type.value_type if self.kinds[field.name] == "list" else field.type))
            grids[field.name] = [private_grid(sketch.grid[j], noise, f"{field.name}/bounds/{j}", integers)
                                 for j in range(sketch.grid.shape[0])]
        return grids

    def finalize(self, excluded: list[str] = (), noise: StatisticsNoise | None = None,
                 fine: FineHistograms | None = None) -> TableEncoder:
        """The fitted encoder; with `noise` (and the second pass's `fine` histograms) every statistic of a
        column not declared public comes from noisy counts."""
        rows = next(iter(self.sketches.values())).rows
        if rows == 0:
            raise UserError("the training split has no rows; point data.path at a non-empty table or lower "
                            "data.holdout_fraction")
        for name in self.conditions:
            if self.sketches[name].nulls == rows:
                raise UserError(f"condition column {name!r} is entirely null; choose another data.conditions column")
        if noise is None and not self.by_row:
            self._check_condition_combinations(rows)
        config, codecs = self.config, {}
        for field in self.schema:
            sketch, kind = self.sketches[field.name], self.final_kind(field)
            role = self.overrides.get(field.name)
            # a combination is one of those kept, never a token: its columns must split into real values
            settings = FitSettings(config.model_copy(update={"rare_replacement": "frequent"})
                                   if field.name in self.rules.merged else config,
                                   condition=field.name in self.conditions,
                                   role=role if role in PERSONAL_ROLES else None)
            if noise is not None and field.name not in noise.public:
                inferred = field.name not in self.conditions and field.name not in self.overrides
                codecs[field.name] = private_codec(field, kind, sketch, settings, noise, fine, inferred)
            else:
                codecs[field.name] = codec_class(kind).fit(field, kind, sketch, settings)
        links = self._personal_links(codecs)
        codecs = {name: codec.linked(links) for name, codec in codecs.items()}
        combinations = self.combinations
        if noise is not None and not self.by_row and not all(name in noise.public for name in self.conditions):
            combinations = private_combinations(combinations, noise, [codecs[name] for name in self.conditions])
        top = sorted(sorted(combinations.items(), key=by_count_spread)[: config.max_condition_combinations],
                     key=by_count)
        distribution = [{"values": list(combo), "count": count} for combo, count in top]
        encoder = TableEncoder(self.source_schema, self.conditions, codecs, distribution, list(excluded),
                               config.min_value_count, noise.describe() if noise is not None else None,
                               rules=self.rules)
        encoder.fitted_rows = rows
        return encoder


    def _check_condition_combinations(self, rows: int) -> None:
        """Conditions that cannot work fail here, before training: more combinations than
        `encoder.max_condition_combinations`, or text conditions whose values nearly never repeat (a date held in a
        string no format reads: one condition dimension per row, nothing learned per value). Numbers, dates and
        times, native or held in strings, condition as values (a quantile code and calendar phases), however many."""
        limit, combinations = self.config.max_condition_combinations, len(self.combinations)
        text = [name for name in self.conditions if self.final_kind(self.schema.field(name)) == "categorical"]
        if text and combinations >= max(MIN_UNIQUE_CONDITIONS, UNIQUE_CONDITION_SHARE * rows):
            shown = f"over {limit:,}" if self.pruned else f"{combinations:,}"
            raise UserError(f"data.conditions: {', '.join(text)} take {shown} distinct values in {rows:,} "
                            "training rows, nearly one per row: a condition needs values that repeat; choose a coarser "
                            "column, fewer conditions, or a typed column (dates condition by value)")
        if text and (self.pruned or combinations > limit):
            raise UserError(f"data.conditions {self.conditions}: over {limit:,} combinations of values in the training "
                            "split (encoder.max_condition_combinations); condition on fewer or coarser columns, or "
                            "raise encoder.max_condition_combinations")

    def _personal_links(self, codecs: dict) -> dict[str, str]:
        """Which columns personal-data codecs read: the first and last names (an e-mail built from them), a
        country column whose values name countries Faker has a locale for and a gender column whose values say
        male or female (80% of their kept levels)."""
        links = {}
        levels_of = {name: codec.levels() or [] for name, codec in codecs.items()}
        for merged, rule in self.rules.merged.items():  # a fixed combination's columns, each with its values
            for i, member in enumerate(rule.group):
                levels_of.setdefault(member, sorted({combo.split(SEPARATOR)[i] for combo in levels_of[merged]}))
        for name, levels in levels_of.items():
            codec = codecs.get(name)
            role = getattr(codec, "role", None) if codec is not None and codec.kind == "personal" else None
            if role in ("first_name", "last_name") and role not in links:
                links[role] = name
            if "country" not in links and name_words(name) & COUNTRY_WORDS and levels and \
                    sum(locale_of(value) is not None for value in levels) >= 0.8 * len(levels):
                links["country"] = name
            if "gender" not in links and name_words(name) & GENDER_WORDS and levels and \
                    sum(str(value).strip().lower() in GENDERS for value in levels) >= 0.8 * len(levels):
                links["gender"] = name
        return links


def fit_table(batches: Iterable[pa.RecordBatch | pa.Table], conditions: list[str], config: EncoderConfig,
              column_kinds: dict[str, str] | None = None, seed: int = 0, excluded: list[str] = (),
              private: PrivateFit | None = None, rules: RuleSet | None = None) -> TableEncoder:
    """The encoder fitted in this process, in one pass over the batches in bounded memory (two when `private`: the
    batches must be re-iterable). Sample keys are drawn at random here: the distributed fit keys them by row hash."""
    sketch = None
    for batch in batches:
        if sketch is None:
            sketch = EncoderSketch(batch.schema, conditions, config, column_kinds, seed, private is not None, rules)
        sketch.update(batch)
    if sketch is None:
        raise UserError("the training table has no rows; point data.path at a non-empty table")
    if private is None:
        return sketch.finalize(excluded)
    noise = sketch.statistics_noise(private)
    fine = FineHistograms(sketch.private_grids(noise))
    for batch in batches:
        fine.update(sketch.rules.forward(sketch.rules.screen(pa.table(batch))))
    return sketch.finalize(excluded, noise, fine)
