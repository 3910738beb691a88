"""Quality benchmark: our CVAE beside MOSTLY AI's TabularARGN, ctgan's TVAE and SDV's GaussianCopula, judged on
held-out rows at equal wall time, in one run.

    python bench/quality_bench.py [--tables adult digits ...] [--systems cvae argn tvae copula] [--seeds 0]
                                  [--set model.KEY=VALUE ...] [--out bench/results/quality.jsonl]

Per table one seeded 80/20 split (bench/judging.py); every system trains on the same 80% and generates
min(training rows, 20,000) rows. Ours runs the real pipeline, `cvae train` on the training split written to
Parquet (Ray start, Ray Train with 2 DDP workers, MLflow, registration: all inside its fit seconds), with the
defaults, `data.holdout_fraction=0` (the benchmark holds rows out itself) and the table's natural condition
column; generation is `pipeline.sampling.synthesize` on the registered model with proportional conditions.
Equal wall time: TabularARGN (`max_training_time`, its other settings as shipped) and TVAE (epochs until the time
runs out) get the seconds our fit took for the same seed; GaussianCopula is one closed-form fit.
Judges: mostlyai-qa (accuracy over every column, pair and triple against the training rows; the holdout's own
accuracy beside it; DCR share: the report's, and the mean of six seeded draws beside what real unseen rows score,
judging.seeded_dcr_shares) and SDMetrics' QualityReport against the holdout (identifiers as SDV's metadata
detection finds them, left out of its score; what as many real training rows score beside it); and the evaluator's
joint judges: detection (a classifier telling the rows from the holdout) and train on synthetic, test on the
holdout for the condition column, each beside the real training rows' own. Each system runs
in its own process, so its peak RSS is its own (ours adds each Ray Train worker's). `--set` passes overrides to
`cvae train` (an ablation); results are appended to --out as JSON lines.
Needs the `bench` extra (ctgan, sdv, sdmetrics, mostlyai-engine, mostlyai-qa) with the CPU torch the project uses.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
warnings.filterwarnings("ignore")

from in_process import train_and_sample  # noqa: E402 (bench/)
from judging import CONDITIONS, MAX_SYNTHETIC_ROWS, judge, judge_frame, sdtypes, split  # noqa: E402 (bench/)

TABLES = ["adult", "digits", "pizzaplace", "airports", "nuclides", "penguins-raw", "seattle-weather", "sf-temps"]
LABELS = {"cvae": "cvae (ours)", "argn": "TabularARGN", "tvae": "ctgan TVAE", "copula": "SDV GaussianCopula"}


def peak_rss_mb() -> float:
    """This process's own peak resident memory: VmHWM, which starts afresh at exec. (getrusage's ru_maxrss does
    not: Linux keeps it across exec, so a child would report its parent's peak at fork when that was higher.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_cvae(table: str, folder: str, rows: int, budget_s: float, seed: int, overrides: list[str]) -> dict:
    name = table.replace("/", "-")  # strings/sp500 -> strings-sp500: a job and model name
    trained = train_and_sample([
        f"data.path={folder}/training.parquet", f"data.conditions={CONDITIONS[table]}", "data.holdout_fraction=0.0",
        f"train.seed={seed}", f"train.storage_path={folder}/runs-{seed}", f"train.name={name}",
        f"mlflow.tracking_uri=sqlite:///{folder}/mlflow-{seed}.db", "mlflow.alias=null",
        f"mlflow.model_name={name}", *overrides], rows, seed, restart=True)
    return {"fit_s": trained.fit_s, "generate_s": trained.generate_s, "synthetic": judge_frame(trained.synthetic),
            "epochs_run": len(trained.metric("epoch_seconds")), "worker_rss_mb": max(trained.metric("worker_peak_rss_mb"))}


def run_argn(training: pd.DataFrame, folder: str, rows: int, budget_s: float, seed: int) -> dict:
    from mostlyai.engine import TabularARGN

    model = TabularARGN(max_training_time=budget_s / 60, device="cpu", workspace_dir=f"{folder}/argn-{seed}",
                        random_state=seed, verbose=0)
    started = time.perf_counter()
    model.fit(training)
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    synthetic = model.sample(n_samples=rows)
    return {"fit_s": fit_s, "generate_s": time.perf_counter() - started, "synthetic": synthetic}


