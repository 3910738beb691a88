"""The linked-tables peer and its judge: MOSTLY AI's TabularARGN in its two-table (sequential) mode, and
mostlyai-qa's sequential report, for a parent -> child pair (planes -> flights by tailnum, classes -> pupils by
class, the 545 men x 8 years panel by nr).

    run_argn_linked(parent_train, child_train, key, foreign_key, n_parents, budget_s, seed, folder)
        -> (synthetic parents, synthetic children, {"train_s", "generate_s", "peak_rss_mb", ...})
    judge_linked(syn_parent, syn_child, trn_parent, trn_child, hol_parent, hol_child, key, foreign_key, folder)
        -> {"system": {...}, "holdout_own": {...}, "parent_accuracy": {...}, "sequence_lengths": {...}}

Run on its own (from the repository root, with the `bench` extra installed), it is a smoke test on one bundled
pair: a seeded 80/20 split of the parents (their children follow them), the peer trained within --budget seconds,
both judges printed as JSON.

    python bench/linked_peer.py [--pair nl-classes|planes|males] [--budget 60] [--seed 0]

Notes on mostlyai-engine 2.7.x (checked in its source):
- The parent model is flat with `tgt_primary_key=key`: the key takes no part in training and the generated
  parents get fresh keys, 36-character strings `mostly....-....-4...-....-............` (not the training dtype).
- The child model is `TabularARGN(tgt_context_key=foreign_key, ctx_data=parent_train, ctx_primary_key=key)`:
  the key of the context table is left out of training too, the row order within each parent's rows is the order
  the rows arrive in (sort the children, e.g. the panel by year, before calling), and every child's foreign key
  must be a parent key (the engine's split raises otherwise: children whose key has no parent, e.g. flights whose
  tailnum is null or not in planes, are dropped here and counted in `orphan_children_dropped`).
  `sample(ctx_data=synthetic_parents)` writes the context's key values into `foreign_key` unchanged, so every
  synthetic child references a synthetic parent; a parent may get no children (sequence length 0 is learned).
  But the frame `sample()` returns is sorted by the key with an unstable sort, which scrambles the order of each
  parent's rows: the children are read back from the workspace instead (generated_sequences).
- A parent table with no column besides its key (the panel's distinct nr) has nothing to learn: its synthetic
  parents are the keys 0..n_parents-1, and the child model trains with the key alone as context.
- `max_training_time` (minutes) bounds only the training loop (not split/analyze/encode) and `max_epochs`
  (100, as shipped) may end it sooner; the budget is split as: parent model at most half, the child model what is
  left of budget_s after the parent's whole fit.
"""
from __future__ import annotations

import contextlib
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

MIN_CHILD_SHARE = 0.25  # the child model never gets less than this share of the budget


