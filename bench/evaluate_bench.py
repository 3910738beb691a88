"""Evaluation benchmark: seconds, synthetic rows scanned per second and driver peak RSS of `cvae evaluate`
as the synthetic table grows, with the scoring sample fixed (evaluate.sample_rows).

    python bench/evaluate_bench.py [--rows 100000 1000000 5000000]

Trains a small model on Adult (1 epoch), generates each table with `cvae generate`,
then evaluates each in its own process so peak RSS is its own. Prints a table;
nothing here is a test.
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

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def overrides(folder: str, rows: int) -> list[str]:
    return [f"mlflow.tracking_uri=sqlite:///{folder}/mlflow.db", f"train.storage_path={folder}/runs", "train.epochs=1",
            "model.hidden=[64, 64]", "mlflow.model_name=evaluate-bench", f"generate.num_rows={rows}",
            "generate.rows_per_part=500000", "generate.num_workers=2", f"generate.output={folder}/synthetic-{rows}"]


def prepare(folder: str, sizes: list[int]) -> None:
    from pipeline.config import load_config
    from pipeline.generate.driver import generate
    from pipeline.train.driver import train

    outcome = train(load_config(None, overrides(folder, sizes[0])))
    for rows in sizes:
        config = load_config(None, overrides(folder, rows) + [f"generate.model_uri={outcome.model_uri}"])
        generate(config, overwrite=False)


def evaluate_once(folder: str, rows: int) -> dict:
    from pipeline.config import load_config
    from pipeline.evaluate.driver import evaluate

    config = load_config(None, overrides(folder, rows))
    started = time.perf_counter()
    outcome = evaluate(config)
    seconds = time.perf_counter() - started
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "quality": outcome.quality,
            "sampled": outcome.report["rows"]["sampled_synthetic"],
            "driver_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child(*args: str) -> str:
    output = subprocess.run([sys.executable, __file__, "--one", *args], capture_output=True, text=True)
    if output.returncode:
        raise SystemExit(f"{args} failed:\n{output.stderr[-3000:]}")
    return output.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 5_000_000])
    parser.add_argument("--one", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        if args.one[0] == "prepare":
            prepare(args.one[1], [int(r) for r in args.one[2:]])
        else:
            print(json.dumps(evaluate_once(args.one[1], int(args.one[2]))))
        return
    folder = tempfile.mkdtemp(prefix="evaluate-bench-")
    child("prepare", folder, *map(str, args.rows))
    results = [json.loads([line for line in child("evaluate", folder, str(rows)).splitlines()
                           if line.startswith("{")][-1]) for rows in args.rows]
    print(f"\ncvae evaluate on Adult (48,842 real rows), {os.cpu_count()} CPUs, evaluate.sample_rows=50000")
    header = f"{'synthetic rows':>15}{'sampled':>9}{'seconds':>9}{'rows/s':>12}{'driver RSS MB':>15}{'quality':>9}"
    print(header)
    print("-" * len(header))
    for row in results:
        print(f"{row['rows']:>15,}{row['sampled']:>9,}{row['seconds']:>9.1f}{row['rows_per_s']:>12,.0f}"
              f"{row['driver_rss_mb']:>15.0f}{row['quality']:>9.4f}")
    print("\nseconds: the whole evaluate call (Ray start, both streaming passes, scoring, plots, MLflow logging).")


if __name__ == "__main__":
    main()
