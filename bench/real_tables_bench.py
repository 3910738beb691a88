"""Every bundled real table through `cvae run` with the defaults and one condition column, as a new user would.

Prints, per table: rows, columns, the kinds the encoder found, train seconds (the whole `cvae train` stage,
Ray start included for the first table only), whether the output schema equals the input's, protected values
found in the model artifact or the output (pipeline/evaluate/audit.py), and quality against the holdout (our evaluator;
tables whose 10% holdout is under 500 rows are judged on a fifth of the training rows instead).

    python bench/real_tables_bench.py [--epochs 10] [--rows 20000] [TABLE ...]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")

import mlflow  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from pipeline.evaluate.audit import audit, protected_values, training_split  # noqa: E402
from pipeline.config import BUNDLED_DATA, load_config  # noqa: E402
from pipeline.codec import TableEncoder  # noqa: E402
from pipeline.evaluate.driver import evaluate  # noqa: E402
from pipeline.generate.driver import generate  # noqa: E402
from pipeline.train.driver import train  # noqa: E402

TABLES = {"adult": ["income"], "digits": ["digit"], "pizzaplace": ["type"], "airports": ["state"],
          "nuclides": ["is_stable"], "penguins-raw": ["Species"], "seattle-weather": ["weather"], "sf-temps": ["date"]}


def run_table(name: str, conditions: list[str], folder: Path, epochs: int, rows: int) -> dict:
    path = BUNDLED_DATA / f"{name}.parquet"
    real = pq.read_table(path)
    overrides = [f"data.path={path}", f"data.conditions=[{', '.join(conditions)}]", f"train.epochs={epochs}",
                 f"train.name={name}", f"train.storage_path={folder / 'runs'}",
                 f"mlflow.tracking_uri=sqlite:///{folder / 'mlflow.db'}", f"mlflow.model_name={name}-bench",
                 f"generate.num_rows={rows}", f"generate.output={folder / name}"]
    if name == "digits":
        overrides.append("data.columns={digit: categorical}")
    config = load_config(None, overrides)
    started = time.perf_counter()
    trained = train(config)
    train_seconds = time.perf_counter() - started
    config = config.model_copy(update={"generate": config.generate.model_copy(update={"model_uri": trained.model_uri})})
    generated = generate(config)
    report = evaluate(config.model_copy(update={"evaluate": config.evaluate.model_copy(
        update={"synthetic": generated.output})})).report
    synthetic = pq.read_table(folder / name)
    artifact = mlflow.artifacts.download_artifacts(trained.model_uri, dst_path=str(folder / f"{name}-model"))
    encoder = TableEncoder.from_json(next(Path(artifact).rglob("encoder.json")).read_text())
    split = training_split(str(path), encoder.schema.names, config.train.seed, config.data.holdout_fraction)
    protected = protected_values(split, encoder)
    return {"table": name, "rows": real.num_rows, "columns": real.num_columns, "kinds": encoder.kinds_summary(),
            "train_s": train_seconds, "schema_equal": [(f.name, f.type) for f in synthetic.schema] ==
            [(f.name, f.type) for f in real.schema], "protected": protected.count, "bounded": len(protected.bounds),
            "leaked": sum(audit(protected, artifact, synthetic).values()),
            "quality": report["quality"]["overall"], "reference": report["reference"],
            "holdout_vs_training": report["quality"]["real_holdout_vs_training"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="*", default=list(TABLES))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.tables:
            results.append(run_table(name, TABLES[name], Path(scratch), args.epochs, args.rows))
    print(f"\n{sys.platform}, {os.cpu_count()} cores; defaults, {args.epochs} epochs, {args.rows:,} synthetic rows\n")
    print("| table | rows | columns | kinds found | train s | output schema equal | protected categories / numeric columns with protected bounds | leaked (artifact + output) | quality (reference) | real holdout vs training |")
    print("|---|---:|---:|---|---:|---|---:|---:|---|---:|")
    for r in results:
        baseline = f"{r['holdout_vs_training']:.3f}" if r["holdout_vs_training"] is not None else "-"
        print(f"| {r['table']} | {r['rows']:,} | {r['columns']} | {r['kinds']} | {r['train_s']:.0f} | "
              f"{'yes' if r['schema_equal'] else 'NO'} | {r['protected']:,} / {r['bounded']} | {r['leaked']} | "
              f"{r['quality']:.3f} ({r['reference']}) | {baseline} |")


if __name__ == "__main__":
    main()
