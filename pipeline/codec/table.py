"""The fitted table encoder: Arrow rows <-> the model's float32 matrices (x for the columns the model
reconstructs, c for the condition columns and their calendar phases), and its JSON file format."""
from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.codec.arrow import json_value, plain
from pipeline.codec.base import Codec, DecodeContext
from pipeline.codec.calendar import calendar_cycles, calendar_phases
from pipeline.codec.kinds import Span
from pipeline.codec.registry import codec_from_dict
from pipeline.errors import UserError
from pipeline.rules.construct import RuleSet

FORMAT = "cvae-table-encoder/8"  # 8: calendar-part rules; a reader of 7 refuses it in one line
READABLE_FORMATS = ("cvae-table-encoder/2", "cvae-table-encoder/3", "cvae-table-encoder/4", "cvae-table-encoder/5",
                    "cvae-table-encoder/6", "cvae-table-encoder/7", FORMAT)  # 4 lacks templates, 5 rules, 6 clocks


class TableEncoder:
    """A fitted encoder: feature matrix x for the columns the model reconstructs, condition matrix c for the rest.
    With `rules`, the codecs serve the columns the rules' reparametrisation gives (`modelled`), and rows are
    rebuilt into `schema` keeping every rule (pipeline/rules/construct.py)."""

    def __init__(self, schema: pa.Schema, conditions: list[str], codecs: dict[str, Codec],
                 condition_distribution: list[dict[str, Any]], excluded: list[str] = (), min_value_count: int = 1,
                 privacy: dict[str, Any] | None = None, calendar: dict[str, list[str]] | None = None,
                 rules: RuleSet | None = None):
        self.schema = schema
        self.rules = rules or RuleSet(schema, conditions, [], {})
        self.modelled = self.rules.modelled_schema
        self.privacy = privacy  # the statistics' noise (StatisticsNoise.describe()), None when fitted exactly
        self.fitted_rows: int | None = None  # training rows the fit saw (not saved: only the fitting job needs it)
        self.conditions = list(conditions)
        self.features = [name for name in self.modelled.names if name not in conditions]
        self.codecs = codecs
        self.condition_distribution = condition_distribution
        self.excluded = list(excluded)
        self.min_value_count = min_value_count
        self.feature_spans = self._spans(self.features)
        self.condition_spans = self._spans(self.conditions)
        # condition column -> the calendar cycles appended to c (None: a new fit, every date/timestamp condition)
        self.calendar = ({name: calendar_cycles(codecs[name].modelled_type) for name in self.conditions
                          if calendar_cycles(codecs[name].modelled_type)} if calendar is None else calendar)

    def _spans(self, names: list[str]) -> list[Span]:
        spans, start = [], 0
        for name in names:
            codec = self.codecs[name]
            spans.extend(codec.spans(start))
            start += codec.width
        return spans

    @property
    def x_dim(self) -> int:
        return sum(self.codecs[name].width for name in self.features)

    @property
    def c_dim(self) -> int:
        return (sum(self.codecs[name].width for name in self.conditions)
                + sum(2 * len(cycles) for cycles in self.calendar.values()))

    @property
    def id_columns(self) -> list[str]:
        return [name for name, codec in self.codecs.items() if codec.kind == "id"]

    @property
    def personal_columns(self) -> list[str]:
        """Columns drawn from Faker: believable values, never a training value, so never a training value's twin."""
        return [name for name, codec in self.codecs.items() if codec.kind == "personal"]

    def kinds(self) -> dict[str, str]:
        """Each column's kind as fitted: id, categorical, integer, continuous or list."""
        return {name: codec.kind for name, codec in self.codecs.items()}

    def formats(self) -> dict[str, str]:
        """Column -> how its values are written, for strings found to hold dates, times or numbers and for
        personal data drawn from Faker."""
        return {name: codec.written_as() for name, codec in self.codecs.items() if codec.written_as()}

    def kinds_summary(self) -> str:
        """e.g. "9 categorical, 1 id, 6 integer": what the fit found, for the console and benchmarks."""
        kinds = list(self.kinds().values())
        return ", ".join(f"{kinds.count(kind)} {kind}" for kind in sorted(set(kinds)))

    def protection(self) -> dict[str, Any]:
        """What stands in for protected values, as the manifest and README describe it."""
        tokens = {codec.replacement_token() for codec in self.codecs.values()} - {None}
        return {"min_value_count": self.min_value_count, "replacement_token": min(tokens) if tokens else None,
                "condition_columns_unprotected": [] if self.privacy else self.conditions,
                "noisy_statistics": self.privacy}

    def condition_schema(self) -> pa.Schema:
        """The condition columns as a plan or a served request gives them (dictionary columns as their values)."""
        fields = []
        for name in self.conditions:
            arrow_type = self.schema.field(name).type
            fields.append(pa.field(name, arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type))
        return pa.schema(fields)

    def check_capacity(self, num_rows: int) -> None:
        """Integer ids must fit their type for every row of a dataset."""
        for name, codec in self.codecs.items():
            capacity = codec.capacity()
            if capacity is not None and num_rows > capacity:
                raise UserError(f"generate.num_rows: {num_rows:,} rows need more fresh ids than column {name!r} "
                                f"({self.modelled.field(name).type}) can hold ({capacity:,}); generate fewer rows")

    def transform(self, table: pa.Table | pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        """(x, c) float32 matrices for the feature and condition columns of the rows the model learns from (not
        those breaking a declared rule, under `data.rules_breaking=leave_out`)."""
        missing = [name for name in self.schema.names if name not in table.schema.names]
        if missing:
            raise UserError(f"table lacks column(s) {', '.join(missing)} that the encoder was fitted on; "
                            "use data with the training schema")
        table = self.rules.screen(pa.table(table) if isinstance(table, pa.RecordBatch) else table)
        return self._encode(self.rules.forward(table), self.features), self.encode_conditions(table)

    def encode_conditions(self, table: pa.Table | pa.RecordBatch) -> np.ndarray:
        """Each condition column's codec block, then the calendar phases of its date and timestamp columns."""
        phases = [calendar_phases(self.codecs[name].modelled_values(plain(table.column(name))), cycles)
                  for name, cycles in self.calendar.items()]
        # a condition is network input, not a target: a null numeric condition feeds 0, not NaN
        return np.nan_to_num(np.concatenate([self._encode(table, self.conditions), *phases], axis=1), nan=0.0)

    def _encode(self, table: pa.Table | pa.RecordBatch, names: list[str]) -> np.ndarray:
        blocks = [self.codecs[name].encode(plain(table.column(name))) for name in names]
        if not blocks:
            return np.zeros((table.num_rows, 0), dtype=np.float32)
        return np.concatenate(blocks, axis=1)

    def inverse_transform(self, x: np.ndarray, conditions: pa.Table, rng: np.random.Generator | None = None,
                          row_offset: int = 0) -> pa.Table:
        """Rows in the training schema: features decoded from x, condition columns copied from `conditions` exactly.
        `row_offset` is the first row's index in the whole generated dataset (fresh ids count from it)."""
        context = DecodeContext(rng or np.random.default_rng(0), row_offset)
        if x.shape != (conditions.num_rows, self.x_dim):
            raise ValueError(f"x has shape {x.shape}, expected ({conditions.num_rows}, {self.x_dim})")
        columns = context.columns
        for name in self.conditions:
            columns[name] = plain(conditions.column(name)).cast(self.schema.field(name).type)
        blocks, start = {}, 0
        for name in self.features:
            blocks[name], start = x[:, start: start + self.codecs[name].width], start + self.codecs[name].width
        # codecs that read other columns of the row decode after them: names read the row's country, an e-mail
        # its names and country (more needs, later), after the rules' combinations are split into their columns
        ordered = sorted(self.features, key=lambda name: len(self.codecs[name].needs()))
        for name in ordered:
            if self.codecs[name].needs() and any(n in columns for n in self.rules.merged):
                self.rules.split(columns, context.rng, self.combinations)
            columns[name] = self.codecs[name].decode(blocks[name], context)
        self.rules.split(columns, context.rng, self.combinations)
        self.rules.rebuild(columns, context.rng)
        return pa.table([columns[name] for name in self.schema.names], schema=self.schema)

    def combinations(self, merged: str) -> tuple[list[str], list[float]]:
        """A fixed combination column's kept combinations and their frequencies (pipeline/rules/construct.py)."""
        codec = self.codecs[merged]
        other = max(0.0, 1.0 - sum(codec.frequencies))  # the tail's share of the rows
        return codec.stored_values(), [*codec.frequencies, *(w * other for w in codec.tail_weights)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "schema": _schema_text(self.schema),
            "modelled_schema": _schema_text(self.modelled),
            "rules": self.rules.to_dict(),
            "columns": [{"name": f.name, "type": str(f.type)} for f in self.schema],
            "conditions": self.conditions,
            "excluded": self.excluded,
            "min_value_count": self.min_value_count,
            "codecs": {name: codec.to_dict() for name, codec in self.codecs.items()},
            "condition_distribution": self.condition_distribution,
            "privacy": self.privacy,
            "calendar": self.calendar,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=json_value)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TableEncoder":
        if not isinstance(data, dict) or data.get("format") not in READABLE_FORMATS:
            raise UserError(f"encoder JSON is not a {FORMAT} document; retrain the model with this version")
        try:
            schema = _schema(data["schema"])
            modelled = _schema(data.get("modelled_schema", data["schema"]))
            codecs = {field.name: codec_from_dict(field, data["codecs"][field.name]) for field in modelled}
            rules = RuleSet.from_dict(schema, data["conditions"], data.get("rules"))
            return cls(schema, data["conditions"], codecs, data["condition_distribution"], data["excluded"],
                       data["min_value_count"], data.get("privacy"), data.get("calendar", {}), rules)
        except (KeyError, TypeError, ValueError, pa.ArrowInvalid) as exc:
            raise UserError(f"encoder JSON is malformed ({type(exc).__name__}: {exc}); re-export the model") from None

    @classmethod
    def from_json(cls, text: str) -> "TableEncoder":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise UserError(f"encoder JSON does not parse ({exc}); re-export the model") from None




def _schema_text(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def _schema(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))