def peak_rss_mb() -> float:
    """This process's own peak resident memory (VmHWM), as bench/quality_bench.py measures it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def naive_utc(frame: pd.DataFrame) -> pd.DataFrame:
    """Timestamps with a time zone as naive UTC (mostlyai-qa refuses them), as bench/judging.judge_frame does."""
    zoned = [name for name in frame.columns if isinstance(frame[name].dtype, pd.DatetimeTZDtype)]
    if not zoned:
        return frame
    return frame.assign(**{name: frame[name].dt.tz_convert("UTC").dt.tz_localize(None) for name in zoned})


def run_argn_linked(parent_train: pd.DataFrame, child_train: pd.DataFrame, key: str, foreign_key: str,
                    n_parents: int, budget_s: float, seed: int, folder: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """TabularARGN on a parent -> child pair: a flat model of the parents (`key` its primary key), then the children
    as one sequence per parent with the parents as context; `n_parents` synthetic parents, then their children
    with the synthetic parents as context. Training within `budget_s` seconds in all (see the module notes)."""
    from mostlyai.engine import TabularARGN

    parent_train = naive_utc(parent_train).reset_index(drop=True)
    child_train = naive_utc(child_train)
    orphans = ~child_train[foreign_key].isin(parent_train[key]) | child_train[foreign_key].isna()
    child_train = child_train.loc[~orphans].reset_index(drop=True)
    parent_columns = [name for name in parent_train.columns if name != key]

    started = time.perf_counter()
    parent_model = None
    if parent_columns:
        parent_model = TabularARGN(tgt_primary_key=key, max_training_time=budget_s / 2 / 60, device="cpu",
                                   workspace_dir=f"{folder}/argn-parent-{seed}", random_state=seed, verbose=0)
        parent_model.fit(parent_train)
    parent_fit_s = time.perf_counter() - started
    child_budget_s = max(budget_s - parent_fit_s, MIN_CHILD_SHARE * budget_s)
    child_model = TabularARGN(tgt_context_key=foreign_key, ctx_data=parent_train, ctx_primary_key=key,
                              max_training_time=child_budget_s / 60, device="cpu",
                              workspace_dir=f"{folder}/argn-child-{seed}", random_state=seed, verbose=0)
    child_model.fit(child_train)
    train_s = time.perf_counter() - started

    started = time.perf_counter()
    if parent_model is not None:
        syn_parent = parent_model.sample(n_samples=n_parents)[list(parent_train.columns)]
    else:
        syn_parent = pd.DataFrame({key: np.arange(n_parents, dtype=np.int64)})
    child_model.sample(ctx_data=syn_parent)  # its frame is sorted by the key, unstably: see generated_sequences
    syn_child = generated_sequences(f"{folder}/argn-child-{seed}", syn_parent[key], foreign_key)
    syn_child = syn_child[list(child_train.columns)]
    generate_s = time.perf_counter() - started
    assert syn_child[foreign_key].isin(syn_parent[key]).all(), "a synthetic child without a synthetic parent"
    return syn_parent, syn_child, {"train_s": train_s, "generate_s": generate_s, "peak_rss_mb": peak_rss_mb(),
                                   "parent_fit_s": parent_fit_s, "child_fit_s": train_s - parent_fit_s,
                                   "child_budget_s": child_budget_s, "orphan_children_dropped": int(orphans.sum()),
                                   "synthetic_parents": len(syn_parent), "synthetic_children": len(syn_child)}


def generated_sequences(workspace: str, parent_keys: pd.Series, foreign_key: str) -> pd.DataFrame:
    """The sequential model's rows as the engine wrote them, grouped by parent (in `parent_keys`' order) with each
    parent's rows in the order they were generated. The engine writes a sequence's rows step by step (every
    sequence's first row, then every second row, ...), and TabularARGN.sample() then sorts them by the key with
    pandas' default quicksort, which is not stable: the rows of one sequence come back out of order (a man's panel
    years 1987, 1986, 1983, ...)."""
    parts = sorted(Path(workspace, "SyntheticData").glob("*.parquet"))
    raw = pd.concat([pd.read_parquet(part) for part in parts], ignore_index=True)
    position = raw[foreign_key].map(pd.Series(np.arange(len(parent_keys)), index=parent_keys.to_numpy()))
    return raw.iloc[np.argsort(position.to_numpy(), kind="stable")].reset_index(drop=True)


@contextlib.contextmanager
def _any_sample_size():
    """mostlyai-qa's report exits early (no metrics) below 100 synthetic parents; for the holdout judged as the
    synthetic rows (a holdout of 27 classes) that check is lifted."""
    from mostlyai.qa import reporting

    check = reporting.check_min_sample_size
    reporting.check_min_sample_size = lambda size, minimum, kind: None
    try:
        yield
    finally:
        reporting.check_min_sample_size = check


def _metrics(metrics) -> dict:
    """Every number the report's metrics hold, as floats: accuracy_overall, accuracy_univariate, ...,
    similarity_..., distances_dcr_share, ...; {"early_exit": True} where the report gave none."""
    if metrics is None:
        return {"early_exit": True}
    flat = {}
    for part in ("accuracy", "similarity", "distances"):
        values = getattr(metrics, part, None)
        for name, value in (values.model_dump() if values is not None else {}).items():
            flat[f"{part}_{name}"] = None if value is None else float(value)
    return flat


def _report(folder: str, name: str, seed: int = 0, **data) -> dict:
    from mostlyai import qa

    qa.set_random_state(seed)  # the report samples rows and column groups from numpy's global generator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, metrics = qa.report(**data, max_sample_size_embeddings=0, report_path=f"{folder}/{name}.html")
    return _metrics(metrics)


def children_per_parent(parent: pd.DataFrame, child: pd.DataFrame, key: str, foreign_key: str) -> np.ndarray:
    """Each parent's number of children, 0 for a parent without any."""
    counts = child[foreign_key].value_counts()
    return parent[key].map(counts).fillna(0).astype(int).to_numpy()


