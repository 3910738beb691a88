"""Training benchmark on Adult: our CVAE (Ray Train, 1 and 2 workers) beside its limit, a plain in-process
torch loop over the same encoded tensors and model (one thread, as each of 2 workers gets on 2 cores), the same
loop under plain torch DDP in 2 processes (gloo, no Ray: the limit for 2 workers, all-reduce included), and
ctgan's TVAE where the `bench` extra is installed, in one run. Also where the fixed cost goes (the stages
`cvae train` logs as `seconds_<stage>`).

    python bench/train_bench.py [--epochs 10]

Each system runs in its own process so peak RSS is its own. Prints tables; nothing here is a test.
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
HIDDEN, LATENT, BATCH = 128, 128, 500  # TVAE's defaults: compress/decompress (128, 128), embedding 128, batch 500


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def encoder_fit() -> dict:
    import pyarrow.parquet as pq

    from pipeline.config import BUNDLED_DATA, EncoderConfig
    from pipeline.codec import fit_table

    table = pq.read_table(BUNDLED_DATA / "adult.parquet")
    times = []
    for _ in range(3):
        started = time.perf_counter()
        encoder = fit_table(table.to_batches(), ["income"], EncoderConfig())
        times.append(time.perf_counter() - started)
    return {"encoder_fit_s": min(times), "width": encoder.x_dim + encoder.c_dim}


def cvae(workers: int, epochs: int) -> dict:
    from mlflow.tracking import MlflowClient

    from pipeline.config import load_config
    from pipeline.train.driver import train

    folder = tempfile.mkdtemp(prefix="cvae-bench-")
    config = load_config(None, [f"train.num_workers={workers}", f"train.epochs={epochs}",
                                f"train.storage_path={folder}/runs", f"mlflow.tracking_uri=sqlite:///{folder}/mlflow.db",
                                f"model.hidden=[{HIDDEN}, {HIDDEN}]", f"model.latent_dim={LATENT}",
                                f"train.batch_size={BATCH}", "data.holdout_fraction=0.0", "mlflow.alias=null"])
    started = time.perf_counter()
    outcome = train(config)
    wall = time.perf_counter() - started
    client = MlflowClient(config.mlflow.tracking_uri)
    history = {key: [m.value for m in sorted(client.get_metric_history(outcome.run_id, key), key=lambda m: m.step)]
               for key in ("rows_per_s", "epoch_seconds", "worker_peak_rss_mb", "loss", "overhead_seconds",
                           "previous_report_seconds")}
    # per epoch: validation + checkpoint files (overhead_seconds) and the report that follows (logged next epoch)
    overhead = [a + b for a, b in zip(history["overhead_seconds"][:-1], history["previous_report_seconds"][1:])]
    steady = sorted(history["rows_per_s"][1:] or history["rows_per_s"])
    return {"system": f"cvae, {workers} worker(s)", "workers": workers, "rows_per_s": steady[len(steady) // 2],
            "train_s": sum(history["epoch_seconds"]), "wall_s": wall, "driver_rss_mb": peak_rss_mb(),
            "worker_rss_mb": max(history["worker_peak_rss_mb"]), "final_loss": history["loss"][-1],
            "first_epoch_s": history["epoch_seconds"][0], "stages": outcome.seconds,
            "overhead_share": sum(overhead) / sum(history["epoch_seconds"][:len(overhead)]) if overhead else None}


def _encoded_adult():
    """Adult encoded as training sees it, and a fresh model of the benchmark's shape."""
    import pyarrow.parquet as pq
    import torch

    from pipeline.config import BUNDLED_DATA, EncoderConfig, ModelConfig
    from pipeline.codec import fit_table
    from pipeline.model.cvae import build_model

    table = pq.read_table(BUNDLED_DATA / "adult.parquet")
    encoder = fit_table(table.to_batches(), ["income"], EncoderConfig())
    x, c = (torch.from_numpy(a) for a in encoder.transform(table))
    torch.manual_seed(0)
    model = build_model(encoder.x_dim, encoder.c_dim, encoder.feature_spans,
                        ModelConfig(hidden=[HIDDEN, HIDDEN], latent_dim=LATENT))
    return x, c, model


