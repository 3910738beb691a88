"""Rules found in the training rows: one streaming pass of mergeable counts (`RuleSketch.update` per block,
`merge` on the driver), then every candidate the rows keep in 100% of rows with support from at least k rows.

Candidates, by construction cheap to count per block (vectorised; pairs and triples of columns, bounded):
- `a = b`, `a = b + c`, `a = b * c` between numeric columns, and `a = b * 100 + c` between integers (a clock
  time written HHMM from its hour and minute: flights' sched_dep_time) (formulas);
- `a -> b`: each value of a low-cardinality column a goes with one value of b (fixed combinations), where a
  repeats (at most rows / k distinct values: an id determines everything and means nothing);
- `a <= b` (or <) between numbers, or dates / times / timestamps of one type, never null, where the order is
  not a matter of scale: with b's rows shifted by one, a > b in at least TIGHT of rows, or a's values reach
  into b's range (age <= fnlwgt is true and says nothing; temp_min <= temp_max does);
- `t = month(d)`: an integer column that is the year, month or day of a date or timestamp column, read in the
  column's own zone or, where an integer column holds the local hours of another zone, in that zone (flights'
  year, month and day are its UTC `time_hour`'s date in New York);
- null together, at most one of two numbers set, steps (every value a multiple of a step >= 2, on the exact storage:
  integers, and dates, times and timestamps: flights' time_hour in whole hours).
Also each float column's grain (decimals, up to 6) so that rebuilt values are written as the real ones are.
"""
from __future__ import annotations

import functools
import math
import zoneinfo
from typing import Any
from itertools import combinations, permutations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.codec.arrow import is_numeric_temporal, is_string_like, numeric_storage, plain
from pipeline.codec.numeric import MAX_DECIMALS, decimal_grain
from pipeline.rules.rule import (PARTS, CalendarPart, Fixed, Formula, Inequality, NullTogether, OneOf, Rule, Step,
                                 calendar_part, float_values)

TIGHT = 0.01          # shifted rows breaking an inequality: below this share it is a matter of scale
LOW_CARDINALITY = 200  # distinct values a column may have to take part in fixed combinations
MAX_PAIR_COMBINATIONS = 4_000
TIED_SHARE = 0.01        # a combination independence would give this share of the rows (and >= TIED_ROWS)...
TIED_ROWS = 100          # ...held by fewer than k rows ties the pair (never married and husband)
MAX_TIED_VALUES = 200    # tied columns merge while the product of their distinct values stays this small
MAX_FORMULA_COLUMNS = 16  # numeric columns searched for a = b + c, a = b * c (pairs x targets per block)
# zones tried first when a timestamp's hours are another zone's local hours (the best-known name of equal
# clocks wins: New York before Detroit), then every zone the system knows, by name
KNOWN_ZONES = ("UTC", "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles",
               "America/Sao_Paulo", "Europe/London", "Europe/Paris", "Europe/Berlin", "Asia/Kolkata",
               "Asia/Shanghai", "Asia/Tokyo", "Australia/Sydney")
ZONE_SAMPLE = 2_000  # rows of a block a candidate zone is tried on


def family(t: pa.DataType) -> str | None:
    """Columns compare and combine only within one family: numbers, or one temporal type."""
    if pa.types.is_dictionary(t):
        return None
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if is_numeric_temporal(t) and not pa.types.is_duration(t):
        return str(t)
    return None


@functools.cache
def zones_to_try() -> tuple[str, ...]:
    """KNOWN_ZONES, then the system's other zones by name (listing them reads the zone files: once)."""
    available = zoneinfo.available_timezones()
    known = [zone for zone in KNOWN_ZONES if zone in available]
    return (*known, *sorted(available - set(known)))


