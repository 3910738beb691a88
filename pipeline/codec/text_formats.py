"""Dates, times, timestamps and numbers held in strings (a CSV export's columns): the formats they may be written
in, and the sketch that checks every training value against them.

A value counts for a format only if parsing it and writing it back gives the same string (Arrow's `strptime` and
`strftime` do both), so a format found is one the column's values are really written in, not a guess from the first
value. Values are counted per format exclusively, in a fixed order of preference within a group: a group is one
family (what the value is) read one way (whether 03/07 is March or July). Per group the sketch also keeps the
parsed values' numeric sketch, so the codec fitted at the end models them as the dates, times or numbers they are.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.codec.arrow import from_storage, numeric_storage
from pipeline.codec.sketches import NumericSketch

COVERAGE = 0.99          # a column is formatted when one group's formats read this share of its non-null values
MAX_FORMATS = 4          # formats kept per column, the most common first
MAX_LENGTH = 40          # longer strings are text, not dates or numbers
PROBE_VALUES = 1000      # distinct values a block tries every format on before it runs the ones that read any
SECONDS_PER_DAY = 86_400
NUMBER = (r"^(?P<sign>-?)(?P<prefix>[$€£]?)(?P<digits>[1-9]\d{0,2}(?:,\d{3})+|[1-9]\d*|0)"
          r"(?:\.(?P<decimals>\d+))?(?P<suffix>%?)$")  # no leading zeros: 02134 is a code, not a number
LEADING_ZERO = r"(^|[^0-9:])0[0-9]"  # a field written with a leading zero (minutes and seconds always are)
UNPADDED = (r"(^|[^0-9:])0([0-9])", r"\1\2")  # 03/07/2020 09:05 -> 3/7/2020 9:05
FAST_RENDER = {"%Y-%m-%d %H:%M:%S": (pa.timestamp("s"), None), "%Y-%m-%dT%H:%M:%S": (pa.timestamp("s"), "T"),
               "%Y-%m-%d": (pa.date32(), None)}  # written by Arrow's cast to string: 20x faster than strftime

# family -> (the Arrow type the parsed values are modelled as, the NumericCodec kind for it)
FAMILIES = {"date": (pa.date32(), "integer"), "timestamp": (pa.timestamp("s"), "integer"),
            "time": (pa.time32("s"), "integer"), "number": (pa.float64(), "continuous")}

# (strptime pattern, family, order): order "ymd" reads one way only; "mdy" and "dmy" are the two readings of
# 03/07/2020, kept in separate groups so a column is read one way throughout
PATTERNS = [
    ("%Y-%m-%d", "date", "ymd"), ("%Y/%m/%d", "date", "ymd"), ("%m/%d/%Y", "date", "mdy"),
    ("%d/%m/%Y", "date", "dmy"), ("%d.%m.%Y", "date", "dmy"), ("%d-%m-%Y", "date", "dmy"),
    ("%m-%d-%Y", "date", "mdy"), ("%b %d, %Y", "date", "ymd"), ("%d %b %Y", "date", "ymd"),
    ("%B %d, %Y", "date", "ymd"), ("%d %B %Y", "date", "ymd"),
    ("%Y-%m-%d %H:%M:%S", "timestamp", "ymd"), ("%Y-%m-%dT%H:%M:%S", "timestamp", "ymd"),
    ("%Y-%m-%d %H:%M", "timestamp", "ymd"), ("%Y-%m-%dT%H:%M", "timestamp", "ymd"),
    ("%Y/%m/%d %H:%M:%S", "timestamp", "ymd"), ("%m/%d/%Y %H:%M:%S", "timestamp", "mdy"),
    ("%m/%d/%Y %H:%M", "timestamp", "mdy"), ("%m/%d/%Y %I:%M:%S %p", "timestamp", "mdy"),
    ("%m/%d/%Y %I:%M %p", "timestamp", "mdy"), ("%d/%m/%Y %H:%M:%S", "timestamp", "dmy"),
    ("%d/%m/%Y %H:%M", "timestamp", "dmy"), ("%d.%m.%Y %H:%M:%S", "timestamp", "dmy"),
    ("%d.%m.%Y %H:%M", "timestamp", "dmy"),
    ("%H:%M:%S", "time", "ymd"), ("%H:%M", "time", "ymd"), ("%I:%M %p", "time", "ymd"),
    ("%I:%M:%S %p", "time", "ymd"),
]


@dataclass(frozen=True)
class TextFormat:
    """One way values are written: a strptime pattern (zero-padded or not), or a number style."""
    family: str
    pattern: str = ""                 # strptime / strftime pattern; "" for numbers
    padded: bool = True
    prefix: str = ""                  # numbers: a currency sign before the digits
    suffix: str = ""                  # numbers: "%" after them
    thousands: bool = False           # numbers: 1,234,567
    decimals: int | None = None       # numbers: digits after the point, None: as many as needed (up to 6)

    @property
    def arrow_type(self) -> pa.DataType:
        return FAMILIES[self.family][0]

    def describe(self) -> str:
        if self.family != "number":
            return self.pattern if self.padded else f"{self.pattern} (no leading zeros)"
        digits = "1,234" if self.thousands else "1234"
        point = "" if self.decimals == 0 else (".5" if self.decimals is None else "." + "0" * self.decimals)
        return f"{self.prefix}{digits}{point}{self.suffix}"

    def parse(self, values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(values in the family's storage units as float64, whether each value is written in this format)."""
        if self.family == "number":
            return _parse_numbers(values, self)
        stamps = pc.strptime(values, self.pattern, "s", error_is_null=True)
        seconds = stamps.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)
        ok = pc.fill_null(pc.equal(self._render_stamps(stamps), values), False)
        return _from_seconds(seconds, self.family), np.asarray(ok, dtype=bool)

    def render(self, numbers: np.ndarray) -> pa.Array:
        """Strings in this format from values in the family's storage units (no nulls)."""
        if self.family == "number":
            return pa.array(_render_numbers(numbers, self), pa.string())
        seconds = _to_seconds(numbers, self.family)
        return self._render_stamps(pa.array(seconds.astype(np.int64), pa.timestamp("s")))

    def twin(self) -> "TextFormat":
        """The same pattern with leading zeros the other way."""
        return TextFormat(self.family, self.pattern, not self.padded)

    def _render_stamps(self, stamps: pa.Array) -> pa.Array:
        if self.pattern in FAST_RENDER:
            arrow_type, separator = FAST_RENDER[self.pattern]
            text = stamps.cast(arrow_type).cast(pa.string())
            text = pc.replace_substring(text, " ", separator, max_replacements=1) if separator else text
        else:
            text = pc.strftime(stamps, self.pattern)
        return text if self.padded else pc.replace_substring_regex(text, *UNPADDED)

    def to_dict(self) -> dict[str, Any]:
        if self.family == "number":
            return {"family": "number", "prefix": self.prefix, "suffix": self.suffix, "thousands": self.thousands,
                    "decimals": self.decimals}
        return {"family": self.family, "pattern": self.pattern, "padded": self.padded}

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> "TextFormat":
        return cls(**spec)


