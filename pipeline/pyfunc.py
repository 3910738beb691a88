"""The MLflow pyfunc: what a consumer gets from `models:/NAME@ALIAS`, with or without this project installed.

The logged model carries the artifact folder, this package's modules (MLflow's
`code_paths`; no training data) and requirements that resolve from a public
index, so `mlflow models serve`, `build-docker` and `spark_udf` can rebuild it.
"""
from __future__ import annotations

import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pyarrow as pa
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import AnyType, ColSpec, DataType, ParamSchema, ParamSpec, Schema

from pipeline.artifact import MODEL_ARTIFACT, load_artifact
from pipeline.codec import TableEncoder
from pipeline.errors import UserError
from pipeline.model.sampling import part_seed, synthesize

PACKAGE = Path(__file__).resolve().parent
PYFUNC_ENTRY = PACKAGE / "pyfunc_entry.py"
# What loading and predicting import (pipeline.config pulls pydantic and yaml, pipeline.storage fsspec).
RUNTIME_PACKAGES = ("torch", "pyarrow", "numpy", "pandas", "mlflow", "pydantic", "pyyaml", "fsspec", "faker")


class CVAEPyfunc(mlflow.pyfunc.PythonModel):
    """`predict(conditions DataFrame, params={"seed": S, "part": K})` -> synthetic rows with the training columns.

    The rows equal part K of a `cvae generate` run with `generate.seed=S` over the same condition rows
    (fresh ids count from K x the number of input rows, as they do when every part has that many rows).
    A condition column that held nulls in training may be left out: its rows are then null.
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model, self.encoder = load_artifact(context.artifacts[MODEL_ARTIFACT])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        params = params or {}
        conditions = conditions_from_frame(self.encoder, model_input)
        part = int(params.get("part", 0))
        seed = part_seed(int(params.get("seed", 0)), part)
        return synthesize(self.model, self.encoder, conditions, seed, row_offset=part * len(model_input)).to_pandas()


def nullable_conditions(encoder: TableEncoder) -> set[str]:
    """Condition columns whose training split held nulls: a null there is a value the model learned."""
    return {name for i, name in enumerate(encoder.conditions)
            if any(entry["values"][i] is None for entry in encoder.condition_distribution)}


def conditions_from_frame(encoder: TableEncoder, frame: pd.DataFrame) -> pa.Table:
    optional = nullable_conditions(encoder)
    missing = [name for name in encoder.conditions if name not in frame.columns and name not in optional]
    if missing:
        raise UserError(f"condition column(s) {', '.join(missing)} missing from the input; "
                        f"pass a DataFrame with columns {encoder.conditions}")
    schema = encoder.condition_schema()
    try:
        return pa.table([pa.array(frame[f.name], from_pandas=True).cast(f.type) if f.name in frame.columns
                         else pa.nulls(len(frame), f.type) for f in schema],
                        schema=schema)  # from_pandas: NaN/None are nulls, as pandas means them
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise UserError(f"condition values do not fit the training types ({exc}); pass values like the training "
                        "table's") from None


def example_conditions(encoder: TableEncoder, rows: int = 3) -> pd.DataFrame | None:
    """Condition rows for the input example: the most common combinations, no training rows. None for a model
    whose conditions are given row by row (`data.context`: no combinations are kept to show)."""
    combos = [entry["values"] for entry in encoder.condition_distribution[:rows]]
    if not combos:
        return None
    return conditions_from_frame(encoder, pd.DataFrame(combos, columns=encoder.conditions)).to_pandas()


def signature(encoder: TableEncoder) -> ModelSignature:
    """From the training schema, not inferred from an example (MLflow cannot infer times, durations or
    decimals): condition columns are the inputs, optional where training saw nulls in them; every output
    column is optional (protected, all-null and rare columns can be null in any row)."""
    optional = nullable_conditions(encoder)
    inputs = Schema([ColSpec(mlflow_type(field.type), field.name, required=field.name not in optional)
                     for field in encoder.condition_schema()])
    outputs = Schema([ColSpec(mlflow_type(field.type), field.name, required=False) for field in encoder.schema])
    params = ParamSchema([ParamSpec("seed", "long", 0), ParamSpec("part", "long", 0)])
    return ModelSignature(inputs, outputs, params)


def mlflow_type(arrow_type: pa.DataType) -> DataType | AnyType:
    """The MLflow column type a served row of this Arrow type arrives as; AnyType where MLflow has none."""
    if pa.types.is_dictionary(arrow_type):
        return mlflow_type(arrow_type.value_type)
    if pa.types.is_boolean(arrow_type):
        return DataType.boolean
    if pa.types.is_integer(arrow_type):
        fits_int32 = arrow_type.bit_width < 32 or (arrow_type.bit_width == 32 and pa.types.is_signed_integer(arrow_type))
        return DataType.integer if fits_int32 else DataType.long
    if pa.types.is_floating(arrow_type):
        return DataType.float if arrow_type.bit_width <= 32 else DataType.double
    if pa.types.is_decimal(arrow_type):
        return DataType.double
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return DataType.string
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return DataType.binary
    if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
        return DataType.datetime
    return AnyType()


def code_paths(scratch: Path) -> list[str]:
    """This package's modules copied into `scratch` (no bundled tables, no caches): MLflow puts the folder on
    sys.path when it loads the model, so a consumer needs no install of this project."""
    target = scratch / PACKAGE.name
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__", "data", "*.pyc"))
    return [str(target)]


def requirements() -> list[str]:
    """Pins a public index serves: the installed versions without local build tags (`2.13.0+cpu` -> `2.13.0`),
    so the same model installs the CUDA or CPU build the serving machine's index offers."""
    pins = []
    for package in RUNTIME_PACKAGES:
        try:
            pins.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:  # e.g. mlflow-skinny instead of mlflow
            continue
    return pins
