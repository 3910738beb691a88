"""Rules held by construction: the table the model learns (`forward`) is reparametrised so that every
generated row keeps every applied rule, and `backward` rebuilds the user's columns from the decoded ones. No
rejection loop: the cost never grows with how rare a valid row is.

- formula `t = f(...)`: t is not modelled; rebuilt from the row's other columns (last, from final values);
- calendar part `t = month(d)`: t is not modelled; rebuilt from the row's final d (before formulas, which may
  read it);
- fixed [a, b, ...]: one categorical column of the combinations (each held by >= k rows: value protection
  applies to the combination; a protected one is replaced by a frequent one, never a token); split back.
  A condition column in the group stays a condition: where the decoded combination disagrees with it, the
  combination is drawn from those the training rows hold with that condition value, by their frequency (a
  condition value whose combinations are all held by fewer than k rows has none to give: the row keeps the
  decoded one, since storing its own would let a protected value out);
- inequalities: columns in order (conditions first, then each column after every column it must not be
  below); a column with bounds among the earlier ones is modelled as its distance above the greatest lower
  bound (or below the least upper bound), or as its place between both (0..1), and rebuilt clipped;
- one of: a categorical column saying which one is set; the others are written unset (0 or null);
- null together: the first column leads: the others are null exactly where it is; a value the decoder left
  null where the leader has one is taken from another generated row of the part (a hot deck);
- step: rounded to a whole multiple.
Each column is changed by one construct at most; a found rule that would change a column a rule already
changes is left out (a declared one is an error naming both).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import yaml
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.codec.arrow import from_storage, numeric_storage, plain
from pipeline.errors import UserError
from pipeline.rules.found import RuleSketch, family
from pipeline.rules.rule import (CalendarPart, Fixed, Formula, Inequality, NullTogether, OneOf, Rule, Step,
                                 calendar_part, evaluate, expression_columns, float_values, is_set, parse_rules)

SEPARATOR = "\x1f"   # between a combination's values (the ASCII unit separator)
NULL_MARK = "\x00"   # a null inside a combination

Allowed = Callable[[str], tuple[list[str], list[float]]]  # merged column -> its kept combinations, frequencies


@dataclass
class Bounds:
    """How an inequality column is modelled: after its `lower` and `upper` terms (columns placed before it, or
    numbers) and whether it must differ from them."""
    lower: list[str | float] = field(default_factory=list)
    upper: list[str | float] = field(default_factory=list)
    strict: bool = False


class RuleSet:
    """The applied rules of one table, and the reparametrisation that holds them."""

    def __init__(self, schema: pa.Schema, conditions: list[str], applied: list[Rule], grains: dict[str, int],
                 skipped: list[tuple[Rule, str]] | None = None, found: list[Rule] | None = None,
                 screened: list[Rule] | None = None, left_out: int = 0):
        self.schema, self.conditions, self.applied, self.grains = schema, list(conditions), applied, grains
        self.skipped = skipped or []  # found rules left out, and why
        self.found = found or []      # every found rule (applied or not): what `data.rules_found=suggest` lists
        # `data.rules_breaking=leave_out`: training rows breaking these declared rules are not learned from
        self.screened = screened or []
        self.left_out = left_out      # the training rows so left out (the rules pass's count)
        self.formulas = [rule for rule in applied if isinstance(rule, Formula)]
        self.parts = [rule for rule in applied if isinstance(rule, CalendarPart)]
        self.fixed = [rule for rule in applied if isinstance(rule, Fixed)]
        self.one_of = [rule for rule in applied if isinstance(rule, OneOf)]
        self.null_together = [rule for rule in applied if isinstance(rule, NullTogether)]
        self.steps = [rule for rule in applied if isinstance(rule, Step)]
        self.order, self.bounds = _inequality_order(
            [rule for rule in applied if isinstance(rule, Inequality)], schema.names, conditions)
        taken = set(schema.names)
        self.merged: dict[str, Fixed] = {}
        for rule in self.fixed:
            self.merged[_fresh("+".join(rule.group), taken)] = rule
        self.which: dict[str, OneOf] = {}
        for rule in self.one_of:
            self.which[_fresh(f"one_of({','.join(rule.group)})", taken)] = rule
        self.modelled_schema = self._modelled_schema()

    # -- planning: declared rules checked, found ones added where they fit -------------------------------------

    @classmethod
    def plan(cls, schema: pa.Schema, conditions: list[str], declared: list[Rule], found: list[Rule],
             grains: dict[str, int]) -> "RuleSet":
        applied, changed, skipped = [], {}, []
        for rule in declared:
            reason = _misfit(rule, schema, conditions, changed, applied)
            if reason:
                raise UserError(f"data.rules: {shown(rule)} {reason}")
            applied.append(rule)
            _claim(rule, changed, conditions)
        for rule in found:
            if rule in applied:
                continue
            reason = _misfit(rule, schema, conditions, changed, applied)
            if reason:
                skipped.append((rule, reason))
                continue
            applied.append(rule)
            _claim(rule, changed, conditions)
        return cls(schema, conditions, applied, grains, skipped, found)

    def _modelled_schema(self) -> pa.Schema:
        fields, gone = [], {rule.target for rule in [*self.formulas, *self.parts]}
        merged_at = {}
        for name, rule in self.merged.items():
            members = [c for c in rule.group if c not in self.conditions]
            gone |= set(members)
            merged_at[members[0]] = name
        for f in self.schema:
            if f.name in merged_at:
                fields.append(pa.field(merged_at[f.name], pa.string(), nullable=False))
            if f.name in gone:
                continue
            if f.name in self.bounds:
                fields.append(pa.field(f.name, _difference_type(f.type, self.bounds[f.name])))
            else:
                fields.append(f)
        fields += [pa.field(name, pa.string()) for name in self.which]
        return pa.schema(fields)

    def kept(self, table: pa.Table) -> np.ndarray | None:
        """Which rows keep every screened rule (None: all rows are kept, none screened)."""
        if not self.screened:
            return None
        breaks = np.zeros(table.num_rows, dtype=bool)
        for rule in self.screened:
            breaks |= rule.broken(table)
        return ~breaks

    def screen(self, table: pa.Table) -> pa.Table:
        """The rows keeping every screened rule."""
        keep = self.kept(table)
        return table if keep is None or keep.all() else table.filter(pa.array(keep))

    def describe(self) -> list[str]:
        """One line per applied rule, as `data.rules` writes it."""
        return [shown(rule) for rule in self.applied]

    # -- forward: the user's rows -> the rows the model learns -------------------------------------------------

    def forward(self, table: pa.Table) -> pa.Table:
        if not self.applied:
            return table
        columns = {name: plain(table.column(name)) for name in table.schema.names}
        out = dict(columns)
        for name, rule in self.merged.items():
            out[name] = _joined([columns[c] for c in rule.group])
        for name in self.order:
            bounds = self.bounds[name]
            value = float_values(columns[name])
            low, high = _extreme(bounds.lower, columns, max), _extreme(bounds.upper, columns, min)
            with np.errstate(invalid="ignore", divide="ignore"):
                if bounds.lower and bounds.upper:
                    modelled = np.where(high > low, (value - low) / (high - low), 0.5)
                elif bounds.lower:
                    modelled = value - low
                else:
                    modelled = high - value
            modelled = np.where(np.isnan(modelled), value, modelled)  # no bound in the row: the value itself
            target = self.modelled_schema.field(name).type
            if pa.types.is_floating(target) and name in self.grains and not (bounds.lower and bounds.upper):
                modelled = np.round(modelled, self._grain(name, bounds))
            out[name] = _array(modelled, target)
        for name, rule in self.which.items():
            chosen = np.full(table.num_rows, None, dtype=object)
            for column in reversed(rule.group):
                chosen[is_set(columns[column])] = column
            out[name] = pa.array(chosen, pa.string())
        return pa.table([out[f.name] for f in self.modelled_schema], schema=self.modelled_schema)

    def _grain(self, name: str, bounds: Bounds) -> int:
        terms = [t for t in [name, *bounds.lower, *bounds.upper] if isinstance(t, str)]
        return max(self.grains.get(t, 0) for t in terms)

    # -- backward: decoded columns -> the user's columns, every rule holding ------------------------------------

    def split(self, columns: dict[str, pa.Array], rng: np.random.Generator, allowed: Allowed) -> None:
        """Decoded combination columns (those still in `columns`) -> their member columns, in place: first, since
        codecs that read other columns (a phone number its country) may read a member."""
        for name, rule in self.merged.items():
            if name in columns:
                self._split(columns, name, rule, rng, allowed)

    def rebuild(self, columns: dict[str, pa.Array], rng: np.random.Generator) -> None:
        """The other constructs, in place, after every column is decoded: inequalities in order, one of, null
        together, steps, then calendar parts and formulas from the final values."""
        for name in self.order:
            columns[name] = self._rebuilt(name, columns)
        for name, rule in self.which.items():
            chosen = columns.pop(name).to_numpy(zero_copy_only=False)
            for column in rule.group:
                columns[column] = _unset(columns[column], chosen != column)
        for rule in self.null_together:
            self._together(columns, rule, rng)
        for rule in self.steps:
            arrow_type = self.schema.field(rule.column).type
            values = np.round(float_values(columns[rule.column]) / rule.step) * rule.step
            columns[rule.column] = _array(values, arrow_type, self.grains.get(rule.column))
        for rule in self.parts:
            columns[rule.target] = calendar_part(columns[rule.source], rule.part, rule.zone).cast(
                self.schema.field(rule.target).type)
        for rule in self.formulas:
            arrow_type = self.schema.field(rule.target).type
            columns[rule.target] = _array(evaluate(rule.expression, columns), arrow_type, self.grains.get(rule.target))

    def _split(self, columns: dict[str, pa.Array], name: str, rule: Fixed, rng: np.random.Generator,
               allowed: Allowed) -> None:
        merged = columns.pop(name)
        given = [c for c in rule.group if c in self.conditions]
        if given:
            keys, weights = allowed(name)
            merged = _agreeing(merged, _joined([columns[c] for c in given]), [rule.group.index(c) for c in given],
                               keys, weights, rng)
        parts = pc.split_pattern(merged, SEPARATOR)
        for i, column in enumerate(rule.group):
            if column in self.conditions:
                continue
            text = pc.list_element(parts, i)
            text = pc.if_else(pc.equal(text, NULL_MARK), pa.scalar(None, pa.string()), text)
            columns[column] = text.cast(self.schema.field(column).type)

    def _rebuilt(self, name: str, columns: dict[str, pa.Array]) -> pa.Array:
        bounds, arrow_type = self.bounds[name], self.schema.field(name).type
        modelled = float_values(columns[name])
        low, high = _extreme(bounds.lower, columns, max), _extreme(bounds.upper, columns, min)
        integral = not (pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type))
        terms = [t for t in [name, *bounds.lower, *bounds.upper] if isinstance(t, str)]
        places = self._grain(name, bounds) if any(t in self.grains for t in terms) else None
        with np.errstate(invalid="ignore"):
            if bounds.lower and bounds.upper:
                value = low + np.clip(modelled, 0.0, 1.0) * np.maximum(high - low, 0.0)
            elif bounds.lower:
                value = low + np.maximum(modelled, 0.0)
            else:
                value = high - np.maximum(modelled, 0.0)
            value = np.round(value, 0 if integral else places) if integral or places is not None else value
            step = 1.0 if integral else 10.0 ** -places if places is not None else 0.0
            if bounds.lower:
                floor = low + step if bounds.strict else low
                value = np.fmax(value, np.nextafter(floor, np.inf) if bounds.strict and not step else floor)
            if bounds.upper:
                ceiling = high - step if bounds.strict else high
                value = np.fmin(value, np.nextafter(ceiling, -np.inf) if bounds.strict and not step else ceiling)
            if places is not None and not integral:
                value = np.round(value, places)  # low + 0.0001 is 2043.6201000000001 in binary
        value = np.where(np.isnan(value), modelled, value)  # no bound in the row: the value itself
        return _array(value, arrow_type)

    def _together(self, columns: dict[str, pa.Array], rule: NullTogether, rng: np.random.Generator) -> None:
        leader = np.asarray(columns[rule.group[0]].is_null())
        for column in rule.group[1:]:
            arr = columns[column]
            missing = np.flatnonzero(~leader & np.asarray(arr.is_null()))
            donors = np.flatnonzero(~np.asarray(arr.is_null()))
            if len(missing) and len(donors):
                index = np.arange(len(arr))
                index[missing] = rng.choice(donors, size=len(missing))
                arr = arr.take(pa.array(index))
            elif len(missing):
                leader = leader.copy()
                leader[missing] = True  # nothing to take a value from: the leader gives up its own
            columns[column] = arr
        for column in rule.group:
            columns[column] = pc.if_else(pa.array(leader), pa.nulls(len(leader), columns[column].type),
                                         columns[column])

    # -- file format ------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"rules": [rule.config() for rule in self.applied], "grains": self.grains,
                "skipped": [[shown(rule), reason] for rule, reason in self.skipped],
                "found": [rule.config() for rule in self.found],
                "screened": [rule.config() for rule in self.screened], "left_out": self.left_out}

    @classmethod
    def from_dict(cls, schema: pa.Schema, conditions: list[str], spec: dict[str, Any] | None) -> "RuleSet":
        if not spec:
            return cls(schema, conditions, [], {})
        return cls(schema, conditions, parse_rules(spec["rules"]), dict(spec.get("grains", {})),
                   found=parse_rules(spec.get("found", [])), screened=parse_rules(spec.get("screened", [])),
                   left_out=spec.get("left_out", 0))


def table_rules(schema: pa.Schema, conditions: list[str], declared: list[Rule], found_mode: str, k: int,
                sketch: RuleSketch | None, leave_out: bool = False) -> RuleSet:
    """The rules a table's rows keep: the declared ones, and those the sketched training rows keep in every row
    (applied under `found_mode="apply"`, only listed under "suggest"); no sketch: nothing found. Training rows
    breaking a declared rule are an error, or with `leave_out` (`data.rules_breaking=leave_out`) not learned
    from: the rules found are read off the rows kept."""
    if sketch is not None and not leave_out:
        total = sketch.rows + sketch.left_out
        for rule, breaking, example in zip(sketch.declared, sketch.breaking, sketch.examples):
            if breaking:
                raise UserError(f"data.rules: {shown(rule)} is broken by {breaking:,} of {total:,} training rows "
                                f"(one: {example}); fix those rows, drop the rule, or leave them out of training "
                                "with data.rules_breaking=leave_out")
    if sketch is not None and sketch.rows == 0:
        raise UserError(f"data.rules: every one of the {sketch.left_out:,} training rows breaks a declared rule; "
                        "check the rules against the data")
    found = sketch.rules(k) if sketch is not None and found_mode != "off" else []
    planned = RuleSet.plan(schema, conditions, declared, found if found_mode == "apply" else [],
                           sketch.grains() if sketch is not None else {})
    planned.found = found
    if leave_out and sketch is not None and sketch.left_out:
        planned.screened = [rule for rule in sketch.declared]
        planned.left_out = sketch.left_out
    return planned


def _misfit(rule: Rule, schema: pa.Schema, conditions: list[str], changed: dict[str, Rule],
            applied: list[Rule]) -> str | None:
    """Why the rule cannot be held on this table beside the rules already taken (None: it can)."""
    columns = rule.columns()
    missing = [c for c in columns if c not in schema.names]
    if missing:
        return f"names {missing[0]!r}, which is not a modelled column; its columns are: {', '.join(schema.names)}"
    if isinstance(rule, CalendarPart):
        source, target = schema.field(rule.source).type, schema.field(rule.target).type
        if not (pa.types.is_timestamp(source) or pa.types.is_date(source) and rule.part in ("year", "month", "day")):
            return f"needs a timestamp (or a date, for year, month and day); {rule.source} is {source}"
        if not pa.types.is_integer(target):
            return f"sets {rule.target!r}, which must be an integer column to hold a {rule.part}; it is {target}"
        if rule.zone is not None and not (pa.types.is_timestamp(source) and source.tz):
            return f"reads {rule.source!r} in a time zone, but its timestamps carry none; drop the zone"
    families = {family(schema.field(c).type) for c in columns}
    if isinstance(rule, (Inequality, Formula, Step)) and (None in families or len(families) > 1):
        return ("needs numbers, or dates / times / timestamps of one type; "
                f"{', '.join(f'{c} is {schema.field(c).type}' for c in columns)}")
    if isinstance(rule, OneOf) and any(family(schema.field(c).type) is None and not pa.types.is_string(
            schema.field(c).type) for c in columns):
        return "needs number or string columns"
    touched = _changes(rule, conditions)
    if touched & set(conditions) and not isinstance(rule, (Fixed, Inequality)):
        return f"would change condition column {sorted(touched & set(conditions))[0]!r}, whose values are given"
    if isinstance(rule, Fixed) and all(c in conditions for c in rule.group):
        return "names only condition columns, whose values are given"
    if isinstance(rule, Inequality):
        others = [r for r in applied if isinstance(r, Inequality)] + [rule]
        try:
            order, _ = _inequality_order(others, schema.names, conditions)
        except UserError as exc:
            return str(exc)
        touched = set(order)
        if set(rule.columns()) & {c for c, by in changed.items() if not isinstance(by, Inequality)}:
            clash = next(c for c in rule.columns() if c in changed and not isinstance(changed[c], Inequality))
            return f"names {clash!r}, which {shown(changed[clash])} already sets"
        clash = [c for c in touched if c in changed and not isinstance(changed[c], Inequality)]
        if clash:
            return f"would change {clash[0]!r}, which {shown(changed[clash[0]])} already sets"
        return None
    clash = [c for c in touched if c in changed]
    if clash:
        return f"would change {clash[0]!r}, which {shown(changed[clash[0]])} already sets"
    # parts are rebuilt before formulas: a formula may read a part, a part never a formula's target
    sources = expression_columns(rule.expression) if isinstance(rule, Formula) else \
        [rule.source] if isinstance(rule, CalendarPart) else []
    derived = [c for c in sources if isinstance(changed.get(c), (Formula, CalendarPart))
               and not (isinstance(rule, Formula) and isinstance(changed[c], CalendarPart))]
    if derived:
        return f"reads {derived[0]!r}, which {shown(changed[derived[0]])} sets"
    return None


def _changes(rule: Rule, conditions: list[str]) -> set[str]:
    if isinstance(rule, (Formula, CalendarPart)):
        return {rule.target}
    if isinstance(rule, Fixed):
        return {c for c in rule.group if c not in conditions}
    if isinstance(rule, Inequality):
        return set()  # decided by the order of all inequalities together
    return set(rule.columns())


def _claim(rule: Rule, changed: dict[str, Rule], conditions: list[str]) -> None:
    touched = set(rule.columns()) - set(conditions) if isinstance(rule, Inequality) else _changes(rule, conditions)
    for column in touched:
        changed.setdefault(column, rule)
    if isinstance(rule, (Formula, CalendarPart)):
        changed[rule.target] = rule


def _inequality_order(rules: list[Inequality], names: list[str], conditions: list[str]) -> tuple[list[str],
                                                                                              dict[str, Bounds]]:
    """The columns an inequality changes, in the order they are rebuilt, and each one's bounds: conditions come
    first (never changed), then every column after all columns it must not be below."""
    columns = sorted({c for rule in rules for c in rule.columns()}, key=names.index)
    above = {c: set() for c in columns}  # column -> columns it must not be below (its lower bounds)
    for rule in rules:
        if isinstance(rule.left, str) and isinstance(rule.right, str):
            above[rule.right].add(rule.left)
    placed: list[str] = [c for c in columns if c in conditions]
    while len(placed) < len(columns):
        ready = [c for c in columns if c not in placed and all(b in placed or b in conditions for b in above[c])]
        if not ready:
            cycle = [c for c in columns if c not in placed]
            raise UserError(f"inequalities between {', '.join(cycle)} go round in a circle; write equal columns "
                            "as a formula (a = b)")
        placed.append(ready[0])
    position = {c: i for i, c in enumerate(placed)}
    bounds: dict[str, Bounds] = {}
    for rule in rules:
        left, right = rule.left, rule.right
        # the later column (or the only one) is the one changed; a number bounds it
        if isinstance(right, str) and (not isinstance(left, str) or position[right] > position[left]):
            if right not in conditions:
                entry = bounds.setdefault(right, Bounds())
                entry.lower.append(left)
                entry.strict |= rule.strict
        elif isinstance(left, str) and left not in conditions:
            entry = bounds.setdefault(left, Bounds())
            entry.upper.append(right)
            entry.strict |= rule.strict
    order = [c for c in placed if c in bounds]
    return order, bounds


def _difference_type(arrow_type: pa.DataType, bounds: Bounds) -> pa.DataType:
    if bounds.lower and bounds.upper or pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return pa.float64()
    return pa.int64()


def _extreme(terms: list[str | float], columns: dict[str, pa.Array], pick: Callable) -> np.ndarray | None:
    """Per row, the greatest (`max`) or least (`min`) of the terms' values, ignoring nulls (NaN: none)."""
    if not terms:
        return None
    rows = len(next(iter(columns.values())))
    stacked = np.stack([float_values(columns[t]) if isinstance(t, str) else np.full(rows, float(t)) for t in terms])
    with np.errstate(invalid="ignore"):
        reduce = np.fmax.reduce if pick is max else np.fmin.reduce
        return reduce(stacked, axis=0)