def read_as(values: pa.Array, formats: list[TextFormat]) -> pa.Array:
    """Strings as the values they write, in the formats' Arrow type (a date32 for dates): each read by the first
    format that writes it back the same; null where none does."""
    values = values.cast(pa.string())
    numbers, read = np.zeros(len(values)), np.zeros(len(values), dtype=bool)
    for fmt in formats:
        parsed, ok = fmt.parse(values)
        ok &= ~read
        numbers[ok], read = parsed[ok], read | ok
    arrow_type = formats[0].arrow_type
    storage = pa.array(numbers, mask=~read).cast(numeric_storage(pa.nulls(0, arrow_type)).type, safe=False)
    return from_storage(storage, arrow_type)


def _from_seconds(seconds: np.ndarray, family: str) -> np.ndarray:
    if family == "date":
        return np.floor(seconds / SECONDS_PER_DAY)
    if family == "time":
        return np.mod(seconds, SECONDS_PER_DAY)  # strptime reads a time as a moment of 1900-01-01
    return seconds


def _to_seconds(numbers: np.ndarray, family: str) -> np.ndarray:
    return numbers * SECONDS_PER_DAY if family == "date" else numbers


def _number_parts(values: pa.Array) -> pa.StructArray:
    """The parts of each value written as a number (sign, currency, integer digits, decimals, percent); null
    where a value is not one."""
    return pc.extract_regex(values, NUMBER)


