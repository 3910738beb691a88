"""Rules between columns, as the user writes them in `data.rules` and as `cvae inspect` prints them: one typed
object per rule, parsed once at the edge by a small grammar (Python's `ast` with a whitelist: no `eval` of user
text), and a check that counts the rows breaking it (tests, the evaluator, the found rules' 100%).

String rules: inequalities and chains over columns and constants (`low <= open <= high`, `age >= 0`,
`"arr_time > dep_time"`), formulas (`adj_close = close`, `total = price * quantity`) and calendar parts
(`month = month(time_hour)`, `hour = hour(time_hour, 'America/New_York')`); names that are not
identifiers go in backticks (`` `decile_score.1` = decile_score ``). Mapping rules: `{fixed: [a, b]}`,
`{null_together: [a, b]}`, `{one_of: [a, b]}`, `{step: {price: 0.01}}`.
"""
from __future__ import annotations

import ast
import re
import zoneinfo
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.codec.arrow import numeric_storage, plain
from pipeline.errors import UserError

Expr = Union[str, float, tuple]  # a column name, a number, or (operator, left, right) with operator in + - * /
OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
COMPARISONS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}


@dataclass(frozen=True)
class Inequality:
    """left <= right (or <); each side a column name or a number. A chain is one Inequality per link."""
    left: str | float
    right: str | float
    strict: bool = False

    def columns(self) -> list[str]:
        return [side for side in (self.left, self.right) if isinstance(side, str)]

    def config(self) -> str:
        return f"{_name(self.left)} {'<' if self.strict else '<='} {_name(self.right)}"

    def broken(self, table: pa.Table) -> np.ndarray:
        left, right = (_values(table, side) for side in (self.left, self.right))
        with np.errstate(invalid="ignore"):
            bad = left >= right if self.strict else left > right
        return bad & ~np.isnan(left) & ~np.isnan(right)


@dataclass(frozen=True)
class Formula:
    """target = expression over other columns and numbers (+ - * /)."""
    target: str
    expression: Expr

    def columns(self) -> list[str]:
        return [self.target, *expression_columns(self.expression)]

    def config(self) -> str:
        return f"{_name(self.target)} = {_text(self.expression)}"

    def broken(self, table: pa.Table) -> np.ndarray:
        want, have = evaluate(self.expression, table), _values(table, self.target)
        with np.errstate(invalid="ignore"):
            return ~np.isclose(have, want, rtol=1e-9, atol=1e-9) & ~(np.isnan(have) & np.isnan(want))


PARTS = ("year", "month", "day", "hour", "minute")  # calendar parts a CalendarPart reads


