"""The encoder fit as Ray runs it: per-block sketches merged on the driver, with sample keys from the row hash,
so the fitted encoder depends on which rows were seen, not on block boundaries, worker count or merge order."""
import itertools

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import BUNDLED_DATA, DataConfig, EncoderConfig
from pipeline.codec import EncoderSketch, fit_table
from pipeline.rowhash import sample_keys
from pipeline.errors import UserError


def mixed_table(rows: int = 3000, seed: int = 0) -> tuple[pa.Table, np.ndarray]:
    """Numbers with nulls, a list column, categories, and two condition columns with many tied combinations;
    plus one uint64 row hash per row."""
    rng = np.random.default_rng(seed)
    nulls = rng.random(rows) < 0.2
    table = pa.table({
        "skewed": pa.array(np.where(rng.random(rows) < 0.7, 0.0, rng.lognormal(size=rows)), mask=nulls),
        "count": pa.array(rng.integers(0, 50, rows), pa.int32()),
        "when": pa.array(rng.integers(0, 10**9, rows), pa.int64(), mask=rng.random(rows) < 0.05).cast(pa.timestamp("s")),
        "pair": pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=2 * rows)), 2,
                                                  mask=pa.array(rng.random(rows) < 0.1)),
        "colour": pa.array(rng.choice(["red", "green", "blue", "cyan"], rows), mask=rng.random(rows) < 0.1),
        "c1": rng.choice([f"g{i}" for i in range(40)], rows),
        "c2": pa.array(rng.integers(0, 30, rows), pa.int16()),
    })
    return table, rng.integers(0, 2**64, rows, dtype=np.uint64)


def sketch_of(table, row_hash, config, starts, order=None, seed=7):
    """One sketch per chunk [starts[i], starts[i+1]), merged in `order`."""
    bounds = [*starts, table.num_rows]
    parts = []
    for start, stop in itertools.pairwise(bounds):
        part = EncoderSketch(table.schema, ["c1", "c2"], config, seed=seed)
        part.update(table.slice(start, stop - start), row_hash[start:stop])
        parts.append(part)
    merged = EncoderSketch(table.schema, ["c1", "c2"], config, seed=seed)
    for i in order or range(len(parts)):
        merged.merge(parts[i])
    return merged


def test_sample_keys_are_uniform_and_depend_on_row_and_stream():
    hashes = np.arange(100_000, dtype=np.uint64)  # adversarial: consecutive hashes
    keys = sample_keys(hashes, 3)
    assert keys.dtype == np.float64 and keys.min() >= 0.0 and keys.max() < 1.0
    assert abs(keys.mean() - 0.5) < 0.01 and len(np.unique(keys)) == len(keys)
    assert np.array_equal(keys[500:600], sample_keys(hashes[500:600], 3))  # a row's key ignores its batch
    assert np.corrcoef(keys, sample_keys(hashes, 4))[0, 1] < 0.02          # another column: another sample


def test_batching_and_merge_order_do_not_change_the_encoder():
    table, row_hash = mixed_table()
    config = EncoderConfig(sample_size=100, min_value_count=3, quantiles=50)  # the bottom-k sample drops rows
    one = sketch_of(table, row_hash, config, [0])
    batched = EncoderSketch(table.schema, ["c1", "c2"], config, seed=7)
    for start in range(0, table.num_rows, 37):
        batched.update(table.slice(start, 37), row_hash[start: start + 37])
    rng = np.random.default_rng(1)
    starts = [0, *sorted(rng.choice(np.arange(1, table.num_rows), 12, replace=False).tolist())]
    scattered = sketch_of(table, row_hash, config, starts, order=rng.permutation(len(starts)).tolist())
    reverse = sketch_of(table, row_hash, config, list(range(0, table.num_rows, 500)), order=list(range(5, -1, -1)))
    assert one.sketches["skewed"].values > one.sketches["skewed"].capacity  # the sample really is a subset
    expected = one.finalize(["dropped"]).to_json()
    for other in (batched, scattered, reverse):
        assert other.finalize(["dropped"]).to_json() == expected
    for name in ("skewed", "pair"):
        np.testing.assert_array_equal(np.sort(scattered.sketches[name].keys), np.sort(one.sketches[name].keys))
    assert sketch_of(table, row_hash, config, [0], seed=8).finalize().to_json() != one.finalize().to_json()


