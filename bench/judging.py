"""What the quality and privacy benchmarks share: one seeded split, one representation every system and judge
sees, and the two independent judges (mostlyai-qa and SDMetrics) on rows no system has seen.

Imported by bench/quality_bench.py and bench/privacy_bench.py (run from the repository root). Run on its own,
`python bench/judging.py [--tables adult ...]` prints what real unseen rows score on the DCR share, per bundled
table (seeded_dcr_shares): the floor a synthesizer's share is read against.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

# One natural condition column per bundled table (pipeline/data/README.md)
CONDITIONS = {"adult": ["income"], "digits": ["digit"], "pizzaplace": ["type"], "seattle-weather": ["weather"],
              "nuclides": ["is_stable"], "airports": ["state"], "penguins-raw": ["Species"], "sf-temps": ["date"],
              "strings/gibraltar": ["condition"], "strings/peeps": ["gender"], "strings/sp500": ["volume"],
              "linked/flights": ["carrier"]}
MAX_SYNTHETIC_ROWS = 20_000
FEW_VALUES = 10  # a numeric column with at most this many distinct values is judged as categories (digit 0-9)


def split(table: pa.Table, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """The seeded 80/20 split: every system trains on the first part; the second is the holdout none sees."""
    order = np.random.default_rng(seed).permutation(table.num_rows)
    cut = int(0.8 * table.num_rows)
    return table.take(order[:cut]), table.take(order[cut:])


def judge_frame(table: pa.Table) -> pd.DataFrame:
    """One representation for every system and both judges: times of day as seconds, dates as datetimes,
    timestamps with a time zone as naive UTC (mostlyai-qa refuses them), decimals as floats, an image (fixed-size
    list) as one float column per pixel."""
    columns = {}
    for field in table.schema:
        column = table.column(field.name)
        if pa.types.is_time(field.type):
            column = column.cast(pa.int64()).cast(pa.float64())
            columns[field.name] = column.to_pandas() / {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[field.type.unit]
        elif pa.types.is_date(field.type):
            columns[field.name] = pd.to_datetime(column.to_pandas())
        elif pa.types.is_timestamp(field.type) and field.type.tz:  # flights' time_hour: judges take naive UTC
            columns[field.name] = column.to_pandas().dt.tz_convert("UTC").dt.tz_localize(None)
        elif pa.types.is_decimal(field.type):
            columns[field.name] = column.cast(pa.float64()).to_pandas()
        elif pa.types.is_fixed_size_list(field.type):
            pixels = column.combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1).astype(float)
            columns |= {f"{field.name}_{j}": pixels[:, j] for j in range(pixels.shape[1])}
        else:
            columns[field.name] = column.to_pandas()
    return pd.DataFrame(columns)


def sdtypes(training: pd.DataFrame) -> dict[str, str]:
    """SDMetrics' column types, decided from the training rows alone: sdtypes_from_values, with an identifier
    wherever SDV's own metadata detection (column names and values) calls a column one: pizzaplace's `id`, an
    order number several rows share, and penguins' `Individual ID`. SDMetrics leaves identifiers out of its score,
    as it does for a table described by SDV's detection."""
    return with_detected_ids(sdtypes_from_values(training), training)


def with_detected_ids(types: dict[str, str], training: pd.DataFrame) -> dict[str, str]:
    """`types` with an identifier wherever SDV's metadata detection calls a column one."""
    detected = sdv_detected_types(training)
    return {name: "id" if detected.get(name) == "id" else kind for name, kind in types.items()}


def sdtypes_from_values(training: pd.DataFrame) -> dict[str, str]:
    """Datetimes; numbers with more than FEW_VALUES distinct values; an identifier where over 90% of the values
    are distinct (nothing to score as categories); categories otherwise."""
    types = {}
    for name in training.columns:
        values = training[name]
        if pd.api.types.is_datetime64_any_dtype(values):
            types[name] = "datetime"
        elif (pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
              and values.nunique() > FEW_VALUES):
            types[name] = "numerical"
        elif values.nunique() > 0.9 * max(values.notna().sum(), 1):
            types[name] = "id"
        else:
            types[name] = "categorical"
    return types


def sdv_detected_types(training: pd.DataFrame) -> dict[str, str]:
    """SDV's metadata detection (column names and values) on the training rows: {column: sdtype}."""
    from sdv.metadata import Metadata

    detected = Metadata.detect_from_dataframes({"training": training}).to_dict()["tables"]["training"]
    return {name: column["sdtype"] for name, column in detected["columns"].items()}