@dataclass(frozen=True)
class CalendarPart:
    """target = a calendar part of a date or timestamp column, read in a time zone (None: the column's own, or
    the wall clock of a timestamp without one). Flights' year, month and day are its `time_hour`'s date in New
    York: held as a rule, a generated row takes them from its generated timestamp, so they agree with it and
    always name a real day (no 31 September from three columns drawn apart). Only the date parts are found
    (found.py says why); an hour or minute part applies when declared."""
    target: str
    part: str
    source: str
    zone: str | None = None

    def columns(self) -> list[str]:
        return [self.target, self.source]

    def config(self) -> str:
        zone = f", '{self.zone}'" if self.zone else ""
        return f"{_name(self.target)} = {self.part}({_name(self.source)}{zone})"

    def broken(self, table: pa.Table) -> np.ndarray:
        have, want = _values(table, self.target), self.values(table[self.source])
        return (have != want) & ~(np.isnan(have) & np.isnan(want))

    def values(self, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """float64 per row: the part of each value (NaN where null)."""
        return float_values(calendar_part(column, self.part, self.zone))


def calendar_part(column: pa.Array | pa.ChunkedArray, part: str, zone: str | None) -> pa.Array:
    """int64 per row: the calendar part of each date or timestamp, a zoned timestamp read in `zone`."""
    column = plain(column)
    if zone is not None and pa.types.is_timestamp(column.type):
        column = column.cast(pa.timestamp(column.type.unit, tz=zone))
    return getattr(pc, part)(column)


@dataclass(frozen=True)
class Fixed:
    """The columns' values appear together only in combinations the training rows hold (each by >= k rows)."""
    group: tuple[str, ...]

    def columns(self) -> list[str]:
        return list(self.group)

    def config(self) -> dict[str, Any]:
        return {"fixed": list(self.group)}

    def broken(self, table: pa.Table, allowed: set[tuple] | None = None) -> np.ndarray:
        """Rows whose combination is not in `allowed` (none broken when no set is given)."""
        if allowed is None:
            return np.zeros(table.num_rows, dtype=bool)
        rows = zip(*(table.column(name).to_pylist() for name in self.group))
        return np.array([row not in allowed for row in rows], dtype=bool)


@dataclass(frozen=True)
class NullTogether:
    """In every row the columns are all null or all set."""
    group: tuple[str, ...]

    def columns(self) -> list[str]:
        return list(self.group)

    def config(self) -> dict[str, Any]:
        return {"null_together": list(self.group)}

    def broken(self, table: pa.Table) -> np.ndarray:
        nulls = np.stack([np.asarray(plain(table.column(name)).is_null()) for name in self.group])
        return nulls.any(axis=0) & ~nulls.all(axis=0)


@dataclass(frozen=True)
class OneOf:
    """At most one of the columns is set (not null, and not zero for numbers) in any row."""
    group: tuple[str, ...]

    def columns(self) -> list[str]:
        return list(self.group)

    def config(self) -> dict[str, Any]:
        return {"one_of": list(self.group)}

    def broken(self, table: pa.Table) -> np.ndarray:
        return np.stack([is_set(table.column(name)) for name in self.group]).sum(axis=0) > 1


@dataclass(frozen=True)
class Step:
    """The column's values are whole multiples of `step`."""
    column: str
    step: float

    def columns(self) -> list[str]:
        return [self.column]

    def config(self) -> dict[str, Any]:
        return {"step": {self.column: _number(self.step)}}

    def broken(self, table: pa.Table) -> np.ndarray:
        values = _values(table, self.column)
        ratio = values / self.step
        with np.errstate(invalid="ignore"):
            return ~np.isclose(ratio, np.round(ratio), rtol=0, atol=1e-6) & ~np.isnan(values)


Rule = Union[Inequality, Formula, CalendarPart, Fixed, NullTogether, OneOf, Step]
GROUP_RULES = {"fixed": Fixed, "null_together": NullTogether, "one_of": OneOf}


def parse_rules(entries: list[Any]) -> list[Rule]:
    """`data.rules` as typed rules; a one-line error naming the entry and the form it should take."""
    rules: list[Rule] = []
    for i, entry in enumerate(entries):
        where = f"data.rules[{i}]"
        if isinstance(entry, str):
            rules.extend(_parse_text(entry, where))
        elif isinstance(entry, dict) and len(entry) == 1:
            (kind, value), = entry.items()
            if kind in GROUP_RULES:
                if not (isinstance(value, list) and len(value) >= 2 and all(isinstance(v, str) for v in value)
                        and len(set(value)) == len(value)):
                    raise UserError(f"{where}: {kind} takes a list of two or more distinct column names, e.g. "
                                    f"{{{kind}: [a, b]}}")
                rules.append(GROUP_RULES[kind](tuple(value)))
            elif kind == "step":
                if not (isinstance(value, dict) and value and all(
                        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                        for k, v in value.items())):
                    raise UserError(f"{where}: step takes column names and positive steps, e.g. {{step: {{price: 0.01}}}}")
                rules.extend(Step(column, float(step)) for column, step in value.items())
            else:
                raise UserError(f"{where}: unknown rule {kind!r}; use an expression string or one of "
                                f"{', '.join([*GROUP_RULES, 'step'])}")
        else:
            raise UserError(f"{where}: a rule is a string (\"low <= high\", \"total = price * quantity\") or a "
                            "one-key mapping ({fixed: [city, state]}); got " + repr(entry)[:80])
    return rules


def _parse_text(text: str, where: str) -> list[Rule]:
    names: dict[str, str] = {}

    def quoted(match: re.Match) -> str:
        names[f"_col{len(names)}_"] = match.group(1)
        return f"_col{len(names) - 1}_"
    source = re.sub(r"`([^`]+)`", quoted, text)
    source = re.sub(r"(?<![<>=!])=(?!=)", "==", source)  # `a = b` as the user writes it
    fail = UserError(f"{where}: cannot read rule {text!r}; write an inequality (\"low <= open <= high\") or a "
                     "formula (\"total = price * quantity\", names with other characters in `backticks`)")
    try:
        tree = ast.parse(source.strip(), mode="eval").body
    except SyntaxError:
        raise fail from None
    if not isinstance(tree, ast.Compare):
        raise fail
    if len(tree.ops) == 1 and isinstance(tree.ops[0], ast.Eq) and isinstance(tree.comparators[0], ast.Call):
        return [_calendar_part(tree.left, tree.comparators[0], names, text, where)]
    terms = [_expression(node, names, fail) for node in (tree.left, *tree.comparators)]
    if all(isinstance(op, ast.Eq) for op in tree.ops) and len(terms) == 2:
        target, expression = terms
        if not isinstance(target, str):
            raise UserError(f"{where}: the left side of {text!r} must be one column (the one the formula sets)")
        if target in expression_columns(expression):
            raise UserError(f"{where}: {text!r} uses {target!r} on both sides")
        return [Formula(target, expression)]
    if not all(type(op) in COMPARISONS for op in tree.ops) or any(isinstance(t, tuple) for t in terms):
        raise fail
    links = []
    for op, left, right in zip(tree.ops, terms, terms[1:]):
        symbol = COMPARISONS[type(op)]
        if symbol in (">", ">="):
            left, right = right, left
        if not isinstance(left, str) and not isinstance(right, str):
            raise fail
        links.append(Inequality(left, right, strict=symbol in ("<", ">")))
    return links


def _calendar_part(left: ast.AST, call: ast.Call, names: dict[str, str], text: str, where: str) -> CalendarPart:
    """`month = month(time_hour)` or `hour = hour(time_hour, 'America/New_York')`."""
    args = call.args
    if not (isinstance(left, ast.Name) and isinstance(call.func, ast.Name) and call.func.id in PARTS
            and not call.keywords and 1 <= len(args) <= 2 and isinstance(args[0], ast.Name)
            and (len(args) == 1 or isinstance(args[1], ast.Constant) and isinstance(args[1].value, str))):
        raise UserError(f"{where}: cannot read rule {text!r}; a calendar part is written `month = month(date)` or "
                        f"`hour = hour(time_hour, 'America/New_York')`, with one of {', '.join(PARTS)}")
    zone = args[1].value if len(args) == 2 else None
    if zone is not None:
        try:
            zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise UserError(f"{where}: {zone!r} in {text!r} is not a time zone; write an IANA name such as "
                            "'America/New_York' or 'UTC'") from None
    return CalendarPart(names.get(left.id, left.id), call.func.id, names.get(args[0].id, args[0].id), zone)


def _expression(node: ast.AST, names: dict[str, str], fail: UserError) -> Expr:
    if isinstance(node, ast.Name):
        return names.get(node.id, node.id)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _expression(node.operand, names, fail)
        return -inner if isinstance(inner, float) else ("*", -1.0, inner)
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        return (OPERATORS[type(node.op)], _expression(node.left, names, fail), _expression(node.right, names, fail))
    raise fail


def expression_columns(expression: Expr) -> list[str]:
    if isinstance(expression, str):
        return [expression]
    if isinstance(expression, tuple):
        return [*expression_columns(expression[1]), *expression_columns(expression[2])]
    return []


def evaluate(expression: Expr, table: pa.Table | dict[str, pa.Array]) -> np.ndarray:
    """float64 per row (NaN where a column is null), columns read as their numeric storage."""
    if isinstance(expression, str):
        return _values(table, expression)
    if isinstance(expression, float):
        return np.full(_rows(table), expression)
    op, left, right = expression[0], evaluate(expression[1], table), evaluate(expression[2], table)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}[op](left, right)