def test_keys_follow_the_non_null_rows():
    """Nulls are dropped before sampling: each kept value keeps its own row's key."""
    table, row_hash = mixed_table()
    config = EncoderConfig(sample_size=100)
    with_nulls = EncoderSketch(table.schema, ["c1", "c2"], config, seed=7)
    with_nulls.update(table, row_hash)
    valid = np.asarray(table.column("skewed").is_valid())
    dense = EncoderSketch(table.schema, ["c1", "c2"], config, seed=7)
    dense.update(table.filter(pa.array(valid)), row_hash[valid])
    a, b = with_nulls.sketches["skewed"], dense.sketches["skewed"]
    assert a.nulls > 0 and b.nulls == 0
    np.testing.assert_array_equal(a.sample[np.argsort(a.keys)], b.sample[np.argsort(b.keys)])
    values = table.column("skewed").to_numpy(zero_copy_only=False)[valid]
    expected = sample_keys(row_hash[valid], a.seed)
    keep = np.argsort(expected)[:a.capacity]
    np.testing.assert_array_equal(np.sort(a.sample[:, 0]), np.sort(values[keep]))


def adult_dataset(blocks: int):
    from pipeline.source import read_table
    from pipeline.storage import filesystem

    path = str(BUNDLED_DATA / "adult.parquet")
    fs, _ = filesystem(path)
    dataset = read_table(fs, [path], pq.read_schema(path).names).repartition(blocks).materialize()
    assert dataset.num_blocks() == blocks
    return dataset


@pytest.mark.slow
def test_distributed_fit_ignores_block_count_and_equals_a_sequential_fit(ray_cluster):
    from pipeline.source import fit_encoder, plan_rules, training_rows

    schema = pq.read_schema(BUNDLED_DATA / "adult.parquet")
    data = DataConfig(path=str(BUNDLED_DATA / "adult.parquet"), conditions=["income", "native-country"],
                      exclude=[], holdout_fraction=0.1)
    config = EncoderConfig(sample_size=2000)  # far below the training rows: the merge decides the sample
    one, seven = adult_dataset(1), adult_dataset(7)
    fitted = [fit_encoder(ds, schema, data, config, seed=3).to_json() for ds in (one, seven)]
    assert fitted[0] == fitted[1]

    rules = plan_rules(seven, schema, data, config, 3, private=False)  # found rules reparametrise what is sketched
    assert plan_rules(one, schema, data, config, 3, private=False).to_dict() == rules.to_dict() and rules.applied
    sequential = EncoderSketch(schema, data.conditions, config, data.columns, seed=3, rules=rules)
    for batch in seven.iter_batches(batch_format="pyarrow", batch_size=5000):
        rows, row_hash = training_rows(batch, schema, 3, data.holdout_fraction)
        sequential.update(rows, row_hash)
    assert 0.85 * 48842 < sequential.sketches["age"].rows < 0.95 * 48842  # the training split only
    assert sequential.finalize(data.exclude).to_json() == fitted[0]


@pytest.mark.slow
def test_distributed_fit_errors_are_the_drivers(ray_cluster, tmp_path):
    from pipeline.source import fit_encoder, read_table
    from pipeline.storage import filesystem

    path = str(tmp_path / "nan.parquet")
    pq.write_table(pa.table({"v": [1.0, float("nan")] * 50, "c": ["a", "b"] * 50}), path)
    fs, _ = filesystem(path)
    schema = pq.read_schema(path)
    with pytest.raises(UserError, match="'missing' is not in the table"):  # on the driver, before any task
        fit_encoder(read_table(fs, [path], schema.names), schema, DataConfig(path=path, conditions=["missing"]),
                    EncoderConfig(), 0)
    with pytest.raises(UserError, match="'v' holds NaN") as raised:  # in a Ray task, raised unwrapped
        fit_encoder(read_table(fs, [path], schema.names), schema, DataConfig(path=path, conditions=["c"]),
                    EncoderConfig(), 0)
    assert type(raised.value) is UserError


@pytest.mark.slow
@pytest.mark.parametrize("policy, table_bytes, kept", [("auto", 1, {"train", "holdout"}),
                                                       ("auto", 10 ** 15, {"holdout"}),
                                                       ("always", 10 ** 15, {"train", "holdout"}),
                                                       ("never", 1, set())])
def test_a_table_too_big_to_keep_streams_its_training_split_and_keeps_its_holdout(ray_cluster, policy, table_bytes,
                                                                                   kept):
    """What stays in the object store (computed once) and what is read again every epoch, by the table's size:
    a table too big to keep still computes its holdout once, so an epoch reads the files only for training."""
    from ray.data.dataset import MaterializedDataset

    from pipeline.source import cache_splits, encoded_splits

    encoder = fit_table(pq.read_table(BUNDLED_DATA / "adult.parquet").to_batches(), ["income"], EncoderConfig())
    encoder_ref = ray_cluster.put(encoder.to_json())
    splits = cache_splits(encoded_splits(adult_dataset(3), encoder_ref, seed=0, fraction=0.1), table_bytes, policy)
    assert {name for name, ds in splits.items() if isinstance(ds, MaterializedDataset)} == kept
    rows = {name: ds.count() for name, ds in splits.items()}
    assert rows["train"] + rows["holdout"] == 48842 and 0.08 < rows["holdout"] / 48842 < 0.12
