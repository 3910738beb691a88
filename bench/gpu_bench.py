"""GPU benchmark: training and generation with `use_gpu` through Ray, each beside the GPU's own limit for the
same model, in one run.

    python bench/gpu_bench.py [--epochs 3] [--rows 2000000] [--out DIR]

- train limit: a plain loop of the same model, optimiser, batch size and bf16 autocast over device-resident
  tensors of the same encoded rows; ours: the Ray Train worker loop (pipeline.train.worker, 1 GPU worker)
  fed by Ray Data. Ratio = ours / limit, per epoch after the first.
- generate limit: the decoder's forward pass alone on device-resident inputs, plus pyarrow writing the same
  rows, timed here; ours: generation actors (pipeline.generate.part_writer, one GPU each) through Ray Data.

Needs only the worker-side modules (no MLflow), so it runs where Ray, torch and pyarrow are installed.
Falls back to CPU when no GPU is visible (to check the script). Writes results.json to --out.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402

from in_process import plain_rates, sync  # noqa: E402 (bench/)


def encoded_adult(seed: int = 0):
    from pipeline.config import BUNDLED_DATA, DataConfig, EncoderConfig
    from pipeline.source import encoded_splits, fit_encoder, modelled_schema, read_table
    from pipeline.storage import parquet_files

    data = DataConfig(path=str(BUNDLED_DATA / "adult.parquet"), conditions=["income"])
    fs, files = parquet_files(data.path)
    schema = modelled_schema(pq.read_schema(data.path), data)
    dataset = read_table(fs, files, schema.names)
    encoder = fit_encoder(dataset, schema, data, EncoderConfig(), seed)
    splits = {name: ds.materialize() for name, ds in encoded_splits(dataset, ray.put(encoder.to_json()), seed, 0.1).items()}
    return encoder, splits


def plain_loop(model, x, c, batch_size: int, epochs: int, amp: bool) -> list[float]:
    """rows/s per epoch of the limit: tensors already on the device, no input pipeline at all."""
    return plain_rates(model, x, c, batch_size, epochs, amp)


def train_through_ray(encoder, splits, batch_size: int, epochs: int, use_gpu: bool, folder: str) -> dict:
    import ray.train
    import ray.train.torch

    from pipeline.config import ModelConfig
    from pipeline.model.cvae import build_model
    from pipeline.train.worker import WorkerSettings, train_loop_per_worker

    config = ModelConfig()
    model = build_model(encoder.x_dim, encoder.c_dim, encoder.feature_spans, config)
    settings = WorkerSettings(network=model.config, model=config, encoder=ray.put(encoder.to_json()), seed=0,
                              epochs=epochs, passes_per_epoch=1, batch_size=batch_size, lr=1e-3, lr_schedule="constant",
                              weight_decay=0.0, patience=0, has_holdout=True, dp_sgd=None)
    trainer = ray.train.torch.TorchTrainer(
        train_loop_per_worker, train_loop_config={"settings": settings},
        scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=use_gpu),
        run_config=ray.train.RunConfig(name="gpu-bench", storage_path=folder), datasets=splits)
    started = time.perf_counter()
    result = trainer.fit()
    with result.checkpoint.as_directory() as latest:
        history = torch.load(Path(latest) / "training_state.pt", weights_only=True)["progress"]["history"]
    return {"fit_s": time.perf_counter() - started, "epochs": history}


def generation(encoder, model_files: dict, rows: int, rows_per_part: int, use_gpu: bool, folder: str,
               num_workers: int | str) -> dict:
    """Parts written by the product's writers, sized as `cvae generate` sizes them (`generate.num_workers`)."""
    from pipeline.config import GenerateConfig
    from pipeline.generate.part_writer import WriterSettings, write_with_actors, writer_pool
    from pipeline.generate.plan import build_plan

    plan = build_plan(GenerateConfig(num_rows=rows), encoder)
    pool = writer_pool(num_workers, 1, use_gpu, ray.cluster_resources())
    started = time.perf_counter()
    settings = WriterSettings(model_files, plan, folder, {}, 0, rows_per_part, use_gpu,
                              "bfloat16" if use_gpu else "float32")
    written = sum(int(row["rows"]) for row in write_with_actors(list(range(math.ceil(rows / rows_per_part))), pool,
                                                                settings, cpus_per_worker=1))
    assert written == rows
    seconds = time.perf_counter() - started
    return {"actors": pool.actors, "gpus_per_actor": pool.gpus_per_actor, "rows": rows, "seconds": seconds,
            "rows_per_s": rows / seconds}