def _array(values: np.ndarray, arrow_type: pa.DataType, places: int | None = None) -> pa.Array:
    """float64 values (NaN: null) as the column's Arrow type: whole numbers for integer storage, else rounded to
    the column's grain."""
    mask = np.isnan(values)
    storage = numeric_storage(pa.nulls(0, arrow_type)).type if not pa.types.is_decimal(arrow_type) else pa.float64()
    if pa.types.is_integer(storage):
        clean = np.round(np.where(mask, 0, values)).astype(np.int64)
        arr = pa.array(clean, pa.int64(), mask=mask)
        return from_storage(arr.cast(storage), arrow_type)
    if places is not None:
        values = np.round(values, places)
    return pa.array(np.where(mask, 0.0, values), pa.float64(), mask=mask).cast(arrow_type)


def _joined(parts: list[pa.Array]) -> pa.Array:
    texts = [pc.fill_null(plain(p).cast(pa.string()), NULL_MARK) for p in parts]
    return pc.binary_join_element_wise(*texts, SEPARATOR)


def _agreeing(merged: pa.Array, given: pa.Array, places: list[int], keys: list[str], weights: list[float],
              rng: np.random.Generator) -> pa.Array:
    """Combinations whose condition part is the row's condition value; a row whose decoded one is not gets one
    of the kept combinations holding its condition value, drawn by frequency (none kept: left as decoded).
    Vectorised: one draw per condition value for all its rows (a loop over rows cost flights half its rate)."""
    def condition_part(text: str) -> str:
        pieces = text.split(SEPARATOR)
        return SEPARATOR.join(pieces[i] for i in places)
    by_condition: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        by_condition.setdefault(condition_part(key), []).append(i)
    parts = pc.split_pattern(merged, SEPARATOR)
    decoded = pc.binary_join_element_wise(*[pc.list_element(parts, i) for i in places], SEPARATOR)
    wrong = pc.and_(pc.not_equal(decoded, given), pc.is_in(given, value_set=pa.array(sorted(by_condition), pa.string())))
    rows = np.flatnonzero(np.asarray(wrong.fill_null(False), dtype=bool))
    if not len(rows):
        return merged
    out = np.asarray(merged.to_pylist(), dtype=object)
    wanted = np.asarray(given.take(pa.array(rows)).to_pylist(), dtype=object)
    choices = np.asarray(keys, dtype=object)
    for want in sorted(set(wanted.tolist())):
        at = rows[wanted == want]
        options = np.asarray(by_condition[want])
        p = np.asarray([weights[i] for i in options], dtype=np.float64)
        out[at] = choices[options[rng.choice(len(options), size=len(at), p=p / p.sum())]]
    return pa.array(out, pa.string())


def _unset(arr: pa.Array, rows: np.ndarray) -> pa.Array:
    """The rows written unset: 0 for numbers, null otherwise."""
    if not rows.any():
        return arr
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_decimal(arr.type):
        return pc.if_else(pa.array(rows), pa.scalar(0, arr.type), arr)
    return pc.if_else(pa.array(rows), pa.nulls(len(arr), arr.type), arr)


def _fresh(name: str, taken: set[str]) -> str:
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def shown(rule: Rule) -> str:
    """As the rule is written in YAML: `low <= high`, `{fixed: [education, education-num]}`."""
    config = rule.config()
    return config if isinstance(config, str) else yaml.safe_dump(config, default_flow_style=True, width=10_000).strip()