def _lengths(counts: np.ndarray) -> dict:
    return {"parents": int(len(counts)), "mean": float(np.mean(counts)), "median": float(np.median(counts)),
            "p90": float(np.percentile(counts, 90)), "max": int(np.max(counts)),
            "zero_share": float(np.mean(counts == 0))}


def judge_linked(syn_parent: pd.DataFrame, syn_child: pd.DataFrame, trn_parent: pd.DataFrame,
                 trn_child: pd.DataFrame, hol_parent: pd.DataFrame, hol_child: pd.DataFrame, key: str,
                 foreign_key: str, folder: str) -> dict:
    """mostlyai-qa's sequential report of the synthetic children with their synthetic parents as context
    (`system`: accuracy overall, univariate, bivariate, trivariate, coherence, each with qa's expected value for a
    same-sized holdout `*_max`, and the similarity and distance numbers); the same report with the real holdout as
    the synthetic rows (`holdout_own`: the score of real unseen rows; holdout not also passed as the reference,
    which would hold the judged rows themselves; the 100-parent minimum lifted); the flat report of the parent
    table alone, key left out (`parent_accuracy`; None for a parent table of keys alone); and the children per
    parent (0 included) of the synthetic, holdout and training parents, with KS distances."""
    from scipy.stats import ks_2samp

    frames = [naive_utc(frame) for frame in (syn_parent, syn_child, trn_parent, trn_child, hol_parent, hol_child)]
    syn_parent, syn_child, trn_parent, trn_child, hol_parent, hol_child = frames
    Path(folder).mkdir(parents=True, exist_ok=True)
    keys = {"ctx_primary_key": key, "tgt_context_key": foreign_key}
    system = _report(folder, "qa-linked", syn_tgt_data=syn_child, trn_tgt_data=trn_child, hol_tgt_data=hol_child,
                     syn_ctx_data=syn_parent, trn_ctx_data=trn_parent, hol_ctx_data=hol_parent, **keys)
    with _any_sample_size():
        holdout_own = _report(folder, "qa-linked-holdout", syn_tgt_data=hol_child, trn_tgt_data=trn_child,
                              syn_ctx_data=hol_parent, trn_ctx_data=trn_parent, **keys)
    holdout_own["min_sample_size_lifted"] = bool(hol_parent[key].isin(hol_child[foreign_key]).sum() < 100)

    parent_accuracy = None
    parent_columns = [name for name in trn_parent.columns if name != key]
    if parent_columns:
        flat = _report(folder, "qa-parent", syn_tgt_data=syn_parent[parent_columns],
                       trn_tgt_data=trn_parent[parent_columns], hol_tgt_data=hol_parent[parent_columns])
        parent_accuracy = {name: value for name, value in flat.items() if name.startswith("accuracy_") or
                           name == "early_exit"}

    counts = {name: children_per_parent(parent, child, key, foreign_key) for name, (parent, child) in
              {"synthetic": (syn_parent, syn_child), "holdout": (hol_parent, hol_child),
               "training": (trn_parent, trn_child)}.items()}
    lengths = {name: _lengths(values) for name, values in counts.items()}
    lengths["ks_synthetic_holdout"] = float(ks_2samp(counts["synthetic"], counts["holdout"]).statistic)
    lengths["ks_training_holdout"] = float(ks_2samp(counts["training"], counts["holdout"]).statistic)
    return {"system": system, "holdout_own": holdout_own, "parent_accuracy": parent_accuracy,
            "sequence_lengths": lengths}