def sdmetrics_quality(synthetic: pd.DataFrame, holdout: pd.DataFrame, types: dict[str, str]) -> float:
    """SDMetrics' QualityReport score of `synthetic` against the holdout; categories compared as text."""
    from sdmetrics.reports.single_table import QualityReport

    as_text = {c: str for c, t in types.items() if t == "categorical"}
    report = QualityReport()
    report.generate(holdout.astype(as_text), synthetic.astype(as_text),
                    {"columns": {c: {"sdtype": t} for c, t in types.items()}}, verbose=False)
    return report.get_score()


def judge(synthetic: pd.DataFrame, training: pd.DataFrame, holdout: pd.DataFrame, folder: str,
          target: str | None = None) -> dict:
    """mostlyai-qa (accuracy over every column, pair and triple against the training rows, the holdout's own beside
    it; DCR share: synthetic rows closer to a training row than to a holdout row) and SDMetrics' QualityReport
    against the holdout, with what the same number of real training rows score beside it
    (`sdmetrics_training_rows`: the split's own noise, the score a faithful copy of the training distribution
    gets) and the score with identifiers judged as categories (`sdmetrics_ids_as_categories`, the metadata of
    runs before 2026-11-29, where only a system that copies training ids scores on them); and joint_scores
    (detection, train on synthetic) for `target`."""
    from mostlyai import qa

    synthetic = synthetic[list(training.columns)].astype(training.dtypes.to_dict(), errors="ignore")
    _, metrics = qa.report(syn_tgt_data=synthetic, trn_tgt_data=training, hol_tgt_data=holdout,
                           max_sample_size_embeddings=0, report_path=f"{folder}/qa.html")
    accuracy, distances = metrics.accuracy, metrics.distances
    by_values = sdtypes_from_values(training)
    types = with_detected_ids(by_values, training)
    ids = [name for name, kind in types.items() if kind == "id"]
    same_size = training.sample(n=min(len(synthetic), len(training)), random_state=0)
    scores = {"qa_accuracy": accuracy.overall, "qa_holdout_own": accuracy.overall_max,
              "qa_univariate": accuracy.univariate, "qa_bivariate": accuracy.bivariate,
              "qa_trivariate": accuracy.trivariate, "dcr_share": distances.dcr_share,
              "sdmetrics_quality": sdmetrics_quality(synthetic, holdout, types),
              "sdmetrics_training_rows": sdmetrics_quality(same_size, holdout, types)}
    if by_values != types:
        scores["sdmetrics_ids_as_categories"] = sdmetrics_quality(synthetic, holdout, by_values)
    scores |= seeded_dcr_shares(synthetic, training, holdout)
    scores |= joint_scores(synthetic, training, holdout, [name for name in training.columns if name not in ids], target)
    if ids:
        scores |= judged_without(ids, synthetic, training, holdout, folder)
    return scores


def joint_scores(synthetic: pd.DataFrame, training: pd.DataFrame, holdout: pd.DataFrame, columns: list[str],
                 target: str | None = None) -> dict:
    """The evaluator's own joint judges (pipeline/evaluate/metrics.py) on the judges' representation, identifiers
    left out: detection (a classifier telling the rows from the holdout, 2 x (1 - AUC) on every row) beside the
    real training rows' own, and train-on-synthetic / train-on-real on the holdout for `target` (default: the
    table's last column, or the one the caller names)."""
    import pyarrow as pa

    from pipeline.evaluate.driver import column_kinds
    from pipeline.evaluate.metrics import detection, prepare, utility

    tables = [pa.Table.from_pandas(frame[columns], preserve_index=False) for frame in (training, holdout, synthetic)]
    tables = [tables[0]] + [t.cast(tables[0].schema, safe=False) for t in tables[1:]]
    kinds = {name: kind for name, kind in column_kinds(tables[0].schema, {}).items() if kind != "id"}
    train, unseen, generated = prepare(tables, kinds)
    rows = max(len(frame) for frame in (training, holdout, synthetic))
    target = target or columns[-1]
    useful = utility(train, generated, unseen, target, 0)
    headline = "roc_auc" if "roc_auc" in useful.get("trtr", {}) else ("macro_f1" if useful["task"] ==
                                                                       "classification" else "r2")
    return {"detection": detection(unseen, generated, 0, rows), "detection_training_rows":
            detection(unseen, train, 0, rows), "tstr_target": target, "tstr_score": headline,
            "tstr": useful.get("tstr", {}).get(headline), "trtr": useful.get("trtr", {}).get(headline)}