def _number_values(parts: pa.StructArray) -> np.ndarray:
    """The numbers `_number_parts` found (0 where a value is not one)."""
    digits = pc.replace_substring(parts.field("digits"), ",", "")
    decimals = parts.field("decimals")
    text = pc.binary_join_element_wise(parts.field("sign"), digits, ".", pc.if_else(
        pc.equal(decimals, ""), "0", decimals), "")
    return pc.cast(pc.fill_null(text, "0"), pa.float64()).to_numpy(zero_copy_only=False)


def _parse_numbers(values: pa.Array, style: TextFormat) -> tuple[np.ndarray, np.ndarray]:
    """The numbers, and whether `style` writes each value back the same."""
    parts = _number_parts(values)
    matched = np.asarray(pc.fill_null(pc.is_valid(parts), False), dtype=bool)
    numbers = _number_values(parts)
    if matched.any():
        ok = matched & np.asarray(pc.fill_null(pc.equal(pa.array(_render_numbers(numbers, style), pa.string()),
                                                        values), False), dtype=bool)
    else:
        ok = matched
    return numbers, ok


def _render_numbers(numbers: np.ndarray, style: TextFormat) -> list[str]:
    decimals = 6 if style.decimals is None else style.decimals
    grouping = "," if style.thousands else ""
    out = []
    for value in np.round(numbers, decimals):
        text = f"{abs(value):{grouping}.{decimals}f}"
        if style.decimals is None and "." in text:
            text = text.rstrip("0").rstrip(".")
        sign = "-" if value < 0 and text.strip("0.,") else ""
        out.append(f"{sign}{style.prefix}{text}{style.suffix}")
    return out


def _formats(family: str, order: str) -> list[TextFormat]:
    """A family's formats of one reading, zero-padded before not, in PATTERNS order: the order of preference."""
    return [TextFormat(f, pattern, padded) for pattern, f, o in PATTERNS if f == family and o == order
            for padded in (True, False)]


# family -> (formats every reading shares, {group: the formats of that reading}): a value counts for the first
# format that writes it back, the shared ones first, in each group of its family
FAMILY_FORMATS = {family: (_formats(family, "ymd"), {f"{family}/{order}" if order else family: _formats(family, order) for order in orders})
                  for family, orders in (("date", ("mdy", "dmy")), ("timestamp", ("mdy", "dmy")), ("time", ("",)))}


@dataclass
class FormatChoice:
    """What a column's values were found written in: one family read one way, its formats and their shares, and
    the parsed values' sketch (values no format reads count as nulls there)."""
    family: str
    formats: list[TextFormat]
    shares: list[float]
    sketch: NumericSketch
    coverage: float


