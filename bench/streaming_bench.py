"""Bigger than memory: `cvae train` on tables built from Adult (2M and 20M rows by default; ~3.3 GB of Parquet at
20M rows) with Ray's object store capped (2 GB by default) so the encoded table (8.8 GB at 20M rows) cannot be
kept there: the training split streams from the files every epoch.

    python bench/streaming_bench.py [--rows 2000000 20000000] [--epochs 2] [--object-store-gb 2]

Per size it prints, in one run: wall time and where it went, epoch rows/s, how many times the table was read
(Ray Data executions that read the Parquet files: the encoder fit, the holdout once, then one per epoch), the
peak RSS of the driver, of each training worker, of the Ray Train controller and of the largest other Ray
process (Ray Data's read/encode tasks), and what Ray spilled. "Flat" means the same peaks at 2M and 20M rows.
The tables are written once under --folder and reused. Nothing here is a test.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
FILE_ROWS = 1_000_000


def build_table(rows: int, folder: Path) -> tuple[Path, int]:
    """Adult tiled to `rows` rows in files of a million, each file a fresh shuffle with fnlwgt jittered, written
    without compression or dictionaries, as raw exports often are. Returns the folder and its size in bytes."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline.config import BUNDLED_DATA

    target = folder / f"adult-{rows}"
    done = target / "_built"
    if not done.exists():
        target.mkdir(parents=True, exist_ok=True)
        adult = pq.read_table(BUNDLED_DATA / "adult.parquet")
        for index, start in enumerate(range(0, rows, FILE_ROWS)):
            count = min(FILE_ROWS, rows - start)
            rng = np.random.default_rng(index)
            table = adult.take(rng.integers(0, adult.num_rows, count))
            jitter = pa.array(rng.integers(-500, 500, count), table.schema.field("fnlwgt").type)
            table = table.set_column(table.schema.get_field_index("fnlwgt"), "fnlwgt",
                                     pc.max_element_wise(pc.add(table.column("fnlwgt"), jitter), 1))
            pq.write_table(table, target / f"part-{index:05d}.parquet", compression="none", use_dictionary=False,
                           row_group_size=131_072)
        done.touch()
    size = sum(path.stat().st_size for path in target.glob("*.parquet"))
    return target, size


def one(table: str, epochs: int, batch_size: int, object_store_gb: float) -> dict:
    """In the child: start Ray with a small object store, run `cvae train`, report what it measured."""
    import ray
    from mlflow.tracking import MlflowClient

    from pipeline.config import load_config
    from pipeline.train.driver import train

    ray.init(object_store_memory=int(object_store_gb * 1024 ** 3), include_dashboard=False, log_to_driver=False)
    session = ray._private.worker.global_worker.node.get_session_dir_path()
    folder = tempfile.mkdtemp(prefix="cvae-stream-")
    config = load_config(None, [f"data.path={table}", "data.conditions=[income]", f"train.epochs={epochs}",
                                f"train.batch_size={batch_size}", f"train.storage_path={folder}/runs",
                                f"mlflow.tracking_uri=sqlite:///{folder}/mlflow.db", "mlflow.alias=null"])
    started = time.perf_counter()
    outcome = train(config)
    wall = time.perf_counter() - started
    summary = ray._private.internal_api.memory_summary(stats_only=True)
    spilled = re.search(r"Spilled (\d+) MiB", summary)
    client = MlflowClient(config.mlflow.tracking_uri)
    history = {key: [m.value for m in sorted(client.get_metric_history(outcome.run_id, key), key=lambda m: m.step)]
               for key in ("rows_per_s", "epoch_seconds", "worker_peak_rss_mb", "overhead_seconds",
                           "previous_report_seconds")}
    return {"wall_s": wall, "stages": outcome.seconds, "history": history, "session": session,
            "spilled_mib": int(spilled.group(1)) if spilled else 0}


def table_reads(session: str) -> dict[str, int]:
    """Ray Data executions that read the Parquet files, by dataset kind (Ray Data logs one file per execution)."""
    reads: dict[str, int] = {}
    for path in glob.glob(f"{session}/logs/ray-data/ray-data-*.log"):
        text = Path(path).read_text(errors="replace")
        if re.search(r"Operator \S*Read(Files|Parquet)\S* completed", text):
            kind = re.sub(r"_[0-9A-Za-z]{20,}.*", "", Path(path).name.removeprefix("ray-data-"))
            reads[kind] = reads.get(kind, 0) + 1
    return reads


