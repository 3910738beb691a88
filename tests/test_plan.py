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
