"""Column kinds: what a column is to the model, from its Arrow type or the user's `data.columns` override, and
where a codec's output lives in the model's matrix (`Span`).

Kinds: `integer` and `continuous` (numbers, dates, times), `categorical`, `list` (fixed-size numeric lists),
`id` (identifiers, not modelled), `personal` (names, e-mails, addresses,
phone numbers: not modelled, drawn from Faker) and `formatted` (dates, times and numbers held in strings, found by the fit). Each kind has one codec class (pipeline/codec/registry.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa

from pipeline.codec.arrow import is_numeric_temporal, is_string_like
from pipeline.errors import UserError

KINDS = ("integer", "continuous", "categorical", "list", "id", "formatted", "personal", "clock")
PERSONAL_ROLES = ("first_name", "last_name", "full_name", "email", "street_address", "city", "state", "postcode",
                  "phone_number")  # data.columns values that make a string column personal, in that role
NUMERIC_KINDS = ("integer", "continuous")
LIKELIHOODS = ("gaussian", "softmax", "bernoulli")
ID_NAME_TOKENS = {"id", "ids", "uuid", "guid", "key", "code", "number", "no", "num", "nr"}


@dataclass(frozen=True)
class Span:
    """Where one column's output lives in the matrix, and which likelihood it gets."""
    column: str
    likelihood: str  # one of LIKELIHOODS
    start: int
    width: int

    def to_dict(self) -> dict:
        """As model.json stores it (its key for the likelihood is "kind": saved models keep loading)."""
        return {"column": self.column, "kind": self.likelihood, "start": self.start, "width": self.width}

    @classmethod
    def from_dict(cls, spec: dict) -> "Span":
        return cls(spec["column"], spec["kind"], spec["start"], spec["width"])


def infer_kind(field: pa.Field, override: str | None = None) -> str:
    """The column kind from its Arrow type, or the user's override if the type allows it."""
    t = field.type
    if is_numeric_temporal(t):
        allowed, default = ("integer", "continuous"), "integer"
    elif pa.types.is_integer(t):
        allowed, default = ("integer", "continuous", "categorical", "id"), "integer"
    elif pa.types.is_floating(t) or pa.types.is_decimal(t):
        allowed, default = ("continuous", "categorical"), "continuous"
    elif is_string_like(t):
        allowed, default = ("categorical", "id", *PERSONAL_ROLES), "categorical"
    elif pa.types.is_boolean(t) or pa.types.is_null(t) or pa.types.is_dictionary(t):
        allowed, default = ("categorical",), "categorical"
    elif pa.types.is_fixed_size_list(t) and (pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type)):
        allowed, default = ("list",), "list"
    else:
        raise UserError(f"column {field.name!r} has Arrow type {t}, which the model cannot represent; add it to "
                        "data.exclude to leave it out of the model and the output, or cast it to a number, string, "
                        "date, time or fixed-size numeric list")
    if override is None:
        return default
    if override not in allowed:
        raise UserError(f"data.columns.{field.name}: kind {override!r} does not fit Arrow type {t}; "
                        f"use one of {', '.join(allowed)}")
    if override in PERSONAL_ROLES:
        return "personal"
    return "integer" if override == "continuous" and not (pa.types.is_floating(t) or pa.types.is_decimal(t)) else override


def named_like_id(name: str) -> bool:
    """`id`, `order_id`, `Individual ID`, `customerId`, `case number`, ..."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name).lower()
    return bool(ID_NAME_TOKENS & set(re.split(r"[^a-z0-9]+", words)))
