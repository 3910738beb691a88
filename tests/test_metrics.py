"""The evaluator's scores on real Adult and digits rows: each one moves when the property it measures breaks."""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from scipy.stats import ks_2samp

from pipeline.evaluate.driver import column_kinds
from pipeline.evaluate.metrics import (ColumnStats, detection, invalid_counts, ks_complement, per_condition, prepare,
                                      privacy, quality, utility)
from pipeline.evaluate.plots import report_figures


@pytest.fixture(scope="module")
def adult_kinds(adult):
    return column_kinds(adult.schema, {})


@pytest.fixture(scope="module")
def halves(adult):
    """Two disjoint random halves of Adult: real rows the 'model' saw, and real rows it did not."""
    mask = np.random.default_rng(0).random(adult.num_rows) < 0.5
    return adult.filter(pa.array(mask)), adult.filter(pa.array(~mask))


def shuffled(table: pa.Table, seed: int = 0) -> pa.Table:
    """Every column permuted on its own: the same column shapes, no relation between columns left."""
    rng = np.random.default_rng(seed)
    return pa.table({name: table.column(name).take(pa.array(rng.permutation(table.num_rows)))
                     for name in table.column_names})


def test_a_table_against_itself_scores_one(adult, adult_kinds):
    real, synthetic = prepare([adult, adult], adult_kinds)
    scores = quality(real, synthetic)
    assert scores["overall"] == pytest.approx(1.0)
    assert set(scores["columns"]) == set(adult.column_names)
    assert len(scores["pairs"]) == 15 * 14 // 2


def test_ks_complement_matches_scipy(adult):
    rng = np.random.default_rng(1)
    real = adult["age"].to_numpy().astype(float)
    synthetic = real[rng.permutation(len(real))[:5000]] + rng.normal(0, 3, 5000)
    assert ks_complement(real, synthetic) == pytest.approx(1 - ks_2samp(real, synthetic).statistic)


def test_independent_columns_keep_shapes_but_lose_pair_trends(halves, adult_kinds):
    seen, unseen = halves
    faithful = quality(*prepare([unseen, seen], adult_kinds))
    broken = quality(*prepare([unseen, shuffled(seen)], adult_kinds))
    assert broken["column_shapes"] == pytest.approx(faithful["column_shapes"], abs=1e-9)
    assert faithful["column_pair_trends"] > 0.97
    assert broken["column_pair_trends"] < faithful["column_pair_trends"] - 0.05
    education = {tuple(p["columns"]): p["score"] for p in broken["pairs"]}[("education", "education-num")]
    assert education < 0.5  # a one-to-one relation, destroyed


def test_detection_tells_rows_whose_columns_were_drawn_apart_and_not_real_rows(halves, adult_kinds):
    """Real rows the 'model' saw against real rows it did not: a classifier cannot tell them (near 1). The same rows
    with every column permuted on its own keep every column's shape (the binned column scores stay near 1) but
    hold combinations no real row has (a 50-year-old child, a husband never married): detection falls."""
    seen, unseen = halves
    real, other = prepare([unseen, seen], adult_kinds)
    assert detection(real, other, seed=0) > 0.85
    real, scrambled = prepare([unseen, shuffled(seen)], adult_kinds)
    assert quality(real, scrambled)["column_shapes"] > 0.98 and detection(real, scrambled, seed=0) < 0.3
    assert detection(real.subset(np.arange(real.rows) < 40), scrambled, seed=0) is None  # too few rows to fold


def test_a_shifted_column_is_the_weakest(halves, adult_kinds):
    seen, unseen = halves
    older = seen.set_column(0, "age", pc.add(seen["age"], 10))
    scores = quality(*prepare([unseen, older], adult_kinds))
    assert min(scores["columns"], key=scores["columns"].get) == "age"


def test_per_condition_scores_catch_rows_under_the_wrong_condition(halves, adult_kinds):
    seen, unseen = halves
    swapped = seen.set_column(seen.schema.get_field_index("income"), "income",
                              pc.if_else(pc.equal(seen["income"], ">50K"), "<=50K", ">50K"))
    honest = per_condition(*prepare([unseen, seen], adult_kinds), ["income"])["income"]
    wrong = per_condition(*prepare([unseen, swapped], adult_kinds), ["income"])["income"]
    assert [e["value"] for e in honest] == ["<=50K", ">50K"]
    for good, bad in zip(honest, wrong):
        assert good["overall"] > 0.95
        assert bad["overall"] < good["overall"] - 0.05


