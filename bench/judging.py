"""What the quality and privacy benchmarks share: one seeded split, one representation every system and judge
sees, and the two independent judges (mostlyai-qa and SDMetrics) on rows no system has seen.

Imported by bench/quality_bench.py and bench/privacy_bench.py (run from the repository root).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

# One natural condition column per bundled table (pipeline/data/README.md)
CONDITIONS = {"adult": ["income"], "digits": ["digit"], "pizzaplace": ["type"], "seattle-weather": ["weather"],
              "nuclides": ["is_stable"], "airports": ["state"], "penguins-raw": ["Species"], "sf-temps": ["date"]}
MAX_SYNTHETIC_ROWS = 20_000
FEW_VALUES = 10  # a numeric column with at most this many distinct values is judged as categories (digit 0-9)


def split(table: pa.Table, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """The seeded 80/20 split: every system trains on the first part; the second is the holdout none sees."""
    order = np.random.default_rng(seed).permutation(table.num_rows)
    cut = int(0.8 * table.num_rows)
    return table.take(order[:cut]), table.take(order[cut:])


def judge_frame(table: pa.Table) -> pd.DataFrame:
    """One representation for every system and both judges: times of day as seconds, dates as datetimes,
    decimals as floats, an image (fixed-size list) as one float column per pixel."""
    columns = {}
    for field in table.schema:
        column = table.column(field.name)
        if pa.types.is_time(field.type):
            column = column.cast(pa.int64()).cast(pa.float64())
            columns[field.name] = column.to_pandas() / {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[field.type.unit]
        elif pa.types.is_date(field.type):
            columns[field.name] = pd.to_datetime(column.to_pandas())
        elif pa.types.is_decimal(field.type):
            columns[field.name] = column.cast(pa.float64()).to_pandas()
        elif pa.types.is_fixed_size_list(field.type):
            pixels = column.combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1).astype(float)
            columns |= {f"{field.name}_{j}": pixels[:, j] for j in range(pixels.shape[1])}
        else:
            columns[field.name] = column.to_pandas()
    return pd.DataFrame(columns)


def sdtypes(training: pd.DataFrame) -> dict[str, str]:
    """SDMetrics' column types, decided from the training rows alone."""
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


def judge(synthetic: pd.DataFrame, training: pd.DataFrame, holdout: pd.DataFrame, folder: str) -> dict:
    """mostlyai-qa (accuracy over columns, pairs and triples against the training rows, the holdout's own beside
    it; DCR share: synthetic rows closer to a training row than to a holdout row) and SDMetrics' QualityReport
    against the holdout."""
    from mostlyai import qa
    from sdmetrics.reports.single_table import QualityReport

    synthetic = synthetic[list(training.columns)].astype(training.dtypes.to_dict(), errors="ignore")
    _, metrics = qa.report(syn_tgt_data=synthetic, trn_tgt_data=training, hol_tgt_data=holdout,
                           max_sample_size_embeddings=0, report_path=f"{folder}/qa.html")
    accuracy, distances = metrics.accuracy, metrics.distances
    types = sdtypes(training)
    as_text = {c: str for c, t in types.items() if t == "categorical"}
    report = QualityReport()
    report.generate(holdout.astype(as_text), synthetic.astype(as_text),
                    {"columns": {c: {"sdtype": t} for c, t in types.items()}}, verbose=False)
    scores = {"qa_accuracy": accuracy.overall, "qa_holdout_own": accuracy.overall_max,
              "qa_univariate": accuracy.univariate, "qa_bivariate": accuracy.bivariate,
              "qa_trivariate": accuracy.trivariate, "dcr_share": distances.dcr_share,
              "sdmetrics_quality": report.get_score()}
    ids = [name for name, kind in types.items() if kind == "id"]
    if ids:
        scores["dcr_share_without_ids"] = dcr_share_without(ids, synthetic, training, holdout, folder)
    return scores


def dcr_share_without(columns: list[str], synthetic: pd.DataFrame, training: pd.DataFrame, holdout: pd.DataFrame,
                      folder: str) -> float:
    """mostlyai-qa's DCR share with identifier-like columns left out. It maps a synthetic value that no real row
    holds (a fresh id) to one shared token, so every synthetic row sits at the same point in those columns, and
    whichever real row happens to lie nearest that point (in the training or the holdout sample) pulls the share
    towards 1 or 0 for all of them: a share about that one row, not about memorisation."""
    from mostlyai import qa

    _, metrics = qa.report(syn_tgt_data=synthetic.drop(columns=columns), trn_tgt_data=training.drop(columns=columns),
                           hol_tgt_data=holdout.drop(columns=columns), max_sample_size_embeddings=0,
                           report_path=f"{folder}/qa-without-ids.html")
    return metrics.distances.dcr_share