def tvae_frame(training: pd.DataFrame) -> tuple[pd.DataFrame, list[str], dict[str, str]]:
    """What TVAE can take: ids left out (they get fresh values, as ours do), dates as numbers, categories as
    text with nulls as a value, a numeric column's nulls as a separate category column."""
    types = sdtypes(training)
    frame = {}
    for name, kind in types.items():
        values = training[name]
        if kind == "id":
            continue
        if kind == "datetime":
            frame[name] = values.astype("int64").where(values.notna()).astype(float)
        elif kind == "categorical":
            frame[name] = values.astype(object).where(values.notna(), "<null>").astype(str)
            continue
        else:
            frame[name] = values.astype(float)
        if frame[name].isna().any():
            frame[f"{name}.null"] = frame[name].isna().map({True: "y", False: "n"})
            frame[name] = frame[name].fillna(frame[name].median() if frame[name].notna().any() else 0.0)
    frame = pd.DataFrame(frame)
    discrete = [c for c in frame.columns if frame[c].dtype == object]
    return frame, discrete, types


def tvae_back(sampled: pd.DataFrame, training: pd.DataFrame, types: dict[str, str]) -> pd.DataFrame:
    out = {}
    for name, kind in types.items():
        if kind == "id":
            out[name] = [f"syn-{i}" for i in range(len(sampled))]
            continue
        values = sampled[name]
        if f"{name}.null" in sampled:
            values = values.where(sampled[f"{name}.null"] != "y")
        if kind == "datetime":
            values = pd.to_datetime(values.round(), unit="ns").astype(training[name].dtype)
        elif kind == "categorical":
            values = values.where(values != "<null>")
            known = {str(v): v for v in training[name].dropna().unique()}
            values = values.map(lambda v: known.get(v, v) if isinstance(v, str) else v)
        out[name] = values
    return pd.DataFrame(out)


def run_tvae(training: pd.DataFrame, folder: str, rows: int, budget_s: float, seed: int) -> dict:
    """ctgan's TVAE with as many epochs as fit in the budget: its epoch loop runs over a deadline."""
    import torch
    from ctgan.synthesizers import tvae

    torch.manual_seed(seed)
    np.random.seed(seed)
    deadline = time.perf_counter() + budget_s
    epochs_run = []

    def until_deadline(epochs, disable=True):
        for epoch in epochs:
            if epoch and time.perf_counter() > deadline:
                return
            epochs_run.append(epoch)
            yield epoch

    tvae.tqdm = until_deadline  # the loop's iterator: `for i in tqdm(range(self.epochs))`
    frame, discrete, types = tvae_frame(training)
    model = tvae.TVAE(epochs=1_000_000)
    started = time.perf_counter()
    model.fit(frame, discrete)
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    sampled = model.sample(rows)
    return {"fit_s": fit_s, "generate_s": time.perf_counter() - started, "epochs_run": len(epochs_run),
            "synthetic": tvae_back(sampled, training, types)}


def run_copula(training: pd.DataFrame, folder: str, rows: int, budget_s: float, seed: int) -> dict:
    from sdv.metadata import Metadata
    from sdv.single_table import GaussianCopulaSynthesizer

    np.random.seed(seed)
    metadata = Metadata.detect_from_dataframes({"table": training})
    model = GaussianCopulaSynthesizer(metadata)
    started = time.perf_counter()
    model.fit({"table": training})  # SDV 2 takes a dict of one table
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    synthetic = model.sample(rows)
    if isinstance(synthetic, dict):  # SDV 2 samples a dict of one table too
        synthetic = synthetic["table"]
    return {"fit_s": fit_s, "generate_s": time.perf_counter() - started, "synthetic": synthetic}


def run_one(system: str, table: str, folder: str, budget_s: float, seed: int, overrides: list[str]) -> dict:
    """In a child process: fit and sample one system; the synthetic rows go to a Parquet file in `folder`."""
    training = pq.read_table(f"{folder}/training.parquet")
    rows = min(training.num_rows, MAX_SYNTHETIC_ROWS)
    if system == "cvae":
        outcome = run_cvae(table, folder, rows, budget_s, seed, overrides)
    else:
        outcome = {"argn": run_argn, "tvae": run_tvae, "copula": run_copula}[system](
            judge_frame(training), folder, rows, budget_s, seed)
    path = f"{folder}/{system}-{seed}.parquet"
    outcome.pop("synthetic").to_parquet(path)
    generate_s = outcome.pop("generate_s")
    return outcome | {"synthetic_path": path, "generate_rows_per_s": rows / generate_s, "peak_rss_mb": peak_rss_mb()}


