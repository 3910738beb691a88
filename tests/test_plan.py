"""Condition plans (pipeline/generate/plan.py) as a user sees them: the rows each combination gets."""
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import BUNDLED_DATA, EncoderConfig, GenerateConfig
from pipeline.codec import fit_table
from pipeline.generate.plan import build_plan


def test_a_proportional_plan_over_unique_dates_keeps_their_spread():
    """sf-temps conditioned on its hourly timestamp: every date is a combination seen once, so 20,000 rows over
    7,000 dates give each 2 or 3 rows; the extra rows spread over the year instead of going to its first months."""
    train = pq.read_table(BUNDLED_DATA / "sf-temps.parquet").slice(0, 7000)
    encoder = fit_table(train.to_batches(), ["date"], EncoderConfig())
    plan = build_plan(GenerateConfig(num_rows=20_000), encoder)
    dates = plan.rows(0, plan.num_rows)["date"]
    assert plan.num_rows == 20_000
    counts = pc.value_counts(dates).field("counts").to_numpy()
    assert len(counts) == 7000 and set(counts) == {2, 3}
    months = pc.month(dates).to_numpy()
    real_months = pc.month(train["date"]).to_numpy()
    share = lambda m: np.bincount(m, minlength=13)[1:] / len(m)  # noqa: E731
    assert np.abs(share(months) - share(real_months)).max() < 0.002


def test_dates_are_requested_by_value_native_or_held_in_strings():
    """A date condition requested by value, as a timestamp (sf-temps) or as a date string (sp500): in range it is
    planned as written; out of range or written another way is one line naming the fix."""
    import pytest

    from pipeline.errors import UserError

    temps = fit_table(pq.read_table(BUNDLED_DATA / "sf-temps.parquet").to_batches(), ["date"], EncoderConfig())
    plan = build_plan(GenerateConfig(conditions={"date": {"2010-03-01 05:00:00": 4}}), temps)
    assert plan.rows(0, 4)["date"].to_pylist()[0].isoformat() == "2010-03-01T05:00:00"
    with pytest.raises(UserError, match=r"date=2030-01-01 00:00:00 is outside the training range \[2010-01-01"):
        build_plan(GenerateConfig(conditions={"date": {"2030-01-01 00:00:00": 4}}), temps)
    sp500 = fit_table(pq.read_table(BUNDLED_DATA / "strings" / "sp500.parquet").to_batches(), ["date"],
                      EncoderConfig())
    plan = build_plan(GenerateConfig(conditions={"date": {"1999-12-31": 5, "2013-01-02": 3}}), sp500)
    assert plan.rows(0, 8)["date"].to_pylist() == ["1999-12-31"] * 5 + ["2013-01-02"] * 3
    with pytest.raises(UserError, match="date='31/12/1999' is not written as the training values are "
                                        r"\(date as %Y-%m-%d\); write it that way"):
        build_plan(GenerateConfig(conditions={"date": {"31/12/1999": 5}}), sp500)
    with pytest.raises(UserError, match=r"date=2030-01-01 is outside the training range \[1950-01-03, 2015-12-31\]"):
        build_plan(GenerateConfig(conditions={"date": {"2030-01-01": 5}}), sp500)
    everywhere = build_plan(GenerateConfig(num_rows=20_000), sp500).rows(0, 20_000)["date"]
    years = pc.year(pc.strptime(everywhere, "%Y-%m-%d", "s")).to_numpy()
    assert years.min() == 1950 and years.max() == 2015  # 16,607 dates, 10,000 kept: a spread, not the first
