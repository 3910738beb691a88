"""What moves the score: one setting changed at a time from the defaults, judged on held-out rows by both judges.

    python bench/ablation_bench.py [--tables adult seattle-weather] [--seeds 0 1 2] [--variants NAME ...]

In-process (no Ray, no MLflow: only the model and its training plan are compared), on the seeded 80/20 split of
bench/judging.py: the pipeline's encoder fitted on the 80%, its model, the auto epoch plan (pipeline.train.
epoch_schedule for 2 workers: the same optimizer steps, on batches of 2 x train.batch_size rows, as DDP averages
them), the per-epoch learning rate of the worker loop and the latent mixture fitted as `cvae train` fits it; then
min(training rows, 20,000) rows with the proportional plan, scored by mostlyai-qa (accuracy against the training
rows; DCR share) and SDMetrics against the holdout. Each variant runs over the given seeds; prints the mean and
the spread (max - min). Needs the `bench` extra. Nothing here is a test.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings

import pyarrow.parquet as pq
import torch

warnings.filterwarnings("ignore")

from in_process import shuffled_batches  # noqa: E402 (bench/)
from judging import CONDITIONS, MAX_SYNTHETIC_ROWS, judge, judge_frame, split  # noqa: E402 (bench/)
from pipeline.config import BUNDLED_DATA, GenerateConfig, load_config  # noqa: E402
from pipeline.codec import fit_table  # noqa: E402
from pipeline.model.latent_prior import collect_codes, fit_mixture  # noqa: E402
from pipeline.model.cvae import build_model  # noqa: E402
from pipeline.generate.plan import build_plan  # noqa: E402
from pipeline.model.sampling import synthesize  # noqa: E402
from pipeline.train.driver import epoch_schedule  # noqa: E402
from pipeline.train.worker import beta_for_epoch, lr_for_epoch, run_epoch  # noqa: E402

VARIANTS: dict[str, list[str]] = {  # name -> `cvae train --set` overrides from the defaults
    "defaults": [],
    "no latent mixture": ["model.latent_mixture=0"],
    "constant lr": ["train.lr_schedule=constant"],
    "10 epochs": ["train.epochs=10"],
    "old defaults (10 epochs, constant lr, no mixture)": ["train.epochs=10", "train.lr_schedule=constant",
                                                          "model.latent_mixture=0"],
    "latent 16": ["model.latent_dim=16"],
    "latent mixture 50": ["model.latent_mixture=50"],
    "no point masses": ["encoder.point_mass_share=0"],
}
WORKERS = 2  # the default train.num_workers: one step averages both workers' batches


def fit_and_judge(table_name: str, overrides: list[str], seed: int) -> dict:
    config = load_config(None, [f"train.seed={seed}", "data.holdout_fraction=0.0", *overrides])
    training, holdout = split(pq.read_table(BUNDLED_DATA / f"{table_name}.parquet"))
    torch.manual_seed(seed)
    encoder = fit_table(training.to_batches(65_536), CONDITIONS[table_name], config.encoder, seed=seed)
    x, c = (torch.from_numpy(m) for m in encoder.transform(training))
    model = build_model(encoder.x_dim, encoder.c_dim, encoder.feature_spans, config.model)
    plan = epoch_schedule(config, training.num_rows)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    batch = WORKERS * config.train.batch_size
    order = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for epoch in range(plan.epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr_for_epoch(config.train.lr, config.train.lr_schedule, epoch, plan.epochs)
        for _ in range(plan.passes_per_epoch):
            run_epoch(model, optimizer, shuffled_batches(x, c, batch, order), beta_for_epoch(config.model, epoch))
    if config.model.latent_mixture:
        mixture = fit_mixture(*collect_codes(model, [(x, c)], len(x), seed), config.model.latent_mixture, seed)
        model = model if mixture is None else model.with_mixture(mixture)
    train_s = time.perf_counter() - started
    rows = min(training.num_rows, MAX_SYNTHETIC_ROWS)
    synthetic = synthesize(model, encoder, build_plan(GenerateConfig(num_rows=rows, seed=seed), encoder).rows(0, rows),
                           seed=seed)
    scores = judge(judge_frame(synthetic), judge_frame(training), judge_frame(holdout), tempfile.mkdtemp())
    return scores | {"train_s": train_s, "epochs": plan.epochs, "passes_per_epoch": plan.passes_per_epoch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", default=["adult", "seattle-weather"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    print(f"seeds {args.seeds}, {os.cpu_count()} CPUs; judged on the 20% holdout")
    print("| table | variant | mostlyai-qa accuracy (spread) | trivariate | DCR share | SDMetrics quality (spread) "
          "| vs defaults (accuracy) | train s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for table_name in args.tables:
        base = None
        for name in args.variants:
            runs = [fit_and_judge(table_name, VARIANTS[name], seed) for seed in args.seeds]
            mean = lambda key: statistics.mean(run[key] for run in runs)  # noqa: E731
            spread = lambda key: max(run[key] for run in runs) - min(run[key] for run in runs)  # noqa: E731
            base = mean("qa_accuracy") if base is None else base
            trivariate = "-" if runs[0]["qa_trivariate"] is None else f"{mean('qa_trivariate'):.4f}"
            print(f"| {table_name} | {name} | {mean('qa_accuracy'):.4f} ({spread('qa_accuracy'):.4f}) | "
                  f"{trivariate} | {mean('dcr_share'):.3f} | {mean('sdmetrics_quality'):.4f} "
                  f"({spread('sdmetrics_quality'):.4f}) | {mean('qa_accuracy') - base:+.4f} | {mean('train_s'):.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