class PeakWatch:
    """Samples every process from /proc: the highest private resident memory (RssAnon: heap, not the object
    store's shared pages a Ray process maps) seen per role."""

    def __init__(self, driver_pid: int):
        self.driver_pid, self.peaks, self.stop = driver_pid, {}, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            for status in glob.glob("/proc/[0-9]*/status"):
                pid = int(status.split("/")[2])
                try:
                    title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    private = re.search(r"RssAnon:\s+(\d+) kB", Path(status).read_text())
                except OSError:
                    continue
                if private is None or pid == os.getpid():
                    continue
                role = self._role(pid, title)
                if role:
                    key = (role, pid)
                    self.peaks[key] = max(self.peaks.get(key, 0.0), int(private.group(1)) / 1024)

    def _role(self, pid: int, title: str) -> str | None:
        if pid == self.driver_pid:
            return "driver"
        for marker, role in (("RayTrainWorker", "training worker"), ("TrainController", "train controller"),
                             ("raylet", "raylet"), ("gcs_server", "gcs")):
            if marker in title:
                return role
        return "other Ray worker" if title.startswith("ray::") or "default_worker.py" in title else None

    def finish(self) -> dict[str, float]:
        self.stop.set()
        self.thread.join()
        by_role: dict[str, float] = {}
        for (role, _), peak in self.peaks.items():
            by_role[role] = max(by_role.get(role, 0.0), peak)
        return by_role


def run_size(table: Path, args: argparse.Namespace) -> dict:
    child = subprocess.Popen([sys.executable, __file__, "--one", str(table), "--epochs", str(args.epochs),
                              "--batch-size", str(args.batch_size), "--object-store-gb", str(args.object_store_gb)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watch = PeakWatch(child.pid)
    out, err = child.communicate()
    peaks = watch.finish()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if child.returncode or not lines:
        raise SystemExit(f"training on {table} failed:\n{err[-3000:]}")
    result = json.loads(lines[-1])
    result["peaks_mb"] = peaks
    result["reads"] = table_reads(result["session"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[2_000_000, 20_000_000])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--object-store-gb", type=float, default=2.0)
    parser.add_argument("--folder", default="/tmp/cvae-streaming")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.epochs, args.batch_size, args.object_store_gb)))
        return
    results = []
    for rows in args.rows:
        started = time.perf_counter()
        table, size = build_table(rows, Path(args.folder))
        print(f"{rows:,} rows: {size / 1e9:.2f} GB of Parquet in {table} ({time.perf_counter() - started:.0f}s)",
              flush=True)
        result = run_size(table, args)
        results.append((rows, size, result))
        print(json.dumps({"rows": rows, **{k: v for k, v in result.items() if k != "session"}}), flush=True)

    encoded_gb = lambda rows: rows * 110 * 4 / 1e9  # noqa: E731 - Adult encodes to 110 float32 per row
    print(f"\n`cvae train` streaming, {args.epochs} epochs, batch {args.batch_size}, object store "
          f"{args.object_store_gb:g} GiB, {os.cpu_count()} CPUs")
    header = (f"{'rows':>12}{'Parquet GB':>11}{'encoded GB':>11}{'wall s':>8}{'epoch rows/s':>14}{'table reads':>13}"
              f"{'driver MB':>11}{'worker MB':>11}{'controller MB':>15}{'other Ray MB':>14}{'spilled MiB':>13}")
    print(header)
    print("-" * len(header))
    for rows, size, result in results:
        peaks = result["peaks_mb"]
        rates = result["history"]["rows_per_s"]
        reads = result["reads"]
        shown = "+".join(f"{count}" for _, count in sorted(reads.items()))
        print(f"{rows:>12,}{size / 1e9:>11.2f}{encoded_gb(rows):>11.1f}{result['wall_s']:>8.0f}"
              f"{max(rates):>14,.0f}{shown:>13}{peaks.get('driver', 0):>11.0f}"
              f"{peaks.get('training worker', 0):>11.0f}{peaks.get('train controller', 0):>15.0f}"
              f"{peaks.get('other Ray worker', 0):>14.0f}{result['spilled_mib']:>13,}")
    for rows, _, result in results:
        print(f"  {rows:,} rows: reads by dataset {result['reads']}; stages "
              + ", ".join(f"{stage} {seconds:.0f}s" for stage, seconds in result["stages"].items())
              + f"; epoch seconds {[round(s) for s in result['history']['epoch_seconds']]}")
    print("\ntable reads: Ray Data executions that read the Parquet files (encoder fit, holdout, one per epoch). "
          "Peaks: private resident memory (RssAnon) from /proc, sampled every 0.5 s; the object store's shared pages "
          "are not counted (they are the object store, capped by --object-store-gb).")


if __name__ == "__main__":
    main()
