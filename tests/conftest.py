import pyarrow.parquet as pq
import pytest

from pipeline.config import BUNDLED_DATA


@pytest.fixture(scope="session")
def adult():
    return pq.read_table(BUNDLED_DATA / "adult.parquet")


@pytest.fixture(scope="session")
def digits():
    return pq.read_table(BUNDLED_DATA / "digits.parquet")
