"""Linked-tables benchmark: our linked CVAE (`cvae train`/`generate` with data.children) beside MOSTLY AI's
TabularARGN in its sequential mode, at equal wall time, on the bundled linked pairs, judged by mostlyai-qa's
sequential report on held-out parents with all their children (accuracy and coherence), with the holdout's own
score beside it (a faithful copy's ceiling) and the sequence-length distribution.

    python bench/linked_bench.py [--pairs nl-classes males planes] [--seed 0]

One split for both systems: ours (a seeded hash of the parent key, 20% of parents held out with all their
children), read back from pipeline.linked.tables.read_sources. Our training time (train_linked, Ray start and
encoder fits included) is TabularARGN's budget. Needs the `bench` extra (bench/linked_peer.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from judging import judge_frame  # noqa: E402
from linked_peer import judge_linked, run_argn_linked  # noqa: E402

from pipeline import console  # noqa: E402
from pipeline.config import BUNDLED_DATA, load_config  # noqa: E402
from pipeline.linked.generate import generate_linked  # noqa: E402
from pipeline.linked.tables import read_sources  # noqa: E402
from pipeline.linked.train import train_linked  # noqa: E402

LINKED = BUNDLED_DATA / "linked"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "linked"  # the whole flights table
PAIRS = {
    "nl-classes": {"path": str(LINKED / "nl-classes.parquet"), "key": "class",
                   "children": {"pupils": {"path": str(LINKED / "nl-pupils.parquet"), "foreign_key": "class"}}},
    "males": {"path": str(LINKED / "males.parquet"), "key": "nr",
              "children": {"years": {"path": str(LINKED / "males.parquet"), "foreign_key": "nr",
                                     "order_by": ["year"]}}},
    "planes": {"path": str(LINKED / "planes.parquet"), "key": "tailnum", "conditions": ["manufacturer"],
               "children": {"flights": {"path": str((SHARED if SHARED.exists() else LINKED) / "flights.parquet"),
                                        "foreign_key": "tailnum", "order_by": ["time_hour", "dep_time"]}}},
}


def frames(config) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, str, str]:
    """Training and held-out parents and children, as both systems and the judge see them (our split)."""
    data = config.data
    (name, spec), = data.children.items()
    parent, children, holdout = read_sources(config)
    child = children[name]
    keys = {split: parent.filter(pa.array(mask)) for split, mask in (("train", ~holdout), ("holdout", holdout))}
    out = []
    for split in ("train", "holdout"):
        rows = child.filter(pc.is_in(child.column(spec.foreign_key), value_set=keys[split].column(data.key)))
        frame = judge_frame(rows)
        order = [spec.foreign_key, *spec.order_by]
        out += [judge_frame(keys[split]), frame.sort_values(order, kind="stable").reset_index(drop=True)]
    return out[0], out[1], out[2], out[3], data.key, spec.foreign_key


def run_ours(pair: str, folder: Path, seed: int, parents: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    data = {**PAIRS[pair], "holdout_fraction": 0.2}
    config_path = folder / f"{pair}.yaml"
    config_path.write_text(yaml.safe_dump({
        "data": data, "train": {"seed": seed, "storage_path": str(folder / "runs"), "name": f"{pair}-linked"},
        "mlflow": {"tracking_uri": f"sqlite:///{folder}/mlflow.db", "model_name": f"{pair}-linked"},
        "generate": {"num_rows": parents, "output": str(folder / "out"), "seed": seed}}))
    config = load_config(str(config_path))
    started = time.perf_counter()
    train_linked(config)
    trained = time.perf_counter()
    outcome = generate_linked(config)
    generated = time.perf_counter()
    (child, _), = config.data.children.items()
    parent_table = pq.read_table(folder / "out" / Path(data["path"]).stem)
    child_table = pq.read_table(folder / "out" / child)
    return judge_frame(parent_table), judge_frame(child_table), {
        "train_s": trained - started, "generate_s": generated - trained, "config": config,
        "rows": sum(outcome.rows.values())}


def summary(judged: dict) -> dict:
    system, own = judged["system"], judged["holdout_own"]
    lengths = judged["sequence_lengths"]
    pick = lambda m: {k: m.get(k) for k in ("accuracy_overall", "accuracy_univariate", "accuracy_bivariate",  # noqa: E731
                                             "accuracy_coherence", "accuracy_overall_max")}
    return {"scores": pick(system), "holdout_own": pick(own),
            "parent_accuracy": (judged.get("parent_accuracy") or {}).get("accuracy_overall"),
            "length_ks": lengths.get("ks_synthetic_holdout"), "length_ks_training": lengths.get("ks_training_holdout"),
            "mean_length": lengths.get("synthetic", {}).get("mean"),
            "holdout_mean_length": lengths.get("holdout", {}).get("mean")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    console.configure(False)
    results = []
    for pair in args.pairs:
        with tempfile.TemporaryDirectory(prefix=f"linked-bench-{pair}-") as scratch:
            folder = Path(scratch)
            data = {**PAIRS[pair], "holdout_fraction": 0.2}
            split_config = load_config(None, [f"data={json.dumps(data)}", f"train.seed={args.seed}"])
            trn_parent, trn_child, hol_parent, hol_child, key, fk = frames(split_config)
            syn_parent, syn_child, ours = run_ours(pair, folder, args.seed, len(trn_parent))
            budget = ours["train_s"]
            argn_parent, argn_child, argn = run_argn_linked(trn_parent, trn_child, key, fk, len(trn_parent), budget,
                                                            args.seed, str(folder / "argn"))
            for system, (sp, sc, timing) in {"cvae": (syn_parent, syn_child, ours),
                                             "argn": (argn_parent, argn_child, argn)}.items():
                judged = judge_linked(sp, sc, trn_parent, trn_child, hol_parent, hol_child, key, fk,
                                      str(folder / f"qa-{system}"))
                row = {"pair": pair, "system": system, "train_s": timing["train_s"],
                       "generate_s": timing["generate_s"], "children": len(sc),
                       "train_rows_per_s": len(trn_child) / timing["train_s"],
                       "generate_rows_per_s": (len(sp) + len(sc)) / timing["generate_s"], **summary(judged)}
                results.append(row)
                print(json.dumps(row, default=str), flush=True)
            print(f"\n{pair}: ten generated child rows (ours), ten of TabularARGN's, ten real held-out ones")
            for frame in (syn_child, argn_child, hol_child):
                print(frame.head(10).to_string(), flush=True)
    print_table(results)


def print_table(results: list[dict]) -> None:
    print("\n| pair | system | qa accuracy (holdout's own) | coherence (holdout's own) | parent accuracy | "
          "length KS (train's own) | mean length (holdout) | train s | generate rows/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        s, o = r["scores"], r["holdout_own"]
        fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else "n/a"  # noqa: E731
        print(f"| {r['pair']} | {r['system']} | {fmt(s['accuracy_overall'])} ({fmt(o['accuracy_overall'])}) | "
              f"{fmt(s['accuracy_coherence'])} ({fmt(o['accuracy_coherence'])}) | {fmt(r['parent_accuracy'])} | "
              f"{fmt(r['length_ks'])} ({fmt(r['length_ks_training'])}) | {fmt(r['mean_length'])} "
              f"({fmt(r['holdout_mean_length'])}) | {r['train_s']:.0f} | {r['generate_rows_per_s']:,.0f} |")


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    main()