class TextFormatSketch:
    """Per group, the rows each format reads (exclusively, by preference) and a numeric sketch of the parsed
    values; numbers get their style counted instead (currency, percent, thousands separators, decimals)."""

    def __init__(self, sample_size: int, seed: int, extremes: int):
        self.settings = (sample_size, seed, extremes)
        self.values = 0                                   # non-null rows seen
        # group -> (format, alike) -> rows it reads; alike: rows its zero-padded and unpadded forms write the same
        self.hits: dict[str, dict[tuple[TextFormat, bool], int]] = {}
        self.parsed: dict[str, NumericSketch] = {}        # group -> the parsed values
        self.number_rows = 0
        self.styles: dict[str, int] = {}                  # number style features -> rows

    def update(self, arr: pa.Array, distinct: pa.Array, counts: np.ndarray, row_hash: np.ndarray | None) -> None:
        """`arr`: the block's column (string); `distinct`, `counts`: its non-null values and their rows."""
        self.values += int(counts.sum())
        if not len(distinct):
            return
        if pa.types.is_string_view(distinct.type):  # the string kernels below take string and large_string
            arr, distinct = arr.cast(pa.large_string()), distinct.cast(pa.large_string())
        short = np.asarray(pc.less_equal(pc.utf8_length(distinct), MAX_LENGTH), dtype=bool)
        either = ~np.asarray(pc.match_substring_regex(distinct, LEADING_ZERO), dtype=bool)  # 12/31/2020
        rows_of = pc.index_in(arr, value_set=distinct)
        for shared, readings in FAMILY_FORMATS.values():
            numbers, taken, hits = np.zeros(len(distinct)), ~short, {}
            for fmt in shared:
                taken = _read(fmt, distinct, numbers, taken, either, counts, hits)
            for group, formats in readings.items():
                group_numbers, group_taken, group_hits = numbers.copy(), taken, dict(hits)
                for fmt in formats:
                    group_taken = _read(fmt, distinct, group_numbers, group_taken, either, counts, group_hits)
                read = group_taken & short
                if read.any():
                    bucket = self.hits.setdefault(group, {})
                    for key, rows in group_hits.items():
                        bucket[key] = bucket.get(key, 0) + rows
                    self._sketch(group).update(_per_row(rows_of, group_numbers, read), group, row_hash)
        self._count_numbers(arr, distinct, counts, short, rows_of, row_hash)

    def _count_numbers(self, arr: pa.Array, distinct: pa.Array, counts: np.ndarray, short: np.ndarray,
                       rows_of: pa.Array, row_hash: np.ndarray | None) -> None:
        parts = _number_parts(distinct)
        matched = np.asarray(pc.fill_null(pc.is_valid(parts), False), dtype=bool) & short
        if not matched.any():
            return
        numbers = _number_values(parts)  # the style is found at the end: nothing to write back yet
        self.number_rows += int(counts[matched].sum())
        kept = pa.array(matched)
        digits = pc.filter(parts.field("digits"), kept)
        long = pc.greater_equal(pc.utf8_length(digits), 4)  # whether thousands could be grouped
        grouping = pc.if_else(long, pc.if_else(pc.match_substring(digits, ","), "grouped", "ungrouped"), "")
        features = pa.table({"prefix": pc.filter(parts.field("prefix"), kept),
                             "suffix": pc.filter(parts.field("suffix"), kept),
                             "decimals": pc.utf8_length(pc.filter(parts.field("decimals"), kept)),
                             "grouping": grouping, "rows": pa.array(counts[matched])})
        for key in ("prefix", "suffix", "decimals", "grouping"):
            summed = features.group_by(key).aggregate([("rows", "sum")])
            for value, rows in zip(summed.column(key).to_pylist(), summed.column("rows_sum").to_pylist()):
                if key != "grouping" or value:
                    feature = f"{key}:{value}" if key != "grouping" else value
                    self.styles[feature] = self.styles.get(feature, 0) + rows
        self._sketch("number").update(_per_row(rows_of, numbers, matched), "number", row_hash)

    def _sketch(self, group: str) -> NumericSketch:
        if group not in self.parsed:
            size, seed, extremes = self.settings
            self.parsed[group] = NumericSketch(1, size, seed, extremes)
        return self.parsed[group]

    def merge(self, other: "TextFormatSketch") -> None:
        self.values += other.values
        self.number_rows += other.number_rows
        for group, hits in other.hits.items():
            bucket = self.hits.setdefault(group, {})
            for fmt, rows in hits.items():
                bucket[fmt] = bucket.get(fmt, 0) + rows
        for feature, rows in other.styles.items():
            self.styles[feature] = self.styles.get(feature, 0) + rows
        for group, sketch in other.parsed.items():
            if group in self.parsed:
                self.parsed[group].merge(sketch)
            else:
                self.parsed[group] = sketch

    def choice(self, min_rows: int) -> FormatChoice | None:
        """The group whose formats read at least COVERAGE of the values (the most-read group), each format kept read
        by `min_rows` (k) rows or more; None when no group does."""
        if not self.values:
            return None
        best: FormatChoice | None = None
        for group, hits in self.hits.items():
            ranked = sorted(_shared_out(hits).items(), key=lambda item: (-item[1], item[0].pattern, item[0].padded))
            kept = [(fmt, rows) for fmt, rows in ranked if rows >= min_rows][:MAX_FORMATS]
            read = sum(rows for _, rows in kept)
            if kept and read >= COVERAGE * self.values and (best is None or read > best.coverage * self.values):
                best = FormatChoice(kept[0][0].family, [fmt for fmt, _ in kept], [rows / read for _, rows in kept],
                                    self.parsed[group], read / self.values)
        number = self._number_style(min_rows)
        if number is not None and (best is None or self.number_rows > best.coverage * self.values):
            best = FormatChoice("number", [number], [1.0], self.parsed["number"], self.number_rows / self.values)
        return best

    def _number_style(self, min_rows: int) -> TextFormat | None:
        """The one style numbers are written in, when COVERAGE of the values are numbers in it."""
        if self.number_rows < max(COVERAGE * self.values, min_rows):
            return None
        majority = {}
        for feature in ("prefix", "suffix", "decimals"):
            rows = {key.split(":", 1)[1]: n for key, n in self.styles.items() if key.startswith(feature + ":")}
            value, top = max(rows.items(), key=lambda item: (item[1], item[0]))
            if feature != "decimals" and top < COVERAGE * self.number_rows:
                return None  # a currency sign or percent on some values only: not one style
            majority[feature] = value if top >= COVERAGE * self.number_rows else None
        grouped, ungrouped = self.styles.get("grouped", 0), self.styles.get("ungrouped", 0)
        if grouped and ungrouped > (1 - COVERAGE) * (grouped + ungrouped):
            return None  # 1,234 beside 1234: not one style
        decimals = None if majority["decimals"] is None else int(majority["decimals"])
        return TextFormat("number", prefix=majority["prefix"], suffix=majority["suffix"], thousands=grouped > 0,
                          decimals=decimals)