def is_set(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Not null, and for numbers not zero."""
    column = plain(column)
    valid = np.asarray(column.is_valid())
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_decimal(column.type):
        return valid & np.asarray(pc.fill_null(pc.not_equal(column, 0), False))
    return valid


def _values(table: pa.Table | dict[str, pa.Array], side: str | float) -> np.ndarray:
    if not isinstance(side, str):
        return np.full(_rows(table), float(side))
    return float_values(table[side])


def float_values(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """float64 per row of a number, date, time or timestamp column (its numeric storage), NaN where null."""
    # unsafe: a timestamp's int64 nanoseconds past 2**53 round to the nearest float (within 256 ns of 2020)
    column = pc.cast(numeric_storage(plain(column)), pa.float64(), safe=False)
    return column.fill_null(np.nan).to_numpy(zero_copy_only=False) if column.null_count else \
        column.to_numpy(zero_copy_only=False)


def _rows(table: pa.Table | dict[str, pa.Array]) -> int:
    return table.num_rows if isinstance(table, pa.Table) else len(next(iter(table.values())))


def _name(side: str | float) -> str:
    if isinstance(side, str):
        return side if side.isidentifier() else f"`{side}`"
    return str(_number(side))


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _text(expression: Expr, nested: bool = False) -> str:
    if isinstance(expression, tuple):
        text = f"{_text(expression[1], True)} {expression[0]} {_text(expression[2], True)}"
        return f"({text})" if nested else text
    return _name(expression)
