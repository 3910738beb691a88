"""Privacy benchmark: what differential privacy costs, ours beside TabularARGN's, on held-out rows, in one run.

    python bench/privacy_bench.py [--tables adult pizzaplace seattle-weather] [--epsilons 1 4 10] [--epochs 10]

Per table one seeded 80/20 split; every system trains on the same 80% and is judged against it and the 20%
none of them saw. Systems: our CVAE without privacy and at each epsilon (`cvae train` in-process: Ray Train,
2 DDP workers, MLflow; `train.privacy.epsilon`, everything else default), and MOSTLY AI's TabularARGN
(mostlyai-engine) without privacy and with its own DP-SGD at the same epsilon and delta, its value protection
given the same share of the budget as our statistics (20%), and the wall time our run at that epsilon took
(`--argn-full-budget`: as long as it needs to spend its epsilon, up to 100 epochs).
Judges: mostlyai-qa (accuracy over columns, pairs and triples against the training rows, `*_max` the holdout's
own; DCR share: synthetic rows closer to a training than to a holdout row) and SDMetrics' QualityReport against
the holdout. Throughput: our training rows per second (the median epoch), with and without DP.
Needs the `bench` extra plus mostlyai-engine and mostlyai-qa, with the CPU torch the project uses.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
warnings.filterwarnings("ignore")

from in_process import train_and_sample  # noqa: E402 (bench/)
from judging import CONDITIONS, MAX_SYNTHETIC_ROWS, judge, judge_frame, split  # noqa: E402 (bench/)

STATISTICS_SHARE = 0.2


def run_cvae(name: str, training_file: str, folder: str, epochs: int, epsilon: float | None, rows: int) -> dict:
    from pipeline.artifact import privacy_guarantee

    tag = "plain" if epsilon is None else f"eps{epsilon:g}"
    overrides = [f"data.path={training_file}", f"data.conditions={CONDITIONS[name]}", "data.holdout_fraction=0.0",
                 f"train.epochs={epochs}", f"train.storage_path={folder}/runs", f"train.name={name}-{tag}",
                 f"mlflow.tracking_uri=sqlite:///{folder}/mlflow.db", "mlflow.alias=null",
                 f"mlflow.model_name={name}-{tag}"]
    if epsilon is not None:
        overrides += [f"train.privacy.epsilon={epsilon}", f"train.privacy.statistics_share={STATISTICS_SHARE}"]
    trained = train_and_sample(overrides, rows)
    guarantee = privacy_guarantee(trained.files) or {}
    return {"fit_s": trained.fit_s, "train_rows_per_s": statistics.median(trained.metric("rows_per_s")),
            "generate_rows_per_s": rows / trained.generate_s, "epochs_run": len(trained.metric("epoch_seconds")),
            "epsilon_spent": guarantee.get("epsilon"), "delta": guarantee.get("delta"),
            "synthetic": judge_frame(trained.synthetic)}


def run_argn(training: pd.DataFrame, folder: str, minutes: float | None, epsilon: float | None, delta: float | None,
             rows: int) -> dict:
    from mostlyai.engine import TabularARGN
    from mostlyai.engine.domain import DifferentialPrivacyConfig

    privacy = None if epsilon is None else DifferentialPrivacyConfig(
        max_epsilon=epsilon, delta=delta, value_protection_epsilon=STATISTICS_SHARE * epsilon)
    model = TabularARGN(max_training_time=minutes, max_epochs=100, differential_privacy=privacy, device="cpu",
                        workspace_dir=f"{folder}/argn-{epsilon}", random_state=0, verbose=0)
    started = time.perf_counter()
    model.fit(training)
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    synthetic = model.sample(n_samples=rows)
    spent = None
    progress = Path(folder) / f"argn-{epsilon}" / "ModelStore" / "model-data" / "progress-messages.csv"
    if progress.exists() and epsilon is not None:
        messages = pd.read_csv(progress)
        if "dp_eps" in messages:
            spent = float(messages["dp_eps"].dropna().iloc[-1])
    return {"fit_s": fit_s, "generate_rows_per_s": rows / (time.perf_counter() - started), "epsilon_spent": spent,
            "synthetic": synthetic}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", default=["adult", "pizzaplace", "seattle-weather"])
    parser.add_argument("--epsilons", nargs="+", type=float, default=[1.0, 4.0, 10.0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--no-argn", action="store_true")
    parser.add_argument("--argn-full-budget", action="store_true",
                        help="private TabularARGN runs until its budget is spent (100 epochs at most), not equal time")
    parser.add_argument("--out", default="bench/results/privacy.json")
    args = parser.parse_args()
    from pipeline.config import BUNDLED_DATA

    results = []
    for name in args.tables:
        table = pq.read_table(BUNDLED_DATA / f"{name}.parquet")
        training, holdout = split(table)
        rows = min(training.num_rows, MAX_SYNTHETIC_ROWS)
        folder = tempfile.mkdtemp(prefix=f"privacy-bench-{name}-")
        training_file = f"{folder}/training.parquet"
        pq.write_table(training, training_file)
        trn, hol = judge_frame(training), judge_frame(holdout)
        for epsilon in [None, *args.epsilons]:
            ours = run_cvae(name, training_file, folder, args.epochs, epsilon, rows)
            entries = [("cvae", ours)]
            if not args.no_argn:
                delta = ours["delta"] if epsilon is not None else None
                minutes = None if args.argn_full_budget and epsilon is not None else ours["fit_s"] / 60
                entries.append(("TabularARGN", run_argn(trn, folder, minutes, epsilon, delta, rows)))
            for system, outcome in entries:
                scores = judge(outcome.pop("synthetic"), trn, hol, folder)
                result = {"table": name, "rows": table.num_rows, "system": system, "epsilon": epsilon, **outcome,
                          **scores}
                results.append(result)
                print(json.dumps(result), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print_table(results)


def print_table(results: list[dict]) -> None:
    print("\n| table | system | epsilon (spent) | fit s | train rows/s | qa accuracy (holdout's own) | bivariate "
          "| trivariate | DCR share | SDMetrics quality |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        target = "none" if r["epsilon"] is None else f"{r['epsilon']:g}"
        spent = f" ({r['epsilon_spent']:.2f})" if r.get("epsilon_spent") is not None else ""
        speed = f"{r['train_rows_per_s']:,.0f}" if "train_rows_per_s" in r else ""
        print(f"| {r['table']} | {r['system']} | {target}{spent} | {r['fit_s']:.0f} | {speed} | "
              f"{r['qa_accuracy']:.3f} ({r['qa_holdout_own']:.3f}) | {r['qa_bivariate']:.3f} | "
              f"{r['qa_trivariate']:.3f} | {r['dcr_share']:.3f} | {r['sdmetrics_quality']:.3f} |")


if __name__ == "__main__":
    sys.exit(main())
