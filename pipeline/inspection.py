"""`cvae inspect`: what training would make of a table, before training: each column's kind and format, and the
rules its training rows keep in every row, as a YAML block to paste into `data.rules`.

It reads the table as training does (Ray Data, streaming, the training split only) and fits the same encoder, so
what it prints is what `cvae train` would use with the same config."""
from __future__ import annotations

from dataclasses import dataclass

import yaml

from pipeline import console
from pipeline.cluster import ensure_ray
from pipeline.codec import TableEncoder
from pipeline.config import Config
from pipeline.rules.construct import shown
from pipeline.source import check_table, fit_encoder, modelled_schema, read_table
from pipeline.storage import parquet_files, redact

WHY = {"id": "identifier: fresh values on generation, never a training value",
       "personal": "personal data: drawn from Faker, never a training value",
       "formatted": "values held in strings, modelled as their type",
       "clock": "clock times written HHMM, modelled as minutes since midnight",
       "categorical": "categories seen in at least k rows", "integer": "whole numbers (quantiles)",
       "continuous": "numbers (quantiles)", "list": "fixed-size numeric lists"}


@dataclass(frozen=True)
class Inspection:
    rows: int
    encoder: TableEncoder


def inspect_table(config: Config) -> Inspection:
    data = config.data
    fs, files = parquet_files(data.path, data.storage_options)
    rows, schema = check_table(fs, files, data)
    modelled = modelled_schema(schema, data)
    ensure_ray(config.ray.address)
    dataset = read_table(fs, files, modelled.names)
    encoder = fit_encoder(dataset, modelled, data, config.encoder, config.train.seed)
    return Inspection(rows, encoder)


def report(config: Config, inspection: Inspection) -> None:
    """Prints the columns, then the rules as YAML (found ones applied by default, others with why not)."""
    encoder, rules = inspection.encoder, inspection.encoder.rules
    conditions = config.data.conditions or "none yet (cvae train needs data.conditions: columns whose values you "\
        "will ask for)"
    console.result(f"{redact(config.data.path)}: {inspection.rows:,} rows, conditions {conditions}")
    kinds, formats = encoder.kinds(), encoder.formats()
    for field in encoder.schema:
        if field.name in kinds:
            kind = kinds[field.name]
            described = formats.get(field.name) or WHY.get(kind, kind)
        else:
            kind, described = "ruled", "kept by a rule below"
        console.result(f"  {field.name} ({field.type}): {kind}: {described}"[:300])
    found = [rule.config() for rule in rules.found]
    console.result(f"{len(found)} rule(s) the training rows keep in every row, each behind at least "
                   f"{config.encoder.min_value_count} rows (data.rules_found={config.data.rules_found}):")
    print(yaml.safe_dump({"data": {"rules": found}}, sort_keys=False, allow_unicode=True).rstrip())
    for rule, why in rules.skipped:
        console.result(f"# not applied: {shown(rule)}: {why}"[:300])