# -- smoke test on one bundled pair ---------------------------------------------------------------------------------

PAIRS = {"nl-classes": ("nl-classes", "nl-pupils", "class", "class", None),
         "planes": ("planes", "flights", "tailnum", "tailnum", None),
         "males": (None, "males", "nr", "nr", "year")}


def load_pair(pair: str, root: Path) -> tuple[pd.DataFrame, pd.DataFrame, str, str]:
    """The pair's parent and child tables in the judges' representation; a panel's parents are its distinct keys,
    its rows ordered by time within each key."""
    import pyarrow.parquet as pq

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from judging import judge_frame

    parent_name, child_name, key, foreign_key, order = PAIRS[pair]
    child = judge_frame(pq.read_table(root / f"{child_name}.parquet"))
    if order:
        child = child.sort_values([foreign_key, order], kind="stable").reset_index(drop=True)
    if parent_name:
        parent = judge_frame(pq.read_table(root / f"{parent_name}.parquet"))
    else:
        parent = pd.DataFrame({key: child[foreign_key].drop_duplicates().sort_values().to_numpy()})
    return parent, child, key, foreign_key


def split_pair(parent: pd.DataFrame, child: pd.DataFrame, key: str, foreign_key: str, seed: int = 0):
    """A seeded 80/20 split of the parents; each child goes with its parent (children without one are dropped)."""
    order = np.random.default_rng(seed).permutation(len(parent))
    cut = int(0.8 * len(parent))
    trn_parent, hol_parent = parent.iloc[order[:cut]], parent.iloc[order[cut:]]
    trn_child = child[child[foreign_key].isin(trn_parent[key])].reset_index(drop=True)
    hol_child = child[child[foreign_key].isin(hol_parent[key])].reset_index(drop=True)
    return trn_parent.reset_index(drop=True), trn_child, hol_parent.reset_index(drop=True), hol_child


def main() -> None:
    import argparse
    import json
    import tempfile

    parser = argparse.ArgumentParser(description="TabularARGN on a linked pair, judged by mostlyai-qa")
    parser.add_argument("--pair", choices=list(PAIRS), default="nl-classes")
    parser.add_argument("--data", default="/work/shared/datasets/linked")
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    parent, child, key, foreign_key = load_pair(args.pair, Path(args.data))
    trn_parent, trn_child, hol_parent, hol_child = split_pair(parent, child, key, foreign_key, args.seed)
    print(f"{args.pair}: {len(trn_parent)} + {len(hol_parent)} parents, {len(trn_child)} + {len(hol_child)} children",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="linked-peer-") as folder:
        started = time.perf_counter()
        syn_parent, syn_child, run = run_argn_linked(trn_parent, trn_child, key, foreign_key, len(trn_parent),
                                                     args.budget, args.seed, folder)
        print("run:", json.dumps(run), flush=True)
        print(syn_parent.head(3).to_string(), syn_child.head(3).to_string(), sep="\n", flush=True)
        if PAIRS[args.pair][4]:
            order = PAIRS[args.pair][4]
            for name, frame in {"training": trn_child, "synthetic": syn_child}.items():
                ordered = frame.groupby(foreign_key, sort=False)[order].apply(lambda v: v.is_monotonic_increasing)
                print(f"{name} sequences in {order} order: {ordered.mean():.3f}", flush=True)
        judged_at = time.perf_counter()
        judged = judge_linked(syn_parent, syn_child, trn_parent, trn_child, hol_parent, hol_child, key, foreign_key,
                              folder)
        print("judge:", json.dumps(judged, indent=1), flush=True)
        print(f"wall: run {judged_at - started:.1f}s, judge {time.perf_counter() - judged_at:.1f}s")


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    main()