def judged_without(columns: list[str], synthetic: pd.DataFrame, training: pd.DataFrame, holdout: pd.DataFrame,
                   folder: str) -> dict:
    """mostlyai-qa with identifier columns left out: the DCR share, and the accuracy with the holdout's own.

    The DCR share: mostlyai-qa maps a synthetic value that no real row holds (a fresh id) to one shared token, so
    every synthetic row sits at the same point in those columns, and whichever real row happens to lie nearest that
    point (in the training or the holdout sample) pulls the share towards 1 or 0 for all of them: a share about
    that one row, not about memorisation. The accuracy: mostlyai-qa scores a text-like column by one token sampled
    per value, so a fresh id (`2015-090000`, never a training id) scores by how its tokens happen to overlap the
    training ids' (`2015-017257`) in that column and in every pair and triple it is part of; without it, the
    accuracy reads how well the table's other columns and their relations were learned."""
    from mostlyai import qa

    _, metrics = qa.report(syn_tgt_data=synthetic.drop(columns=columns), trn_tgt_data=training.drop(columns=columns),
                           hol_tgt_data=holdout.drop(columns=columns), max_sample_size_embeddings=0,
                           report_path=f"{folder}/qa-without-ids.html")
    return {"dcr_share_without_ids": metrics.distances.dcr_share,
            "qa_accuracy_without_ids": metrics.accuracy.overall,
            "qa_holdout_own_without_ids": metrics.accuracy.overall_max}


DCR_DRAWS = 6  # seeded reference draws the DCR shares below average over


def seeded_dcr_shares(synthetic: pd.DataFrame, training: pd.DataFrame, holdout: pd.DataFrame) -> dict:
    """mostlyai-qa's DCR share, measured so that it can be read: its report draws the training and holdout rows it
    compares with from an unseeded global generator, and keeps the largest share over up to seven column groups,
    so one report moves by +-0.05 on a holdout of a few hundred rows and sits above 0.5 even for rows that are not
    synthetic at all. Here, over DCR_DRAWS seeded draws: `dcr_share_mean`, the synthetic rows against the whole
    holdout; and, with the holdout cut in two halves, `dcr_share_half` (the synthetic rows against the second
    half) beside `dcr_share_real_rows` (the first half's real unseen rows against the same second half, same
    sample size): what the metric gives rows that no model made."""
    first, second = holdout_halves(holdout)
    return {"dcr_share_mean": mean_dcr_share(synthetic, training, holdout),
            "dcr_share_half": mean_dcr_share(synthetic, training, second),
            "dcr_share_real_rows": mean_dcr_share(first, training, second)}


def holdout_halves(holdout: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The holdout's two halves (its rows are in the split's random order already)."""
    return holdout.iloc[: len(holdout) // 2], holdout.iloc[len(holdout) // 2:]


def mean_dcr_share(rows: pd.DataFrame, training: pd.DataFrame, reference: pd.DataFrame) -> float:
    """The share of `rows` closer to a training row than to a `reference` row, as mostlyai-qa's report computes
    it (its own sampling, embedding and distance functions, private in 1.x), over DCR_DRAWS seeded draws."""
    from mostlyai.qa._distances import calculate_dcr_share, calculate_distances
    from mostlyai.qa._sampling import prepare_data_for_embeddings

    shares = []
    for draw in range(DCR_DRAWS):
        np.random.seed(draw)  # qa draws its row samples and random column groups from numpy's global generator
        embedded = prepare_data_for_embeddings(syn_tgt_data=rows, trn_tgt_data=training, hol_tgt_data=reference,
                                               max_sample_size=None)
        distances = calculate_distances(syn_embeds=embedded[0], trn_embeds=embedded[1], hol_embeds=embedded[2])
        shares.append(calculate_dcr_share(distances["dcr_syn_trn"], distances["dcr_syn_hol"]))
    return float(np.mean(shares))


def main() -> None:
    import argparse

    import pyarrow.parquet as pq

    from pipeline.config import BUNDLED_DATA

    parser = argparse.ArgumentParser(description="DCR share of real unseen rows, per bundled table")
    parser.add_argument("--tables", nargs="+", default=list(CONDITIONS))
    args = parser.parse_args()
    print(f"| table | holdout rows | real unseen rows' DCR share against half the holdout (mean of {DCR_DRAWS} draws) |")
    print("|---|---:|---:|")
    for name in args.tables:
        training, holdout = (judge_frame(part) for part in split(pq.read_table(BUNDLED_DATA / f"{name}.parquet")))
        first, second = holdout_halves(holdout)
        print(f"| {name} | {len(holdout):,} | {mean_dcr_share(first, training, second):.3f} |", flush=True)


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore")
    main()