def child(system: str, table: str, folder: str, budget_s: float, seed: int, overrides: list[str]) -> dict | None:
    command = [sys.executable, __file__, "--one", system, table, folder, str(budget_s), str(seed)]
    output = subprocess.run(command + [arg for value in overrides for arg in ("--set", value)],
                            capture_output=True, text=True)
    lines = [line for line in output.stdout.splitlines() if line.startswith("{")]
    if output.returncode or not lines:
        print(f"{system} on {table} failed:\n{output.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", default=TABLES)
    parser.add_argument("--systems", nargs="+", default=list(LABELS), choices=list(LABELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--budget-seconds", type=float, help="peers' wall time when ours is not run")
    parser.add_argument("--set", action="append", default=[], help="an override for `cvae train` (ablations)")
    parser.add_argument("--out", default="bench/results/quality.jsonl")
    parser.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        system, table, folder, budget_s, seed = args.one
        print(json.dumps(run_one(system, table, folder, float(budget_s), int(seed), args.set)))
        return
    from pipeline.config import BUNDLED_DATA

    results = []
    for table in args.tables:
        training, holdout = split(pq.read_table(BUNDLED_DATA / f"{table}.parquet"))
        folder = tempfile.mkdtemp(prefix=f"quality-bench-{table.replace('/', '-')}-")
        pq.write_table(training, f"{folder}/training.parquet")
        trn, hol = judge_frame(training), judge_frame(holdout)
        for seed in args.seeds:
            budget_s = args.budget_seconds
            for system in args.systems:
                outcome = child(system, table, folder, budget_s or 60.0, seed, args.set if system == "cvae" else [])
                if outcome is None:
                    continue
                if system == "cvae":
                    budget_s = outcome["fit_s"]
                scores = judge(pd.read_parquet(outcome.pop("synthetic_path")), trn, hol, folder,
                               CONDITIONS[table][0])
                result = {"table": table, "rows": training.num_rows + holdout.num_rows, "system": system,
                          "seed": seed, "overrides": args.set if system == "cvae" else [],
                          "budget_s": budget_s, **outcome, **scores,
                          "date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count()}
                results.append(result)
                print(json.dumps(result), flush=True)
                with Path(args.out).open("a") as handle:
                    handle.write(json.dumps(result) + "\n")
    print_table(results)


def print_table(results: list[dict]) -> None:
    print(f"\n{os.cpu_count()} CPUs; judged on the 20% holdout no system saw")
    print("| table (rows) | system | seed | fit s | generate rows/s | peak RSS MB | mostlyai-qa accuracy (holdout's own) "
          "[; identifier columns left out] | bivariate | trivariate | DCR share (mean of 6 draws) | DCR share against half the holdout (real unseen rows') "
          "| SDMetrics quality (training rows') | detection (training rows') | train on synthetic (on real) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        rss = f"{r['peak_rss_mb']:.0f}" + (f" + {r['worker_rss_mb']:.0f}/worker" if "worker_rss_mb" in r else "")
        print(f"| {r['table']} ({r['rows']:,}) | {LABELS[r['system']]} | {r['seed']} | {r['fit_s']:.0f} | "
              f"{r['generate_rows_per_s']:,.0f} | {rss} | {r['qa_accuracy']:.3f} ({r['qa_holdout_own']:.3f}){_without_ids(r)} | "
              f"{r['qa_bivariate']:.3f} | {_maybe(r['qa_trivariate'])} | {r['dcr_share']:.3f} ({r['dcr_share_mean']:.3f}) | "
              f"{r['dcr_share_half']:.3f} ({r['dcr_share_real_rows']:.3f}) | {r['sdmetrics_quality']:.3f} "
              f"({r['sdmetrics_training_rows']:.3f}) | {_maybe(r.get('detection'))} "
              f"({_maybe(r.get('detection_training_rows'))}) | {r.get('tstr_score', '')} {_maybe(r.get('tstr'))} "
              f"({_maybe(r.get('trtr'))}) |")


def _without_ids(r: dict) -> str:
    if "qa_accuracy_without_ids" not in r:
        return ""
    return f"; without ids {r['qa_accuracy_without_ids']:.3f} ({r['qa_holdout_own_without_ids']:.3f})"


def _maybe(score: float | None) -> str:
    return "-" if score is None else f"{score:.3f}"  # a table of two columns has no triples


if __name__ == "__main__":
    sys.exit(main())
