"""What moves the score: one model setting changed at a time from the defaults, on Adult, judged by SDMetrics.

    python bench/ablation_bench.py [--epochs 10] [--seeds 0 1 2]

Trains in-process with the pipeline's own encoder, model and epoch loop (no Ray,
no MLflow: only the model is compared), draws as many rows as Adult has with the
proportional plan, and scores them with SDMetrics' QualityReport against the whole
table. Each variant runs over the given seeds; prints mean and spread. Needs the
`bench` extra (sdmetrics). Nothing here is a test.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import pyarrow.parquet as pq
import torch

from pipeline.config import BUNDLED_DATA, EncoderConfig, GenerateConfig, ModelConfig, TrainConfig
from pipeline.encoding import TableEncoder
from pipeline.model import build_model
from pipeline.plan import build_plan
from pipeline.sampling import synthesize
from pipeline.train_worker import beta_for_epoch, run_epoch

warnings.filterwarnings("ignore")
VARIANTS: list[tuple[str, dict]] = [
    ("defaults", {}),
    ("prior N(0, I)", {"prior": "standard"}),
    ("fixed sigma 0.1", {"variance": "fixed"}),
    ("fixed sigma 1.0", {"variance": "fixed", "sigma": 1.0}),
    ("lr 1e-3", {"lr": 1e-3}),
    ("lr 1e-2", {"lr": 1e-2}),
    ("batch 250", {"batch_size": 250}),
    ("batch 1000", {"batch_size": 1000}),
    ("hidden 128x2, latent 128 (TVAE's)", {"hidden": [128, 128], "latent_dim": 128}),
    ("hidden 512x2", {"hidden": [512, 512]}),
    ("latent 8", {"latent_dim": 8}),
    ("latent 64", {"latent_dim": 64}),
    ("beta 0.5", {"beta": 0.5}),
    ("beta 2", {"beta": 2.0}),
    ("KL warm-up 3 epochs", {"kl_warmup_epochs": 3}),
    ("100 quantile knots", {"quantiles": 100}),
]
TRAIN_KEYS = {"lr", "batch_size"}


def score(table, encoder, model, seed: int) -> float:
    from sdmetrics.reports.single_table import QualityReport

    plan = build_plan(GenerateConfig(num_rows=table.num_rows), encoder)
    synthetic = synthesize(model, encoder, plan.rows(0, plan.num_rows), seed=seed + 1).to_pandas()
    metadata = {"columns": {f.name: {"sdtype": "numerical" if str(f.type).startswith("int") else "categorical"}
                            for f in table.schema}}
    report = QualityReport()
    report.generate(table.to_pandas(), synthetic, metadata, verbose=False)
    return report.get_score()


def fit(table, changes: dict, epochs: int, seed: int) -> tuple[float, float]:
    """(quality, training seconds) for the defaults with `changes` applied."""
    torch.manual_seed(seed)
    train = TrainConfig(**{k: v for k, v in changes.items() if k in TRAIN_KEYS})
    encoder = TableEncoder.fit(table.to_batches(), ["income"], EncoderConfig(quantiles=changes.get("quantiles", 1000)))
    x, c = (torch.from_numpy(m) for m in encoder.transform(table))
    model_config = ModelConfig(**{k: v for k, v in changes.items() if k not in TRAIN_KEYS | {"quantiles"}})
    model = build_model(encoder.x_dim, encoder.c_dim, encoder.feature_spans, model_config)
    optimizer = torch.optim.Adam(model.parameters(), lr=train.lr)
    order = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for epoch in range(epochs):
        permutation = torch.randperm(len(x), generator=order)
        batches = ((x[permutation[i: i + train.batch_size]], c[permutation[i: i + train.batch_size]])
                   for i in range(0, len(x), train.batch_size))
        run_epoch(model, optimizer, batches, beta_for_epoch(model_config, epoch))
    return score(table, encoder, model, seed), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    table = pq.read_table(BUNDLED_DATA / "adult.parquet")
    print(f"Adult, {args.epochs} epochs, seeds {args.seeds}, {os.cpu_count()} CPUs; SDMetrics QualityReport")
    header = f"{'variant':<36}{'quality':>9}{'spread':>8}{'vs defaults':>13}{'train s':>9}"
    print(header)
    print("-" * len(header))
    base = None
    for name, changes in VARIANTS:
        runs = [fit(table, changes, args.epochs, seed) for seed in args.seeds]
        quality = statistics.mean(q for q, _ in runs)
        spread = max(q for q, _ in runs) - min(q for q, _ in runs)
        base = quality if base is None else base
        print(f"{name:<36}{quality:>9.4f}{spread:>8.4f}{quality - base:>+13.4f}"
              f"{statistics.mean(s for _, s in runs):>9.1f}", flush=True)


if __name__ == "__main__":
    main()
