import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.config import EncoderConfig
from pipeline.encoding import EncoderSketch, TableEncoder
from pipeline.errors import UserError


def fit(table, conditions, **overrides):
    kinds = overrides.pop("kinds", None)
    return TableEncoder.fit(table.to_batches(max_chunksize=5000), conditions, EncoderConfig(**overrides), kinds)


def round_trip(encoder, table):
    x, _ = encoder.transform(table)
    assert x.dtype == np.float32
    return encoder.inverse_transform(x, table.select(encoder.conditions))


def assert_same(back, table, float_tolerance=1e-4):
    assert back.schema == table.schema
    for name in table.column_names:
        original, decoded = table.column(name), back.column(name)
        if pa.types.is_floating(original.type):
            assert decoded.null_count == original.null_count
            np.testing.assert_allclose(decoded.to_numpy(zero_copy_only=False), original.to_numpy(zero_copy_only=False),
                                       rtol=float_tolerance, atol=float_tolerance)
        else:
            assert decoded.equals(original), name


def test_adult_round_trip_is_exact(adult):
    encoder = fit(adult, ["income"])
    assert_same(round_trip(encoder, adult), adult)
    assert encoder.c_dim == 2
    # nulls of workclass/occupation/native-country survive as nulls
    assert round_trip(encoder, adult).column("workclass").null_count == 2799


def test_digits_images_round_trip_as_64_floats(digits):
    encoder = fit(digits, ["digit"], kinds={"digit": "categorical"})
    assert encoder.x_dim == 64 and encoder.c_dim == 10
    back = round_trip(encoder, digits)
    assert back.schema.field("pixels").type == pa.list_(pa.float32(), 64)
    assert back.column("pixels").equals(digits.column("pixels"))


def test_json_round_trip_gives_the_same_encoder(adult):
    encoder = fit(adult, ["income", "sex"])
    loaded = TableEncoder.from_json(encoder.to_json())
    x, c = encoder.transform(adult)
    x2, c2 = loaded.transform(adult)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(c, c2)
    assert loaded.inverse_transform(x, adult.select(["income", "sex"])).equals(round_trip(encoder, adult))


def test_skewed_column_keeps_its_point_mass(adult):
    encoder = fit(adult, ["income"])
    x, _ = encoder.transform(adult)
    gain = next(s for s in encoder.feature_spans if s.column == "capital-gain")
    zeros = np.asarray(pc.equal(adult.column("capital-gain"), 0))
    assert zeros.mean() > 0.9
    assert len(np.unique(x[zeros, gain.start])) == 1          # the mass is one point in z
    assert abs(x[:, gain.start]).max() <= 4.0                  # bounded, not a z-score tail
    spread = x[~zeros, gain.start]
    assert spread.std() > 0.3                                  # the non-zero tail keeps its resolution


def test_condition_distribution_is_recorded(adult):
    encoder = fit(adult, ["income", "race"])
    counts = {tuple(entry["values"]): entry["count"] for entry in encoder.condition_distribution}
    assert sum(counts.values()) == adult.num_rows
    assert counts[(">50K", "White")] == adult.filter(
        pc.and_(pc.equal(adult["income"], ">50K"), pc.equal(adult["race"], "White"))).num_rows


def test_conditions_are_separate_from_features(adult):
    encoder = fit(adult, ["income"])
    assert "income" not in encoder.features
    assert {s.column for s in encoder.feature_spans} == set(adult.column_names) - {"income"}
    assert {s.column for s in encoder.condition_spans} == {"income"}


def test_edge_cases_round_trip():
    table = pa.table({
        "all_null_text": pa.nulls(4, pa.string()),
        "all_null_int": pa.nulls(4, pa.int32()),
        "null_type": pa.nulls(4),
        "constant": pa.array([7, 7, 7, 7], pa.int16()),
        "constant_float": pa.array([2.5] * 4, pa.float64()),
        "flag": pa.array([True, False, None, True]),
        "dict": pa.array(["a", "b", "a", None]).dictionary_encode(),
        "small": pa.array([1.5, None, -3.25, 1e6], pa.float32()),
        "when": pa.array([dt.datetime(2024, 1, 1), None, dt.datetime(2025, 6, 30, 12), dt.datetime(2024, 1, 1)],
                         pa.timestamp("us")),
        "day": pa.array([dt.date(2024, 1, 1), dt.date(2024, 1, 2), None, dt.date(1999, 12, 31)], pa.date32()),
        "unsigned": pa.array([0, 2**40, 5, None], pa.uint64()),
        "c": ["x", "y", "x", "y"],
    })
    encoder = fit(table, ["c"])
    assert_same(round_trip(encoder, table), table)
    assert_same(round_trip(TableEncoder.from_json(encoder.to_json()), table), table)


