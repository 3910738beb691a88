"""Generation benchmark: end-to-end rows/s of `generate()` (model load to `_SUCCESS`) to local files and to an
S3 endpoint, beside the machine's limit measured in the same run (the decoder's forward pass plus pyarrow
writing the same rows), and ctgan TVAE's sample rate where the `bench` extra is installed.

    python bench/generate_bench.py [--rows 10000 1000000 10000000] [--workers auto] [--targets local s3]

A 10,000-row job runs in the driver (`generate.in_process_rows`): its time is the fixed cost of a small job.
Starts its own S3 endpoint (moto server, the `test` extra) on 127.0.0.1 and a local Ray cluster.
Prints a table; nothing here is a test.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def start_s3() -> tuple[subprocess.Popen, dict]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "bench", "secret": "bench"}
    import s3fs

    for _ in range(100):
        try:
            s3fs.S3FileSystem(**options).mkdir("bench")
            return server, options
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)
    raise SystemExit("moto server did not start")


def machine_limit(outcome_uri: str, tracking_uri: str, rows: int, precision: str) -> dict:
    """The decoder's forward pass alone, and pyarrow writing a generated table alone, on the same model."""
    import pyarrow as pa
    import torch

    from pipeline.config import GenerateConfig
    from pipeline.generate.part_writer import parquet_bytes
    from pipeline.generate.plan import build_plan
    from pipeline.artifact import load_artifact_files
    from pipeline.registry import fetch_model
    from pipeline.tracking import client_for
    from pipeline.model.sampling import SAMPLE_BATCH, synthesize

    client_for(tracking_uri)
    model, encoder = load_artifact_files(fetch_model(outcome_uri))
    conditions = build_plan(GenerateConfig(num_rows=rows), encoder).rows(0, rows)
    c = torch.from_numpy(encoder.encode_conditions(conditions))
    z = torch.randn(rows, model.config.latent_dim)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        started = time.perf_counter()
        for start in range(0, rows, SAMPLE_BATCH):
            model.decoder(torch.cat([z[start:start + SAMPLE_BATCH], c[start:start + SAMPLE_BATCH]], dim=1))
        decode = rows / (time.perf_counter() - started)
    started = time.perf_counter()
    table = synthesize(model, encoder, conditions, seed=0, precision=precision)
    sample = rows / (time.perf_counter() - started)
    started = time.perf_counter()
    parquet_bytes(table)
    write = rows / (time.perf_counter() - started)
    assert isinstance(table, pa.Table)
    return {"decode": decode, "sample": sample, "write": write, "limit": 1 / (1 / decode + 1 / write)}


def tvae_rate(rows: int) -> float | None:
    try:
        from ctgan import TVAE
    except ImportError:  # the bench extra is not installed
        return None
    from in_process import tvae_adult_frame  # bench/

    frame, discrete = tvae_adult_frame()
    model = TVAE(epochs=1)
    model.fit(frame, discrete)
    started = time.perf_counter()
    model.sample(rows)
    return rows / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 1_000_000, 10_000_000])
    parser.add_argument("--workers", default="auto", help="generate.num_workers")
    parser.add_argument("--rows-per-part", type=int, default=100_000, help="generate.rows_per_part (its default)")
    parser.add_argument("--targets", nargs="+", default=["local", "s3"], choices=["local", "s3"])
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256], help="model.hidden; TVAE's is 128 128")
    args = parser.parse_args()

    from pipeline.config import load_config
    from pipeline.generate.driver import generate
    from pipeline.train.driver import train

    folder = Path(tempfile.mkdtemp(prefix="cvae-genbench-"))
    tracking = f"sqlite:///{folder}/mlflow.db"
    base = [f"mlflow.tracking_uri={tracking}", f"train.storage_path={folder}/runs", "train.epochs=2",
            f"model.hidden={args.hidden}",
            "mlflow.model_name=bench", f"generate.num_workers={args.workers}",
            f"generate.rows_per_part={args.rows_per_part}", f"generate.precision={args.precision}"]
    trained = train(load_config(None, base))
    server, s3 = start_s3()
    rows_table = []
    try:
        for rows in args.rows:
            for target in args.targets:
                output = f"{folder}/out-{rows}" if target == "local" else f"s3://bench/out-{rows}"
                options = s3 if target == "s3" else {}
                overrides = base + [f"generate.output={output}", f"generate.num_rows={rows}",
                                    f"generate.model_uri={trained.model_uri}",
                                    "generate.storage_options={" + ", ".join(f"{k}: '{v}'" for k, v in options.items()) + "}"]
                started = time.perf_counter()
                outcome = generate(load_config(None, overrides))
                seconds = time.perf_counter() - started
                rows_table.append((rows, target, seconds, rows / seconds, outcome.actor_peak_rss_mb))
                print(rows_table[-1], flush=True)
        limit = machine_limit(trained.model_uri, tracking, 1_000_000, args.precision)
        tvae = tvae_rate(100_000)
    finally:
        server.terminate()

    print(f"\nGeneration on Adult's model (hidden {args.hidden}, latent 32, {args.precision}), workers {args.workers}, "
          f"{args.rows_per_part:,} rows per part, {len(os.sched_getaffinity(0))} CPUs")
    print(f"{'rows':>12} {'target':>7} {'seconds':>9} {'rows/s':>11} {'x limit':>8} {'x TVAE':>7} {'writer MB':>9}")
    for rows, target, seconds, rate, rss in rows_table:
        print(f"{rows:>12,} {target:>7} {seconds:>9.1f} {rate:>11,.0f} {rate / limit['limit']:>8.2f} "
              f"{rate / tvae if tvae else float('nan'):>7.1f} {rss:>9.0f}")
    print(f"\nmachine limit, in this process on all CPUs: decoder forward {limit['decode']:,.0f} rows/s, "
          f"pyarrow zstd write {limit['write']:,.0f} rows/s -> decode+write {limit['limit']:,.0f} rows/s; "
          f"our full sampler alone {limit['sample']:,.0f} rows/s")
    print(f"ctgan TVAE sample: {tvae:,.0f} rows/s" if tvae else "ctgan TVAE: not installed (pip install -e '.[bench]')")


if __name__ == "__main__":
    main()
