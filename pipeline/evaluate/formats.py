"""Format validity: whether each generated string is written the way the real column's strings are, beside the
same share for real rows the model never saw (the ceiling).

A string column whose training values are dates, times or numbers in found formats (pipeline/codec/text_formats.py)
is checked by parsing: a value is valid when one of those formats reads it and writes it back the same. Any other
string column (codes, names, free text) is checked by shape: each digit a 9, each run of letters one letter class,
other characters kept; a value is valid when real training values have its shape. `03:00000:17` fails both ways.
Any tool's output can be scored: nothing here reads the model. The same formats let fidelity score such columns
as the dates, times and numbers they hold (`typed_columns`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.codec.arrow import is_string_like, plain
from pipeline.codec.text_formats import TextFormat, TextFormatSketch, read_as


def shapes(values: pa.Array) -> pa.Array:
    """`Fugger Strasse 76` -> `Aa Aa 99`, `03:00:17` -> `99:99:99`: digits counted, words not."""
    text = pc.replace_substring_regex(values, "[0-9]", "9")
    text = pc.replace_substring_regex(text, "[A-Z][a-z]+", "Aa")
    text = pc.replace_substring_regex(text, "[a-z]+", "a")
    return pc.replace_substring_regex(text, "[A-Z]+", "A")


def _formats_of(train: pa.Array) -> list[TextFormat] | None:
    """The formats the training values are written in, found as the encoder finds them; None: not dates or numbers."""
    counted = pc.value_counts(train)
    sketch = TextFormatSketch(1000, 0, 1)
    sketch.update(train, counted.field("values"), np.asarray(counted.field("counts")), None)
    choice = sketch.choice(1)
    return choice.formats if choice is not None else None


def typed_columns(train: pa.Table, kinds: dict[str, str]) -> dict[str, list[TextFormat]]:
    """The scored text columns whose real values are dates, times or numbers written in found formats: fidelity
    compares what they write (a date 3 days off is close; as categories every unseen date is a miss)."""
    found = {}
    for name, kind in kinds.items():
        if kind == "categorical" and is_string_like(train.schema.field(name).type):
            formats = _formats_of(pc.drop_null(plain(train.column(name))).cast(pa.string()))
            if formats is not None:
                found[name] = formats
    return found


def as_typed(table: pa.Table, typed: dict[str, list[TextFormat]]) -> pa.Table:
    """The table with each typed column as the values it writes (null where no format reads one)."""
    for name, formats in typed.items():
        table = table.set_column(table.schema.get_field_index(name), name, read_as(plain(table.column(name)), formats))
    return table


def _valid_share(values: pa.Array, formats: list[TextFormat] | None, known_shapes: pa.Array) -> float | None:
    if not len(values):
        return None
    if formats is not None:
        read = np.zeros(len(values), dtype=bool)
        for fmt in formats:
            read |= fmt.parse(values)[1]
        return float(read.mean())
    return float(np.asarray(pc.is_in(shapes(values), value_set=known_shapes)).mean())


def format_validity(train: pa.Table, holdout: pa.Table | None, synthetic: pa.Table) -> dict[str, Any]:
    """Per string column of the real table: how it was checked, and the share of valid synthetic (and holdout)
    values among the non-null ones; the means over columns."""
    columns = {}
    for name in train.column_names:
        if not is_string_like(train.schema.field(name).type) or name not in synthetic.column_names:
            continue
        real = pc.drop_null(plain(train.column(name))).cast(pa.string())
        formats = _formats_of(real)
        known = pc.unique(shapes(real))
        checked = {"synthetic": pc.drop_null(plain(synthetic.column(name))).cast(pa.string())}
        if holdout is not None:
            checked["holdout"] = pc.drop_null(plain(holdout.column(name))).cast(pa.string())
        columns[name] = {"checked_by": ", ".join(f.describe() for f in formats) if formats else "shape",
                         **{side: _valid_share(values, formats, known) for side, values in checked.items()}}
    means = {side: float(np.mean(shares)) if shares else None for side in ("synthetic", "holdout")
             for shares in [[c[side] for c in columns.values() if c.get(side) is not None]]}
    return {"columns": columns, **means}