class RuleSketch:
    """Mergeable counts over the training rows of one table; `rules(k, conditions)` reads the candidates off."""

    def __init__(self, schema: pa.Schema, declared: tuple[Rule, ...] = ()):
        self.schema = schema
        self.rows = 0
        # the user's rules, each with the training rows breaking it (a fixed group cannot be broken: it keeps
        # the combinations the rows hold)
        self.declared = [rule for rule in declared if not isinstance(rule, Fixed)]
        self.breaking = [0] * len(self.declared)
        self.examples: list[str | None] = [None] * len(self.declared)  # a breaking row's values, for the error
        self.left_out = 0  # rows breaking any declared rule: not read for the rules found below
        self.ordered = [f.name for f in schema if family(f.type)]
        self.numbers = [f.name for f in schema if family(f.type) == "number"]
        self.families = {f.name: family(f.type) for f in schema}
        self.floats = [f.name for f in schema if pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)]
        # whole-number storage whose values may all be multiples of a step: integers, and dates, times and
        # timestamps (flights' time_hour in whole hours, a schedule in 5-minute slots)
        self.stepped = [f.name for f in schema if pa.types.is_integer(f.type) or family(f.type) not in (None, "number")]
        self.discrete = [f.name for f in schema if is_string_like(f.type) or pa.types.is_boolean(f.type)
                         or pa.types.is_integer(f.type) or pa.types.is_dictionary(f.type)]
        self.valid: dict[str, int] = {}           # rows with a value
        self.spread: dict[str, tuple[float, float]] = {}  # min, max
        self.decimals: dict[str, int] = {}
        self.gcd: dict[str, int] = {}
        self.distinct: dict[str, set | None] = {name: set() for name in self.discrete}  # None: too many
        self.pairs: dict[tuple[str, str], np.ndarray] = {}  # (a, b) -> [both, a>b, a>=b, a!=b, shifted a>b]
        self.triples: dict[tuple[str, str, str, str], int] = {}  # (op, a, b, c) -> rows where a != b op c
        self.combos: dict[tuple[str, str], dict | None] = {}  # low-cardinality pairs' value combinations
        self.null_apart: dict[tuple[str, str], int] = {}  # rows where exactly one of a, b is null
        self.nulls: dict[str, int] = {}
        self.both_set: dict[tuple[str, str], int] = {}
        self.set_rows: dict[str, int] = {}
        self.calendars = [f.name for f in schema if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type)]
        self.integers = [f.name for f in schema if pa.types.is_integer(f.type)]
        # (target, part, source, zone) -> [rows checked, rows where target != part(source)]: a block may read
        # a source in another zone than the rest, so a part holds only where every row was checked
        self.parts: dict[tuple[str, str, str, str | None], np.ndarray] = {}

    def update(self, batch: pa.Table | pa.RecordBatch) -> None:
        if self.declared:
            batch = self._kept(pa.table(batch) if isinstance(batch, pa.RecordBatch) else batch)
        n = batch.num_rows
        if not n:
            return
        self.rows += n
        values = {name: float_values(batch.column(name)) for name in self.ordered}
        for name in self.schema.names:
            nulls = plain(batch.column(name)).null_count
            self.nulls[name] = self.nulls.get(name, 0) + nulls
        for name, v in values.items():
            present = v[~np.isnan(v)]
            self.valid[name] = self.valid.get(name, 0) + len(present)
            if len(present):
                low, high = self.spread.get(name, (math.inf, -math.inf))
                self.spread[name] = (min(low, present.min()), max(high, present.max()))
            if name in self.floats and len(present):
                places = decimal_grain(present)
                self.decimals[name] = max(self.decimals.get(name, 0), MAX_DECIMALS + 1 if places is None else places)
            if name in self.stepped and len(present):  # on the exact storage: float64 rounds ns timestamps
                exact = numeric_storage(pc.drop_null(plain(batch.column(name)))).to_numpy(zero_copy_only=False)
                self.gcd[name] = int(np.gcd.reduce(np.abs(exact.astype(np.int64)), initial=self.gcd.get(name, 0)))
            if name in self.numbers:
                set_ = ~np.isnan(v) & (v != 0)
                self.set_rows[name] = self.set_rows.get(name, 0) + int(set_.sum())
        for a, b in permutations(self.ordered, 2):
            if self.families[a] != self.families[b] or (a, b) in self.pairs and self.pairs[(a, b)] is None:
                continue
            x, y = values[a], values[b]
            both = ~np.isnan(x) & ~np.isnan(y)
            x, y = x[both], y[both]
            counts = np.array([len(x), (x > y).sum(), (x >= y).sum(), (x != y).sum(),
                               (x > np.roll(y, 1)).sum() if len(x) > 1 else 0], dtype=np.int64)
            self.pairs[(a, b)] = self.pairs.get((a, b), 0) + counts
        self._update_formulas(values)
        self._update_parts(batch, values)
        self._update_discrete(batch)
        nullable = [name for name in self.schema.names if plain(batch.column(name)).null_count or self.nulls[name]]
        masks = {name: np.asarray(plain(batch.column(name)).is_null()) for name in nullable}
        for a, b in combinations(nullable, 2):
            self.null_apart[(a, b)] = self.null_apart.get((a, b), 0) + int((masks[a] != masks[b]).sum())
        for a, b in combinations(self.numbers, 2):
            both = ~np.isnan(values[a]) & (values[a] != 0) & ~np.isnan(values[b]) & (values[b] != 0)
            self.both_set[(a, b)] = self.both_set.get((a, b), 0) + int(both.sum())

    def _kept(self, table: pa.Table) -> pa.Table:
        """The rows keeping every declared rule; the others are counted, per rule and in all."""
        breaks = np.zeros(table.num_rows, dtype=bool)
        for i, rule in enumerate(self.declared):
            broken = rule.broken(table)
            self.breaking[i] += int(broken.sum())
            if broken.any() and self.examples[i] is None:
                row = table.select(rule.columns()).slice(int(np.argmax(broken)), 1).to_pylist()[0]
                self.examples[i] = ", ".join(f"{name}={value}" for name, value in row.items())
            breaks |= broken
        self.left_out += int(breaks.sum())
        return table.filter(pa.array(~breaks)) if breaks.any() else table

    def _update_formulas(self, values: dict[str, np.ndarray]) -> None:
        numbers = self.numbers[:MAX_FORMULA_COLUMNS]
        integers = [name for name in numbers if name in self.integers]
        for i, j in permutations(range(len(numbers)), 2):
            b, c = numbers[i], numbers[j]
            results = {"+": values[b] + values[c], "*": values[b] * values[c]} if i < j else {}
            if b in integers and c in integers:
                results["hhmm"] = values[b] * 100 + values[c]
            for a in numbers:
                if a in (b, c):
                    continue
                for op, want in results.items():
                    key = (op, a, b, c)
                    if self.triples.get(key, 0) > 0:
                        continue  # already broken: no need to count how often
                    have = values[a]
                    off = ~np.isclose(have, want, rtol=1e-9, atol=1e-9) & ~(np.isnan(have) & np.isnan(want))
                    self.triples[key] = self.triples.get(key, 0) + int(off.sum())

    def _update_parts(self, batch: pa.Table | pa.RecordBatch, values: dict[str, np.ndarray]) -> None:
        for source in self.calendars:
            column = plain(batch.column(source))
            # the date only: a model learns a year-long timestamp's date well and its time of day poorly (flights'
            # hour read off the generated time_hour put 18% of departures before 5 AM, where no real one is), so an
            # hour column stays modelled on its own; `hour = hour(ts)` can still be declared
            parts = PARTS[:3]
            for zone in [None, *self._zone(column, values)]:
                for part in parts:
                    want = float_values(calendar_part(column, part, zone))
                    for target in self.integers:
                        key = (target, part, source, zone)
                        counts = self.parts.get(key)
                        if counts is not None and counts[1] > 0:
                            continue  # already broken
                        have = values[target]
                        off = (have != want) & ~(np.isnan(have) & np.isnan(want))
                        self.parts[key] = (0 if counts is None else counts) + np.array([len(have), off.sum()])

    def _zone(self, column: pa.Array, values: dict[str, np.ndarray]) -> list[str]:
        """[a zone whose local hours some integer column holds] for a zoned timestamp whose own hours it does not
        hold, else []. Tried only where a column's hours differ from the timestamp's by at most two offsets (a
        zone with summer time), on the block's first ZONE_SAMPLE rows."""
        if not (pa.types.is_timestamp(column.type) and column.type.tz):
            return []
        sample = column.slice(0, ZONE_SAMPLE)
        own = float_values(pc.hour(sample))
        hours = []
        for target in self.integers:
            have = values[target][:len(sample)]
            both = ~np.isnan(have) & ~np.isnan(own)
            if both.any() and np.isin(have[both], np.arange(24)).all():
                offsets = np.unique((have[both] - own[both]) % 24)
                if len(offsets) <= 2 and offsets.any():
                    hours.append(have)
        if not hours:
            return []
        for zone in zones_to_try():
            local = float_values(calendar_part(sample, "hour", zone))
            if any(((have == local) | np.isnan(have) & np.isnan(local)).all() for have in hours):
                return [zone]
        return []

    def _update_discrete(self, batch: pa.Table | pa.RecordBatch) -> None:
        table = pa.table({name: plain(batch.column(name)) for name in self.discrete})
        for name in self.discrete:
            seen = self.distinct[name]
            if seen is not None:
                seen.update(table.column(name).unique().to_pylist())
                if len(seen) > LOW_CARDINALITY:
                    self.distinct[name] = None
                    for pair in [pair for pair in self.combos if name in pair]:  # counted on early blocks only
                        self.combos[pair] = None
        low = [name for name in self.discrete if self.distinct[name] is not None]
        for a, b in combinations(low, 2):
            if self.combos.get((a, b), {}) is None:
                continue
            grouped = table.select([a, b]).group_by([a, b], use_threads=False).aggregate([([], "count_all")])
            combos = self.combos.setdefault((a, b), {})
            for x, y, count in zip(*(grouped.column(i).to_pylist() for i in range(3))):
                combos[(x, y)] = combos.get((x, y), 0) + count
            if len(combos) > MAX_PAIR_COMBINATIONS:
                self.combos[(a, b)] = None

    def merge(self, other: "RuleSketch") -> "RuleSketch":
        self.rows += other.rows
        self.breaking = [mine + theirs for mine, theirs in zip(self.breaking, other.breaking)]
        self.examples = [mine or theirs for mine, theirs in zip(self.examples, other.examples)]
        self.left_out += other.left_out
        for mine, theirs in ((self.valid, other.valid), (self.nulls, other.nulls), (self.set_rows, other.set_rows),
                             (self.null_apart, other.null_apart), (self.both_set, other.both_set),
                             (self.triples, other.triples)):
            for key, value in theirs.items():
                mine[key] = mine.get(key, 0) + value
        for key, value in other.pairs.items():
            self.pairs[key] = self.pairs.get(key, 0) + value
        for key, value in other.parts.items():
            self.parts[key] = self.parts.get(key, 0) + value
        for name, (low, high) in other.spread.items():
            mine = self.spread.get(name, (math.inf, -math.inf))
            self.spread[name] = (min(mine[0], low), max(mine[1], high))
        for name, places in other.decimals.items():
            self.decimals[name] = max(self.decimals.get(name, 0), places)
        for name, divisor in other.gcd.items():
            self.gcd[name] = math.gcd(self.gcd.get(name, 0), divisor)
        for name, seen in other.distinct.items():
            mine = self.distinct[name]
            self.distinct[name] = None if mine is None or seen is None or len(mine | seen) > LOW_CARDINALITY \
                else mine | seen
        for key, combos in other.combos.items():
            mine = self.combos.get(key, {})
            if mine is None or combos is None:
                self.combos[key] = None
                continue
            for combo, count in combos.items():
                mine[combo] = mine.get(combo, 0) + count
            self.combos[key] = mine if len(mine) <= MAX_PAIR_COMBINATIONS else None
        return self

    def grains(self) -> dict[str, int]:
        """Float columns -> decimals every value is written with (columns with more are left out)."""
        return {name: places for name, places in self.decimals.items() if places <= MAX_DECIMALS}

    def rules(self, k: int) -> list[Rule]:
        """Every candidate the training rows keep in 100% of rows with support from >= k rows, most specific
        first: formulas, fixed combinations, inequalities, null together, one of, steps."""
        if self.rows < k:
            return []
        varied = {name for name, (low, high) in self.spread.items() if high > low}
        found: list[Rule] = []
        for a, b in combinations(self.ordered, 2):  # a = b: the later column is the copy
            counts = self.pairs.get((a, b))
            if counts is not None and counts[0] >= k and counts[3] == 0 and self.nulls[a] == self.nulls[b] == \
                    self.rows - counts[0] and self.families[a] == "number":
                found.append(Formula(b, a))
        copies = {rule.target for rule in found}
        for (op, a, b, c), off in sorted(self.triples.items()):
            if off == 0 and {a, b, c} <= varied and not {a, b, c} & copies and self.valid.get(a, 0) >= k \
                    and a not in {r.target for r in found}:
                found.append(Formula(a, ("+", ("*", b, 100.0), c) if op == "hhmm" else (op, b, c)))
        found += self._calendar_parts(k, {rule.target for rule in found})
        derived = {rule.target for rule in found}
        found += self._fixed(k, derived)
        found += self._tied(k, derived, {name for rule in found if isinstance(rule, Fixed) for name in rule.group})
        fixed = {name for rule in found if isinstance(rule, Fixed) for name in rule.group}
        for (a, b), counts in sorted(self.pairs.items()):
            both, over, at_or_over, differ, shifted = counts
            # an order only of scale (every age below every fnlwgt) is no rule: the rows' pairing must matter,
            # seen as rows shifted by one breaking it, or as a's values reaching into b's range (temp_min, temp_max)
            meaningful = shifted >= TIGHT * both or self.spread[a][1] > self.spread[b][0]
            if (both >= k and over == 0 and differ > 0 and both == self.rows and meaningful
                    and not {a, b} & (derived | fixed)):
                found.append(Inequality(a, b, strict=bool(at_or_over == 0)))
        found += self._null_together(k, derived)
        for (a, b), both in sorted(self.both_set.items()):
            if both == 0 and min(self.set_rows.get(a, 0), self.set_rows.get(b, 0)) >= k and not {a, b} & derived:
                found.append(OneOf((a, b)))
        for name, divisor in sorted(self.gcd.items()):
            if divisor >= 2 and name in varied and self.valid[name] >= k and name not in derived | fixed:
                found.append(Step(name, float(divisor)))
        return found

    def _calendar_parts(self, k: int, derived: set[str]) -> list[CalendarPart]:
        """One part per integer column that is one in every row (>= k of them with a value): the first source
        in the table's order, its own zone before another."""
        names = self.schema.names
        held = sorted((key for key, (checked, off) in self.parts.items() if checked == self.rows and off == 0),
                      key=lambda key: (names.index(key[2]), key[3] is not None, PARTS.index(key[1])))
        parts: dict[str, CalendarPart] = {}
        for target, part, source, zone in held:
            if target not in parts and target not in derived and self.valid.get(target, 0) >= k:
                parts[target] = CalendarPart(target, part, source, zone)
        return sorted(parts.values(), key=lambda rule: names.index(rule.target))

    def _complete_combos(self) -> list[tuple[tuple[str, str], dict]]:
        """The pairs whose combinations were counted over every row: both columns stayed low-cardinality in every
        block (a pair counted in some blocks, before one of its columns grew past LOW_CARDINALITY in another, is
        not: flights' dep_time with its hour)."""
        return [((a, b), combos) for (a, b), combos in self.combos.items()
                if combos is not None and self.distinct[a] is not None and self.distinct[b] is not None]

    def _fixed(self, k: int, derived: set[str]) -> list[Fixed]:
        """Groups of a column and the columns it determines (a -> b for each b), largest first."""
        determines: dict[str, list[str]] = {}
        for (a, b), combos in self._complete_combos():
            if a in derived or b in derived:
                continue
            left = {x for x, _ in combos}
            right = {y for _, y in combos}
            if len(left) < 2 or len(right) < 2:
                continue
            for x, y, values in ((a, b, left), (b, a, right)):
                if len(values) == len(combos) and len(values) * k <= self.rows:  # one y per x, and x repeats
                    determines.setdefault(x, []).append(y)
        groups, used = [], set()
        for a in sorted(determines, key=lambda name: (-len(determines[name]), self.schema.names.index(name))):
            group = [a, *[b for b in determines[a] if b not in used]] if a not in used else []
            if len(group) >= 2:
                groups.append(Fixed(tuple(sorted(group, key=self.schema.names.index))))
                used.update(group)
        return groups

    def _tied(self, k: int, derived: set[str], used: set[str]) -> list[Fixed]:
        """Columns whose combinations are not free: a pair with a combination that independence expects in >= 1%
        of rows that fewer than k training rows hold (Adult: never married and husband; husband and female) is
        tied, and tied pairs join into groups while the product of their distinct values stays small. Held as
        fixed combinations, the model learns the group's values jointly: a row never pairs values no k rows
        pair."""
        floor = max(TIED_ROWS, TIED_SHARE * self.rows)
        strength: dict[tuple[str, str], float] = {}
        for (a, b), combos in self._complete_combos():
            if {a, b} & (derived | used):
                continue
            left: dict[Any, int] = {}
            right: dict[Any, int] = {}
            for (x, y), count in combos.items():
                left[x] = left.get(x, 0) + count
                right[y] = right.get(y, 0) + count
            if len(left) < 2 or len(right) < 2:
                continue
            expected = max((left[x] * right[y] / self.rows for x in left for y in right
                            if combos.get((x, y), 0) < k), default=0.0)
            if expected >= floor:
                strength[(a, b)] = expected
        groups: list[set[str]] = []
        values = lambda group: math.prod(len(self.distinct[name]) for name in group)  # noqa: E731
        for a, b in sorted(strength, key=lambda pair: (-strength[pair], pair)):  # the strongest ties first
            joined = [group for group in groups if a in group or b in group]
            merged = set().union({a, b}, *joined)
            if len(joined) == 1 and {a, b} <= joined[0] or values(merged) > MAX_TIED_VALUES:
                continue
            groups = [group for group in groups if group not in joined] + [merged]
        return [Fixed(tuple(sorted(group, key=self.schema.names.index))) for group in groups]

    def _null_together(self, k: int, derived: set[str]) -> list[NullTogether]:
        together: dict[str, set[str]] = {}
        for (a, b), apart in self.null_apart.items():
            if apart == 0 and k <= self.nulls[a] < self.rows and not {a, b} & derived:
                together.setdefault(a, {a}).add(b)
        groups, used = [], set()
        for a in self.schema.names:
            if a in together and a not in used:
                group = tuple(sorted(together[a], key=self.schema.names.index))
                groups.append(NullTogether(group))
                used.update(group)
        return groups