def _steady_rate(model, x, c, epochs: int) -> float:
    """Median rows/s of the epochs after the first, one thread, batches sliced from in-memory tensors."""
    import torch

    from in_process import plain_rates  # bench/

    torch.set_num_threads(1)
    steady = sorted(plain_rates(model, x, c, BATCH, min(epochs, 4))[1:])
    return steady[len(steady) // 2]


def plain_loop(epochs: int) -> dict:
    """The limit: the same model, optimiser, batch size and encoded rows, one thread, no Ray, no data feed."""
    x, c, model = _encoded_adult()
    rate = _steady_rate(model, x, c, epochs)
    return {"system": "plain torch loop, 1 thread", "rows_per_s": rate, "encoder_fit_s": 0.0,
            "train_s": len(x) * epochs / rate, "wall_s": float("nan"), "driver_rss_mb": peak_rss_mb(),
            "worker_rss_mb": None}


def _ddp_rank(rank: int, world: int, epochs: int, port: int, rates) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x, c, model = _encoded_adult()
    rates[rank] = _steady_rate(torch.nn.parallel.DistributedDataParallel(model), x[rank::world], c[rank::world],
                               epochs)
    dist.destroy_process_group()


def plain_ddp(world: int, epochs: int) -> dict:
    """The limit for `world` workers on this machine: the same loop under torch DDP (gloo, one thread each) in
    `world` processes without Ray, so the all-reduce every step costs what it costs here."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rates = mp.Manager().dict()
    mp.spawn(_ddp_rank, args=(world, epochs, port, rates), nprocs=world)
    per_worker = min(rates.values())
    return {"system": f"plain torch DDP, {world} procs", "rows_per_s": per_worker * world, "encoder_fit_s": 0.0,
            "train_s": float("nan"), "wall_s": float("nan"), "driver_rss_mb": peak_rss_mb(), "worker_rss_mb": None}


def tvae(epochs: int) -> dict | None:
    try:
        from ctgan import TVAE
    except ImportError:  # the bench extra is not installed
        return None
    from ctgan.data_transformer import DataTransformer
    from in_process import tvae_adult_frame  # bench/

    frame, discrete = tvae_adult_frame()
    started = time.perf_counter()
    DataTransformer().fit(frame, discrete)
    transformer_s = time.perf_counter() - started
    model = TVAE(epochs=epochs, batch_size=BATCH, compress_dims=(HIDDEN, HIDDEN), decompress_dims=(HIDDEN, HIDDEN),
                 embedding_dim=LATENT)
    started = time.perf_counter()
    model.fit(frame, discrete)
    fit_s = time.perf_counter() - started
    train_s = fit_s - transformer_s
    return {"system": "ctgan TVAE", "encoder_fit_s": transformer_s, "rows_per_s": len(frame) * epochs / train_s,
            "train_s": train_s, "wall_s": fit_s, "driver_rss_mb": peak_rss_mb(), "worker_rss_mb": None}


def child(name: str, epochs: int) -> dict:
    output = subprocess.run([sys.executable, __file__, "--one", name, "--epochs", str(epochs)],
                            capture_output=True, text=True)
    lines = [line for line in output.stdout.splitlines() if line.startswith("{") or line == "null"]
    if output.returncode or not lines:
        raise SystemExit(f"{name} failed:\n{output.stderr[-3000:]}")
    return json.loads(lines[-1]) if lines[-1] != "null" else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        runs = {"encoder": encoder_fit, "cvae1": lambda: cvae(1, args.epochs), "cvae2": lambda: cvae(2, args.epochs),
                "tvae": lambda: tvae(args.epochs), "plain": lambda: plain_loop(args.epochs),
                "ddp2": lambda: plain_ddp(2, args.epochs)}
        print(json.dumps(runs[args.one]()))
        return
    fit = child("encoder", args.epochs)
    limit, ddp_limit = child("plain", args.epochs), child("ddp2", args.epochs)
    ours = [child("cvae1", args.epochs), child("cvae2", args.epochs)]
    rows = [limit, ddp_limit, *ours, *[row for row in [child("tvae", args.epochs)] if row]]
    print(f"\nAdult, {args.epochs} epochs, hidden {HIDDEN}x2, latent {LATENT}, batch {BATCH}, "
          f"{os.cpu_count()} CPUs; encoded width {fit['width']}")
    header = f"{'system':<26}{'encoder fit s':>14}{'rows/s':>10}{'train s':>9}{'wall s':>8}{'driver MB':>11}{'worker MB':>11}"
    print(header)
    print("-" * len(header))
    for row in rows:
        worker = f"{row['worker_rss_mb']:.0f}" if row["worker_rss_mb"] else "-"
        fit_s = row.get("encoder_fit_s", row.get("stages", {}).get("encoder_fit", float("nan")))
        print(f"{row['system']:<26}{fit_s:>14.3f}{row['rows_per_s']:>10,.0f}{row['train_s']:>9.1f}"
              f"{row['wall_s']:>8.1f}{row['driver_rss_mb']:>11.0f}{worker:>11}")
    print("\nper-worker epoch throughput against the plain loop (the limit), and where the wall time goes:")
    for row in ours:
        stages = row["stages"]
        per_worker = row["rows_per_s"] / row["workers"]
        fixed = row["wall_s"] - stages.get("ray_start", 0.0) - row["train_s"]
        same_world = limit if row["workers"] == 1 else ddp_limit
        print(f"  {row['system']}: {per_worker:,.0f} rows/s per worker = {per_worker / limit['rows_per_s']:.2f}x the "
              f"plain loop, {row['rows_per_s'] / same_world['rows_per_s']:.2f}x {same_world['system']}; per-epoch overhead {row['overhead_share'] or 0:.0%} of an epoch; "
              f"fixed cost beyond Ray's start {fixed:.1f}s (first epoch {row['first_epoch_s']:.1f}s); "
              + ", ".join(f"{stage} {seconds:.1f}s" for stage, seconds in stages.items()))
    print("\nrows/s: median epoch after the first; train s: sum of epoch times; wall s: the whole call "
          "(Ray start, data read, encoder fit, checkpoints, MLflow logging and registration for the CVAE).")


if __name__ == "__main__":
    main()
