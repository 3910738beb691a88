"""Quality benchmark: our CVAE beside ctgan's TVAE and SDV's GaussianCopula on Adult and digits, in one run.

    python bench/quality_bench.py [--budget-seconds 144] [--datasets adult digits]

Two budgets: 10 epochs each, and equal wall-clock time (each system gets the
epochs that fit in --budget-seconds, from its own 10-epoch run: fixed cost plus
wall time per epoch; 144 s is a tenth of the ~24 minutes TVAE needs for 300
epochs on Adult here). The judge is
SDMetrics' own QualityReport (not our evaluator, whose score is printed beside
it), on as many synthetic rows as the real table has, against the whole real
table, which every system trains on. Our CVAE runs the real pipeline (`cvae
train`: Ray Train, 2 DDP workers, MLflow), so its fit seconds include starting
Ray, checkpoints and registration. Generation rows/s is each system's in-memory
sampling rate. The rare condition asks for rows with race=Other (0.8% of Adult;
the CVAE conditions on income and race) or digit=8: the share of returned rows
that satisfy it. Each run is its own process, so peak RSS is its own.
Needs the `bench` extra (ctgan, sdmetrics; sdv where installable).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
warnings.filterwarnings("ignore")

RARE = {"adult": ("race", "Other"), "digits": ("digit", 8)}
CONDITIONS = {"adult": ["income", "race"], "digits": ["digit"]}
SAMPLE_ROWS = 100_000


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def real_table(dataset: str) -> pa.Table:
    from pipeline.config import BUNDLED_DATA

    return pq.read_table(BUNDLED_DATA / f"{dataset}.parquet")


def flat_frame(table: pa.Table) -> pd.DataFrame:
    """The flat table peers and SDMetrics take: an image column becomes one float column per pixel."""
    columns = {}
    for field in table.schema:
        if pa.types.is_fixed_size_list(field.type):
            pixels = table.column(field.name).combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)
            columns |= {f"{field.name}_{j}": pixels[:, j].astype(float) for j in range(pixels.shape[1])}
        else:
            columns[field.name] = table.column(field.name).to_pandas()
    return pd.DataFrame(columns)


def sdtypes(frame: pd.DataFrame, dataset: str) -> dict[str, str]:
    categorical = {"digit"} if dataset == "digits" else set()
    return {c: "categorical" if c in categorical or frame[c].dtype == object or str(frame[c].dtype).startswith(("str", "string"))
            else "numerical" for c in frame.columns}


def judge(real: pd.DataFrame, synthetic: pd.DataFrame, dataset: str) -> dict[str, float]:
    """SDMetrics' QualityReport, and our evaluator's overall on the same frames."""
    from sdmetrics.reports.single_table import QualityReport

    from pipeline.metrics import prepare, quality

    types = sdtypes(real, dataset)
    synthetic = synthetic[list(real.columns)]
    report = QualityReport()
    report.generate(real, synthetic, {"columns": {c: {"sdtype": t} for c, t in types.items()}}, verbose=False)
    shapes, pairs = report.get_properties()["Score"].tolist()
    kinds = {c: "categorical" if t == "categorical" else "numeric" for c, t in types.items()}
    tables = [pa.Table.from_pandas(frame.astype({c: str for c, t in types.items() if t == "categorical"}),
                                   preserve_index=False) for frame in (real, synthetic)]
    ours = quality(*prepare(tables, kinds))["overall"]
    return {"sdmetrics_quality": report.get_score(), "sdmetrics_shapes": shapes, "sdmetrics_pairs": pairs,
            "our_quality": ours}


def run_cvae(dataset: str, epochs: int) -> dict:
    from mlflow.tracking import MlflowClient

    from pipeline.config import BUNDLED_DATA, GenerateConfig, load_config
    from pipeline.plan import build_plan
    from pipeline.artifact import load_artifact_files
    from pipeline.registry import fetch_model
    from pipeline.sampling import synthesize
    from pipeline.train import train

    folder = tempfile.mkdtemp(prefix="quality-bench-")
    overrides = [f"data.path={BUNDLED_DATA / f'{dataset}.parquet'}", f"data.conditions={CONDITIONS[dataset]}",
                 f"train.epochs={epochs}", f"train.storage_path={folder}/runs", "data.holdout_fraction=0.0",
                 f"mlflow.tracking_uri=sqlite:///{folder}/mlflow.db", "mlflow.alias=null", f"train.name=bench-{dataset}"]
    if dataset == "digits":
        overrides += ["data.columns={digit: categorical}", "train.batch_size=128"]
    config = load_config(None, overrides)
    started = time.perf_counter()
    outcome = train(config)
    fit_s = time.perf_counter() - started
    client = MlflowClient(config.mlflow.tracking_uri)
    history = sorted(client.get_metric_history(outcome.run_id, "epoch_seconds"), key=lambda m: m.step)
    worker_rss = max(m.value for m in client.get_metric_history(outcome.run_id, "worker_peak_rss_mb"))
    # wall time per epoch, validation, checkpoint and report included: the spacing of the per-epoch metrics
    epoch_wall = (history[-1].timestamp - history[0].timestamp) / 1000 / max(len(history) - 1, 1)
    model, encoder = load_artifact_files(fetch_model(outcome.model_uri))
    real = real_table(dataset)
    conditions = build_plan(GenerateConfig(num_rows=SAMPLE_ROWS), encoder).rows(0, SAMPLE_ROWS)
    started = time.perf_counter()
    synthesize(model, encoder, conditions, seed=1)
    rows_per_s = SAMPLE_ROWS / (time.perf_counter() - started)
    proportional = build_plan(GenerateConfig(num_rows=real.num_rows), encoder)
    synthetic = synthesize(model, encoder, proportional.rows(0, real.num_rows), seed=0)
    column, value = RARE[dataset]
    rare_plan = build_plan(GenerateConfig(conditions=[{column: value, "count": 1000}]), encoder)
    rare = synthesize(model, encoder, rare_plan.rows(0, 1000), seed=2).column(column).to_pylist()
    return {"fit_s": fit_s, "epoch_wall_s": epoch_wall, "fixed_s": max(0.0, fit_s - len(history) * epoch_wall),
            "rows_per_s": rows_per_s,
            "rare_share": sum(v == value for v in rare) / 1000, "worker_rss_mb": worker_rss,
            **judge(flat_frame(real), flat_frame(synthetic), dataset)}


def run_tvae(dataset: str, epochs: int) -> dict:
    from ctgan import TVAE
    from ctgan.data_transformer import DataTransformer

    real = flat_frame(real_table(dataset))
    discrete = [c for c, t in sdtypes(real, dataset).items() if t == "categorical"]
    train = real.copy()
    train[discrete] = train[discrete].astype(object).fillna("<null>")
    started = time.perf_counter()
    DataTransformer().fit(train, discrete)  # TVAE's own first step, timed alone: the fixed part of its fit
    transformer_s = time.perf_counter() - started
    model = TVAE(epochs=epochs, batch_size=500 if dataset == "adult" else 128)
    started = time.perf_counter()
    model.fit(train, discrete)
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    model.sample(SAMPLE_ROWS)
    rows_per_s = SAMPLE_ROWS / (time.perf_counter() - started)
    synthetic = model.sample(len(real))
    synthetic[discrete] = synthetic[discrete].replace("<null>", np.nan)
    if dataset == "digits":
        synthetic["digit"] = synthetic["digit"].astype(real["digit"].dtype)
    column, value = RARE[dataset]
    unconditional = model.sample(10_000)  # ctgan's TVAE has no conditional sampling: the yield of asking anyway
    return {"fit_s": fit_s, "epoch_wall_s": (fit_s - transformer_s) / epochs, "fixed_s": transformer_s,
            "rows_per_s": rows_per_s, "rare_share": float((unconditional[column] == value).mean()),
            **judge(real, synthetic, dataset)}


def run_copula(dataset: str, epochs: int) -> dict:
    from sdv.metadata import Metadata
    from sdv.sampling import Condition
    from sdv.single_table import GaussianCopulaSynthesizer

    real = flat_frame(real_table(dataset))
    types = sdtypes(real, dataset)
    metadata = Metadata.load_from_dict({"tables": {"table": {"columns": {c: {"sdtype": t} for c, t in types.items()}}}})
    model = GaussianCopulaSynthesizer(metadata)
    started = time.perf_counter()
    model.fit({"table": real})  # SDV 2 takes and returns {table name: frame}
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    model.sample(SAMPLE_ROWS)
    rows_per_s = SAMPLE_ROWS / (time.perf_counter() - started)
    synthetic = model.sample(len(real))["table"]
    column, value = RARE[dataset]
    try:
        rows = model.sample_from_conditions([Condition({column: value}, num_rows=1000)])["table"]
        rare_share = float((rows[column] == value).sum() / 1000)
    except (ValueError, RuntimeError):  # "Unable to sample any rows for the given conditions"
        rare_share = 0.0
    return {"fit_s": fit_s, "rows_per_s": rows_per_s, "rare_share": rare_share,
            **judge(real, synthetic, dataset)}


SYSTEMS = {"cvae": run_cvae, "tvae": run_tvae, "copula": run_copula}
LABELS = {"cvae": "cvae (ours)", "tvae": "ctgan TVAE", "copula": "SDV GaussianCopula"}


def child(system: str, dataset: str, epochs: int) -> dict | None:
    output = subprocess.run([sys.executable, __file__, "--one", system, dataset, str(epochs)],
                            capture_output=True, text=True)
    lines = [line for line in output.stdout.splitlines() if line.startswith("{")]
    if output.returncode or not lines:
        print(f"{system} on {dataset} failed:\n{output.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1]) | {"system": system, "dataset": dataset, "epochs": epochs}


def budget_epochs(ten: dict, budget: float) -> int:
    """Epochs that fit in the budget, from a 10-epoch run's fixed cost and wall time per epoch."""
    return max(1, math.floor((budget - ten["fixed_s"]) / ten["epoch_wall_s"]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget-seconds", type=float, default=144.0)
    parser.add_argument("--datasets", nargs="+", default=["adult", "digits"])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS))
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        system, dataset, epochs = args.one
        result = SYSTEMS[system](dataset, int(epochs))
        print(json.dumps(result | {"peak_rss_mb": peak_rss_mb()}))
        return
    rows = []
    for dataset in args.datasets:
        for system in args.systems:
            ten = child(system, dataset, 10)
            if ten is None:
                continue
            rows.append(ten | {"budget": "10 epochs"})
            if system != "copula":  # one closed-form fit: no epochs to spend
                epochs = budget_epochs(ten, args.budget_seconds)
                timed = child(system, dataset, epochs)
                if timed:
                    rows.append(timed | {"budget": f"{args.budget_seconds:.0f} s"})
    print(f"\n{os.cpu_count()} CPUs; SDMetrics QualityReport on as many synthetic rows as the real table has")
    header = (f"{'dataset':<8}{'budget':<11}{'system':<20}{'epochs':>7}{'fit s':>8}{'quality':>9}{'shapes':>8}"
              f"{'pairs':>7}{'ours':>7}{'gen rows/s':>12}{'peak RSS MB':>13}{'rare cond.':>11}")
    print(header)
    print("-" * len(header))
    for row in rows:
        rss = f"{row['peak_rss_mb']:.0f}" + (f"+{row['worker_rss_mb']:.0f}w" if "worker_rss_mb" in row else "")
        epochs = "-" if row["system"] == "copula" else str(row["epochs"])
        print(f"{row['dataset']:<8}{row['budget']:<11}{LABELS[row['system']]:<20}{epochs:>7}{row['fit_s']:>8.1f}"
              f"{row['sdmetrics_quality']:>9.4f}{row['sdmetrics_shapes']:>8.3f}{row['sdmetrics_pairs']:>7.3f}"
              f"{row['our_quality']:>7.3f}{row['rows_per_s']:>12,.0f}{rss:>13}{row['rare_share']:>11.1%}")
    print("\nquality/shapes/pairs: SDMetrics QualityReport; ours: pipeline.metrics on the same rows. fit s: the whole "
          "fit call (for cvae: `cvae train` with Ray start, 2 DDP workers, checkpoints, MLflow). peak RSS: the process "
          "(+w: each Ray Train worker). rare cond.: share of returned rows that satisfy race=Other (adult) or "
          "digit=8 (digits) when asked for them.")


if __name__ == "__main__":
    main()