def test_utility_on_real_rows_matches_and_a_scrambled_target_does_not(halves, adult_kinds):
    seen, unseen = halves
    train, test = seen.slice(0, 8000), unseen.slice(0, 4000)
    other = unseen.slice(4000, 8000)
    scrambled = other.set_column(other.schema.get_field_index("income"), "income",
                                 other["income"].take(pa.array(np.random.default_rng(0).permutation(8000))))
    real, same, noise, holdout = prepare([train, other, scrambled, test], adult_kinds)
    good = utility(real, same, holdout, "income", seed=0)
    bad = utility(real, noise, holdout, "income", seed=0)
    assert good["task"] == "classification" and good["trtr"]["accuracy"] > 0.8
    assert good["ratio"] == pytest.approx(1.0, abs=0.05)
    assert bad["tstr"]["roc_auc"] < 0.6 and bad["ratio"] < 0.8


def test_regression_target(halves, adult_kinds):
    seen, unseen = halves
    real, synthetic, holdout = prepare([seen.slice(0, 6000), seen.slice(6000, 6000), unseen.slice(0, 3000)], adult_kinds)
    result = utility(real, synthetic, holdout, "education-num", seed=0)
    assert result["task"] == "regression" and result["trtr"]["r2"] > 0.9  # education determines education-num


def test_privacy_flags_copied_training_rows(halves, adult_kinds):
    seen, unseen = halves
    train, copies, fresh, holdout = prepare([seen.slice(0, 10000), seen.slice(0, 2000), unseen.slice(0, 2000),
                                             unseen.slice(2000, 2000)], adult_kinds)
    leaked = privacy(train, copies, holdout)
    assert leaked["synthetic_exact_copies"] == 2000 and leaked["share_closer_than_holdout_p5"] == 1.0
    private = privacy(train, fresh, holdout)
    assert private["share_closer_than_holdout_p5"] < 0.12
    assert private["synthetic_exact_copy_share"] < 0.02
    assert private["holdout_dcr_median"] > 0


def test_validity_counts_values_outside_the_real_bounds_and_categories(adult, adult_kinds):
    real = ColumnStats.of_batch(adult.slice(0, 20000), adult_kinds).merge(
        ColumnStats.of_batch(adult.slice(20000), adult_kinds))
    assert real.rows == adult.num_rows and real.nulls["workclass"] == adult["workclass"].null_count
    assert real.low["age"] == pc.min(adult["age"]).as_py() and real.high["age"] == pc.max(adult["age"]).as_py()
    synthetic = adult.slice(0, 100)
    synthetic = synthetic.set_column(0, "age", pa.array([200] * 3 + [30] * 97, pa.int64()))
    synthetic = synthetic.set_column(synthetic.schema.get_field_index("race"), "race",
                                     pa.array(["Martian"] * 5 + ["White"] * 95))
    counts = invalid_counts(synthetic, adult_kinds, ColumnStats.from_dict(real.to_dict()))
    assert counts["age"] == 3 and counts["race"] == 5
    assert sum(counts.values()) == 8


def test_digits_images_count_one_column_per_pixel_and_get_a_grid(digits, tmp_path):
    kinds = column_kinds(digits.schema, {"digit": "categorical"})
    assert kinds == {"pixels": "list", "digit": "categorical"}
    real, synthetic = prepare([digits.slice(0, 900), digits.slice(900)], kinds)
    scores = quality(real, synthetic)
    assert set(scores["columns"]) == {"pixels", "digit"} and scores["overall"] > 0.85
    groups = per_condition(real, synthetic, ["digit"])["digit"]
    assert sorted(e["value"] for e in groups) == [str(d) for d in range(10)]
    report = {"columns": scores["columns"]}
    paths = [path for path, _ in report_figures(real, synthetic, kinds, ["digit"], report)]
    assert paths == ["histograms/pixels.png", "histograms/digit.png", "correlations_pixels.png", "images_pixels.png"]


def test_utility_skips_a_target_a_booster_cannot_split_with_a_one_line_reason(halves, adult_kinds):
    """A target with a class of one row, past the 10,000 rows where the booster holds out a stratified share for
    early stopping: scikit-learn refuses the split (listing every class); the evaluation reports why, in one line,
    instead of failing."""
    seen, unseen = halves
    train = seen.slice(0, 12000)
    occupation = train["occupation"].to_pylist()
    occupation[0] = "Astronaut"  # a class held by one row
    train = train.set_column(train.schema.get_field_index("occupation"), "occupation", pa.array(occupation))
    real, synthetic, holdout = prepare([train, train, unseen.slice(0, 2000)], adult_kinds)
    result = utility(real, synthetic, holdout, "occupation", seed=0)
    assert result["tstr"]["error"].startswith("cannot fit: ") and "\n" not in result["tstr"]["error"]
    assert "ratio" not in result