def _read(fmt: TextFormat, distinct: pa.Array, numbers: np.ndarray, taken: np.ndarray, either: np.ndarray,
          counts: np.ndarray, hits: dict[TextFormat, int]) -> np.ndarray:
    """Read the values not yet `taken` with `fmt` (if any of the first PROBE_VALUES of them is written in it): their
    parsed values into `numbers`, their rows into `hits` (under (fmt, True) the rows a padded format writes the
    same unpadded, 12/31/2020). Returns the new taken mask."""
    left = np.flatnonzero(~taken)
    if not len(left) or not fmt.parse(distinct.take(left[:PROBE_VALUES]))[1].any():
        return taken
    parsed, ok = fmt.parse(distinct.take(left))
    if not ok.any():
        return taken
    rows = left[ok]
    numbers[rows] = parsed[ok]
    alike = either[rows] if fmt.padded else np.zeros(len(rows), dtype=bool)
    for key, n in (((fmt, False), counts[rows[~alike]].sum()), ((fmt, True), counts[rows[alike]].sum())):
        if n:
            hits[key] = hits.get(key, 0) + int(n)
    taken = taken.copy()
    taken[rows] = True
    return taken


def _shared_out(hits: dict[tuple[TextFormat, bool], int]) -> dict[TextFormat, float]:
    """Rows per format: the rows a pattern writes alike padded or not are shared out between the two in proportion
    to the rows only one of them writes (all to the padded one when neither has any)."""
    out: dict[TextFormat, float] = {}
    for (fmt, alike), rows in hits.items():
        if not alike:
            out[fmt] = out.get(fmt, 0) + rows
    for (padded, alike), rows in hits.items():
        if alike:
            unpadded = padded.twin()
            mine, theirs = out.get(padded, 0), out.get(unpadded, 0)
            share = mine / (mine + theirs) if mine + theirs else 1.0
            for fmt, part in ((padded, rows * share), (unpadded, rows * (1 - share))):
                if part:
                    out[fmt] = out.get(fmt, 0) + part
    return out


def _per_row(rows_of: pa.Array, numbers: np.ndarray, read: np.ndarray) -> pa.Array:
    """The block's rows as parsed numbers: null where the value is null or no format of the group reads it."""
    index = rows_of.fill_null(-1).to_numpy(zero_copy_only=False)
    valid = index >= 0
    valid[valid] = read[index[valid]]
    out = np.zeros(len(index))
    out[valid] = numbers[index[valid]]
    return pa.array(out, mask=~valid)