def test_single_row_table():
    table = pa.table({"a": [3], "b": ["only"], "c": [1.25]})
    encoder = fit(table, ["b"])
    assert_same(round_trip(encoder, table), table)


def test_unseen_category_is_a_clear_error_by_default(adult):
    encoder = fit(adult, ["income"])
    other = adult.slice(0, 3).set_column(1, "workclass", pa.array(["Astronaut", "Private", "Astronaut"]))
    with pytest.raises(UserError, match=r"'workclass'.*2 value\(s\) not seen.*Astronaut.*encoder.unseen=other"):
        encoder.transform(other)


def test_unseen_category_goes_to_rare_bucket_when_configured():
    values = [f"v{i}" for i in range(10) for _ in range(10 - i)]  # 10 values, decreasing frequency
    table = pa.table({"cat": values, "c": ["a"] * len(values)})
    encoder = fit(table, ["c"], max_categories=4, unseen="other")
    span = encoder.feature_spans[0]
    assert span.width == 4  # 3 kept + the rare bucket: width stays bounded
    x, _ = encoder.transform(pa.table({"cat": ["v0", "v9", "never-seen"], "c": ["a", "a", "a"]}))
    assert x[:, 3].tolist() == [0.0, 1.0, 1.0]
    back = encoder.inverse_transform(x, pa.table({"c": ["a"] * 3}), np.random.default_rng(1))
    assert back.column("cat")[0].as_py() == "v0"
    assert {v.as_py() for v in back.column("cat")[1:]} <= {f"v{i}" for i in range(3, 10)}


def test_high_cardinality_width_is_capped():
    table = pa.table({"id": [f"user-{i}" for i in range(20_000)], "c": ["a", "b"] * 10_000})
    encoder = fit(table, ["c"], max_categories=50)
    assert encoder.x_dim == 50


def test_integer_categorical_when_told(digits):
    encoder = fit(digits, ["digit"], kinds={"digit": "categorical"})
    assert encoder.codecs["digit"].categories and sorted(encoder.codecs["digit"].categories) == list(range(10))
    with pytest.raises(UserError, match="data.columns.pixels"):
        fit(digits, ["digit"], kinds={"pixels": "categorical"})


def test_fit_memory_is_bounded_and_sketches_merge():
    rng = np.random.default_rng(0)
    table = pa.table({"v": rng.lognormal(size=300_000), "c": rng.choice(["a", "b"], 300_000)})
    config = EncoderConfig(sample_size=1000)
    halves = [EncoderSketch(table.schema, ["c"], config, seed=s) for s in (1, 2)]
    for sketch, part in zip(halves, (table.slice(0, 150_000), table.slice(150_000))):
        for batch in part.to_batches(max_chunksize=10_000):
            sketch.update(batch)
    assert halves[0].sketches["v"].sample.shape == (1000, 1)
    encoder = halves[0].merge(halves[1]).finalize()
    codec = encoder.codecs["v"]
    assert codec.low[0] == pytest.approx(table["v"].to_numpy().min())
    assert codec.high[0] == pytest.approx(table["v"].to_numpy().max())
    median_knot = np.interp(0.0, *codec._decode[0])
    assert median_knot == pytest.approx(1.0, rel=0.1)  # the lognormal median is 1


def test_bad_columns_are_clear_errors():
    with pytest.raises(UserError, match="'nested'.*cannot model"):
        fit(pa.table({"nested": [[1, 2], [3]], "c": ["a", "b"]}), ["c"])
    with pytest.raises(UserError, match="'missing' is not in the table"):
        fit(pa.table({"a": [1], "c": ["x"]}), ["missing"])
    with pytest.raises(UserError, match="'c' is entirely null"):
        fit(pa.table({"a": [1, 2], "c": pa.nulls(2, pa.string())}), ["c"])
    with pytest.raises(UserError, match="NaN"):
        fit(pa.table({"a": [1.0, float("nan")], "c": ["x", "y"]}), ["c"])
    with pytest.raises(UserError, match="no rows"):
        fit(pa.table({"a": pa.array([], pa.int64()), "c": pa.array([], pa.string())}), ["c"])


def test_tampered_encoder_json_is_refused(adult):
    with pytest.raises(UserError, match="not a cvae-table-encoder"):
        TableEncoder.from_json('{"format": "pickle"}')
    data = fit(adult, ["income"]).to_dict()
    del data["codecs"]["age"]
    with pytest.raises(UserError, match="malformed"):
        TableEncoder.from_dict(data)