def generation_limit(model, encoder, rows: int, device: torch.device, use_bf16: bool) -> dict:
    from pipeline.config import GenerateConfig
    from pipeline.generate.part_writer import parquet_bytes
    from pipeline.generate.plan import build_plan
    from pipeline.model.sampling import SAMPLE_BATCH, synthesize

    conditions = build_plan(GenerateConfig(num_rows=rows), encoder).rows(0, rows)
    c = torch.from_numpy(encoder.encode_conditions(conditions)).to(device)
    z = torch.randn(rows, model.config.latent_dim, device=device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
        model.decoder(torch.cat([z[:SAMPLE_BATCH], c[:SAMPLE_BATCH]], dim=1))
        sync(device)
        started = time.perf_counter()
        for start in range(0, rows, SAMPLE_BATCH):
            model.decoder(torch.cat([z[start:start + SAMPLE_BATCH], c[start:start + SAMPLE_BATCH]], dim=1))
        sync(device)
        decode = rows / (time.perf_counter() - started)
    table = synthesize(model, encoder, conditions.slice(0, 500_000), 0, device, "bfloat16" if use_bf16 else "float32")
    started = time.perf_counter()
    parquet_bytes(table)
    write = table.num_rows / (time.perf_counter() - started)
    return {"decode": decode, "write": write, "limit": 1 / (1 / decode + 1 / write)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[500, 4096])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rows-per-part", type=int, default=250_000)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="train on the encoded rows this many times over")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    use_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if use_gpu else "cpu")
    results = {"device": torch.cuda.get_device_name() if use_gpu else "cpu", "torch": torch.__version__,
               "ray": ray.__version__}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save():
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))

    ray.init(num_cpus=os.cpu_count() or 2, num_gpus=1 if use_gpu else 0, include_dashboard=False,
             log_to_driver=False)
    folder = tempfile.mkdtemp(prefix="cvae-gpubench-")
    from pipeline.artifact import save_artifact
    from pipeline.config import ModelConfig
    from pipeline.model.cvae import build_model

    encoder, splits = encoded_adult()
    if args.repeat > 1:  # a table big enough to keep a GPU busy: Adult's encoded rows, several times over
        splits = {name: ds.union(*[ds] * (args.repeat - 1)).materialize() for name, ds in splits.items()}
    results["train_rows"] = splits["train"].count()
    batches = list(splits["train"].iter_batches(batch_size=None, batch_format="numpy"))
    x = torch.from_numpy(np.concatenate([b["x"] for b in batches])).float().to(device)
    c = torch.from_numpy(np.concatenate([b["c"] for b in batches])).float().to(device)
    for batch_size in [] if args.skip_train else args.batch_size:
        try:
            torch.manual_seed(0)
            model = build_model(encoder.x_dim, encoder.c_dim, encoder.feature_spans, ModelConfig()).to(device)
            limit = plain_loop(model, x, c, batch_size, args.epochs, amp=use_gpu)
            ours = train_through_ray(encoder, splits, batch_size, args.epochs, use_gpu, f"{folder}/runs-{batch_size}")
            rates = [epoch["rows_per_s"] for epoch in ours["epochs"]]
            results[f"train_batch_{batch_size}"] = {
                "limit_rows_per_s": limit, "ours_rows_per_s": rates, "fit_s": ours["fit_s"],
                "ratio_after_first": float(np.mean(rates[1:]) / np.mean(limit[1:])) if len(rates) > 1 else None,
                "epoch_seconds": [epoch["epoch_seconds"] for epoch in ours["epochs"]]}
        except Exception as exc:  # noqa: BLE001 - keep what the other stages measured
            results[f"train_batch_{batch_size}"] = {"error": repr(exc)[-2000:]}
        save()
    try:
        torch.manual_seed(0)
        model = build_model(encoder.x_dim, encoder.c_dim, encoder.feature_spans, ModelConfig())
        artifact = Path(folder) / "artifact"
        save_artifact(artifact, model, encoder.to_json())
        files = {p.name: p.read_bytes() for p in artifact.iterdir()}
        limit = generation_limit(model.to(device).eval(), encoder, args.rows, device, use_bf16=use_gpu)
        results["generate"] = {"limit": limit}
        for workers in (1, "auto"):
            ours = generation(encoder, files, args.rows, args.rows_per_part, use_gpu, f"{folder}/synthetic-{workers}",
                              workers)
            results["generate"][f"workers_{workers}"] = {**ours, "ratio": ours["rows_per_s"] / limit["limit"]}
            save()
    except Exception as exc:  # noqa: BLE001
        results["generate"] = {"error": repr(exc)[-2000:]}
    save()
    print(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
