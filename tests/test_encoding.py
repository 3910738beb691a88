import datetime as dt
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.config import BUNDLED_DATA, EncoderConfig
from pipeline.codec import EncoderSketch, PROTECTED_TOKEN, TableEncoder, fit_table, id_skeletons
from pipeline.errors import UserError


def fit(table, conditions, **overrides):
    """Fit without value protection (k=1) unless a test asks for it: round trips are then exact."""
    kinds = overrides.pop("kinds", None)
    overrides.setdefault("min_value_count", 1)
    return fit_table(table.to_batches(max_chunksize=5000), conditions, EncoderConfig(**overrides), kinds)


def round_trip(encoder, table):
    x, _ = encoder.transform(table)
    assert x.dtype == np.float32
    return encoder.inverse_transform(x, table.select(encoder.conditions))


def assert_same(back, table, float_tolerance=1e-4):
    assert back.schema == table.schema
    for name in table.column_names:
        original, decoded = table.column(name), back.column(name)
        if pa.types.is_temporal(original.type) and not pa.types.is_date(original.type):
            # fine clock units: z is float32, so a value between knots comes back within ~1e-7 of its range
            assert decoded.null_count == original.null_count
            as_int = pa.int32() if original.type.bit_width == 32 else pa.int64()
            np.testing.assert_allclose(decoded.cast(as_int).to_numpy(zero_copy_only=False).astype(float),
                                       original.cast(as_int).to_numpy(zero_copy_only=False).astype(float), rtol=1e-6)
        elif pa.types.is_floating(original.type):
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


@pytest.mark.parametrize("point_mass_share", [0.0, 0.01])
def test_digits_images_round_trip_as_64_floats(digits, point_mass_share):
    encoder = fit(digits, ["digit"], kinds={"digit": "categorical"}, point_mass_share=point_mass_share)
    assert encoder.c_dim == 10
    assert encoder.x_dim == 64 if not point_mass_share else encoder.x_dim > 64  # each pixel's common levels: classes
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


def test_a_timestamp_condition_carries_its_calendar_phases():
    """Hours a day apart share the time-of-day phase, hours a week apart the weekday too; the JSON round trip
    keeps the phases, and an encoder saved before them still loads with the condition width its model has."""
    base = dt.datetime(2024, 3, 1, 15)
    times = [base, base + dt.timedelta(days=1), base + dt.timedelta(days=7), base + dt.timedelta(hours=3)]
    table = pa.table({"t": pa.array(times, pa.timestamp("us")), "v": [1.0, 2.0, 3.0, 4.0]})
    encoder = fit(table, ["t"])
    c = encoder.encode_conditions(table)
    assert encoder.calendar == {"t": ["day", "week", "year"]} and c.shape == (4, encoder.c_dim)
    day, week = c[:, -6:-4], c[:, -4:-2]
    np.testing.assert_allclose(day[0], day[1], atol=1e-5)
    np.testing.assert_allclose(day[0], day[2], atol=1e-5)
    np.testing.assert_allclose(week[0], week[2], atol=1e-5)
    assert np.abs(day[0] - day[3]).max() > 0.5 and np.abs(week[0] - week[1]).max() > 0.5
    np.testing.assert_array_equal(TableEncoder.from_json(encoder.to_json()).encode_conditions(table), c)
    older = {key: value for key, value in encoder.to_dict().items() if key != "calendar"}
    assert TableEncoder.from_dict(older).encode_conditions(table).shape == (4, encoder.c_dim - 6)


def test_skewed_column_keeps_its_point_mass(adult):
    encoder = fit(adult, ["income"])
    x, _ = encoder.transform(adult)
    gain = encoder.codecs["capital-gain"]
    z, classes = (next(s for s in encoder.feature_spans if s.column == "capital-gain" and s.likelihood == likelihood)
                  for likelihood in ("gaussian", "softmax"))
    zeros = np.asarray(pc.equal(adult.column("capital-gain"), 0))
    assert zeros.mean() > 0.9 and 0.0 in gain.masses[0]
    assert np.isnan(x[zeros, z.start]).all()                   # a point-mass row has no z to fit...
    assert (x[zeros, classes.start + gain.masses[0].index(0.0)] == 1).all()  # ...it is its class
    between = x[~zeros, z.start][~np.isnan(x[~zeros, z.start])]
    assert abs(between).max() <= 4.0                            # bounded, not a z-score tail
    assert between.std() > 0.3                                   # the non-zero tail keeps its resolution


def test_noise_on_z_never_moves_a_point_mass(adult):
    """Sampling adds Gaussian noise to z: a point mass (hours-per-week is 47% forties, education-num 16 levels)
    must keep its exact share instead of leaking into its neighbours, and the values between masses stay values
    the column holds."""
    encoder = fit(adult, ["income"], min_value_count=5)
    x, _ = encoder.transform(adult)
    gaussian = [s.start for s in encoder.feature_spans if s.likelihood == "gaussian"]
    noisy = x.copy()
    noisy[:, gaussian] = np.nan_to_num(x[:, gaussian]) + np.random.default_rng(0).normal(0, 0.3, (len(x), len(gaussian)))
    back = encoder.inverse_transform(noisy, adult.select(["income"]))
    for name in ("hours-per-week", "education-num", "capital-gain"):
        codec = encoder.codecs[name]
        real, decoded = (np.asarray(t.column(name).to_numpy()) for t in (adult, back))
        assert codec.masses[0], name
        for mass in codec.masses[0]:
            assert (decoded == mass).mean() == pytest.approx((real == mass).mean(), abs=0.002), (name, mass)
        assert decoded.min() >= codec.low[0] and decoded.max() <= codec.high[0]


def test_every_level_of_a_few_level_column_is_a_point_mass_however_rare():
    """Pizzaplace's price takes 25 values; its XXL price (35.95) is 0.06% of the rows, below the 1% share. Left a
    sliver of z it came out of noisy sampling as its neighbours, and a generated table had no XXL price at all."""
    orders = pq.read_table(BUNDLED_DATA / "pizzaplace.parquet")
    encoder = fit(orders, ["type"], min_value_count=5)
    x, _ = encoder.transform(orders)
    price = encoder.codecs["price"]
    assert 35.95 in price.masses[0] and price.knots == [None]
    gaussian = [s.start for s in encoder.feature_spans if s.likelihood == "gaussian"]
    noisy = np.nan_to_num(x)
    noisy[:, gaussian] += np.random.default_rng(0).normal(0, 0.3, (len(x), len(gaussian)))  # as sampling does
    back = encoder.inverse_transform(noisy, orders.select(["type"])).column("price").to_numpy()
    real = orders.column("price").to_numpy()
    assert (back == 35.95).sum() == (real == 35.95).sum() == 28


def test_a_common_value_seen_by_fewer_than_k_rows_is_not_a_point_mass():
    values = [7.0] * 4 + [float(v) for v in range(100, 196)]  # 7.0 holds 4% of the rows, but only 4 of them
    encoder = fit(pa.table({"v": values, "c": ["a"] * 100}), ["c"], min_value_count=5)
    assert encoder.codecs["v"].masses == [[]]
    assert fit(pa.table({"v": values, "c": ["a"] * 100}), ["c"], min_value_count=4).codecs["v"].masses == [[7.0]]
    assert fit(pa.table({"v": values, "c": ["a"] * 100}), ["c"], min_value_count=4,
               point_mass_share=0.0).codecs["v"].masses == [[]]


def test_point_masses_round_trip_in_scalar_and_list_columns_and_an_older_encoder_still_loads():
    """A column whose every value is a point mass has no z at all; a list column (an 8x8 image's pixels, mostly
    0) gets point masses per element; an encoder saved before point masses loads and encodes as it did."""
    table = pa.table({"level": pa.array([1, 2, 3, None] * 25, pa.int16()),
                      "pixels": pa.array([[0, 0, v % 7] for v in range(100)], pa.list_(pa.int64(), 3)),
                      "c": ["a", "b"] * 50})
    encoder = fit(table, ["c"], min_value_count=5)
    level, pixels = encoder.codecs["level"], encoder.codecs["pixels"]
    assert level.masses == [[1.0, 2.0, 3.0]] and level.knots == [None]  # a softmax and a null flag, no z
    assert pixels.masses[:2] == [[0.0], [0.0]] and len(pixels.masses[2]) == 7
    assert_same(round_trip(encoder, table), table)
    document = fit(table, ["c"], min_value_count=5, point_mass_share=0.0).to_dict()
    document["format"] = "cvae-table-encoder/2"  # as an encoder saved before point masses
    for spec in document["codecs"].values():
        spec.pop("masses", None)
    old = TableEncoder.from_dict(document)
    assert old.codecs["level"].masses == [[]]
    np.testing.assert_array_equal(old.transform(table)[0], TableEncoder.from_dict(old.to_dict()).transform(table)[0])


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


def test_values_the_training_rows_lack_encode_without_error(adult):
    encoder = fit(adult, ["income"], min_value_count=5)
    other = adult.slice(0, 3).set_column(1, "workclass", pa.array(["Astronaut", "Private", "Astronaut"]))
    other = other.set_column(0, "age", pa.array([200, 40, -5], pa.int64()))
    x, _ = encoder.transform(other)
    workclass = next(s for s in encoder.feature_spans if s.column == "workclass")
    assert x[[0, 2], workclass.start: workclass.start + workclass.width].sum() == 0  # no class: no false signal
    age = encoder.codecs["age"]
    assert 40.0 in age.masses[0] and np.isnan(x[1, 0])                                     # 40 is a point mass
    assert abs(x[[0, 2], 0]).max() <= 4.0                                               # clipped to the bounds


def test_frequent_tail_goes_to_the_other_class_and_decodes_to_tail_values():
    values = [f"v{i}" for i in range(10) for _ in range(20 - i)]  # 10 values, each seen 11+ times
    table = pa.table({"cat": values, "c": ["a"] * len(values)})
    encoder = fit(table, ["c"], max_categories=4, min_value_count=5)
    span = encoder.feature_spans[0]
    assert span.width == 4  # 3 kept + "other": width stays bounded
    x, _ = encoder.transform(pa.table({"cat": ["v0", "v9", "never-seen"], "c": ["a", "a", "a"]}))
    assert x[:, 3].tolist() == [0.0, 1.0, 1.0]
    back = encoder.inverse_transform(x, pa.table({"c": ["a"] * 3}), np.random.default_rng(1))
    assert back.column("cat")[0].as_py() == "v0"
    assert {v.as_py() for v in back.column("cat")[1:]} <= {f"v{i}" for i in range(3, 10)}


def test_high_cardinality_width_is_capped():
    table = pa.table({"user": [f"user-{i % 5000}" for i in range(50_000)], "c": ["a", "b"] * 25_000})
    encoder = fit(table, ["c"], max_categories=50)
    assert encoder.kinds()["user"] == "categorical" and encoder.x_dim == 50


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
    ordered = np.sort(table["v"].to_numpy())
    assert codec.low[0] == pytest.approx(ordered[4])    # the 5th smallest: no single extreme value kept
    assert codec.high[0] == pytest.approx(ordered[-5])
    median_knot = np.interp(0.0, *codec._decode[0])
    assert median_knot == pytest.approx(1.0, rel=0.1)  # the lognormal median is 1


def test_bad_columns_are_clear_errors():
    with pytest.raises(UserError, match="'nested'.*cannot represent; add it to data.exclude"):
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


def torture_table(rows: int = 400, seed: int = 0) -> pa.Table:
    """Every column type the encoder models, with nulls in every column (generated, no real person in it)."""
    rng = np.random.default_rng(seed)
    nulls = rng.random(rows) < 0.1
    mostly_null = rng.random(rows) < 0.99

    def column(values, arrow_type, mask=nulls):
        return pa.array(np.asarray(values), arrow_type, mask=mask)

    ints = rng.integers(0, 100, rows)
    columns = {f"{t}": column(ints, getattr(pa, t)()) for t in
               ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")}
    columns |= {
        "float32": column(rng.normal(size=rows), pa.float32()),
        "float64": column(rng.lognormal(size=rows), pa.float64()),
        "decimal": pc.round(column(rng.uniform(0, 1000, rows), pa.float64()), 2).cast(pa.decimal128(9, 2)),
        "flag": column(rng.random(rows) < 0.3, pa.bool_()),
        "text": column(rng.choice(["red", "green", "blue"], rows), pa.string()),
        "large_text": column(rng.choice(["north", "south"], rows), pa.large_string()),
        "dictionary": column(rng.choice(["x", "y", "z"], rows), pa.string()).dictionary_encode(),
        "date32": column(rng.integers(18000, 19000, rows).astype(np.int32), pa.int32()).cast(pa.date32()),
        "date64": column(rng.integers(18000, 19000, rows) * 86_400_000, pa.int64()).cast(pa.date64()),
        "time32": column(rng.integers(0, 86_400, rows).astype(np.int32), pa.int32()).cast(pa.time32("s")),
        "time64": column(rng.integers(0, 86_400_000_000, rows), pa.int64()).cast(pa.time64("us")),
        "duration": column(rng.integers(0, 10**9, rows), pa.int64()).cast(pa.duration("ms")),
        "all_null": pa.nulls(rows, pa.float64()),
        "constant": column(np.full(rows, 7), pa.int32()),
        "mostly_null": column(rng.normal(size=rows), pa.float64(), mostly_null),
        "order_id": column([f"ord-{i}" for i in range(rows)], pa.string()),
        "customer_id": column(rng.permutation(rows) * 7 + 1000, pa.int64()),
        "condition": pa.array(rng.choice(["a", "b"], rows)),
    }
    for unit in ("s", "ms", "us", "ns"):
        stamps = rng.integers(1_500_000_000, 1_700_000_000, rows) * {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[unit]
        columns[f"ts_{unit}"] = column(stamps, pa.int64()).cast(pa.timestamp(unit))
        columns[f"ts_{unit}_tz"] = column(stamps, pa.int64()).cast(pa.timestamp(unit, tz="Europe/Paris"))
    return pa.table(columns)


def test_every_column_type_round_trips_with_its_arrow_type():
    table = torture_table()
    encoder = fit(table, ["condition"], min_value_count=5)
    x, _ = encoder.transform(table)
    for back in (encoder.inverse_transform(x, table.select(["condition"])),
                 TableEncoder.from_json(encoder.to_json()).inverse_transform(x, table.select(["condition"]))):
        assert back.schema == table.schema
    assert encoder.kinds()["order_id"] == encoder.kinds()["customer_id"] == "id"
    assert encoder.kinds()["int64"] == "integer" and encoder.kinds()["text"] == "categorical"
    exact = fit(table, ["condition"], kinds={"order_id": "categorical", "customer_id": "integer"}, max_categories=1000)
    x, _ = exact.transform(table)
    assert_same(exact.inverse_transform(x, table.select(["condition"])), table)  # k=1: every value comes back


def test_identifiers_are_fresh_unique_typed_and_deterministic():
    table = torture_table()
    encoder = fit(table, ["condition"], min_value_count=5)
    x = np.zeros((1000, encoder.x_dim), dtype=np.float32)
    conditions = pa.table({"condition": ["a"] * 1000})
    first = encoder.inverse_transform(x[:500], conditions.slice(0, 500), row_offset=0)
    second = encoder.inverse_transform(x[500:], conditions.slice(500), row_offset=500)
    for name in ("order_id", "customer_id"):
        generated = pa.concat_arrays([first.column(name).combine_chunks(), second.column(name).combine_chunks()])
        assert generated.type == table.schema.field(name).type
        assert len(pc.unique(generated)) == 1000                                  # unique within the dataset
        assert not pc.any(pc.is_in(generated, value_set=table.column(name).combine_chunks())).as_py()
    again = encoder.inverse_transform(x[500:], conditions.slice(500), row_offset=500)
    assert again.column("order_id").equals(second.column("order_id"))
    with pytest.raises(UserError, match="customer_id.*generate fewer rows"):
        encoder.check_capacity(2**63)


@pytest.mark.parametrize("table, column, condition", [("pizzaplace", "id", "type"), ("nuclides", "nuclide", "element"),
                                                      ("penguins-raw", "Individual ID", "Species")])
def test_string_ids_are_written_like_the_training_ids_and_never_equal_one(table, column, condition):
    """Pizzaplace's `2015-017257`, nuclides' `^{223}_{93}Np130`, penguins' `N12A1`: fresh ids keep the training
    ids' punctuation and runs of digits and letters, reuse the runs k ids share (the year, element symbols),
    and never equal a training id, across parts and on rerun."""
    real = pq.read_table(BUNDLED_DATA / f"{table}.parquet")
    encoder = fit(real, [condition], min_value_count=5)
    encoder = TableEncoder.from_json(encoder.to_json())
    assert encoder.kinds()[column] == "id"
    rows = 30_000
    x = np.zeros((rows, encoder.x_dim), dtype=np.float32)
    conditions = real.select([condition]).take(np.arange(rows) % real.num_rows)
    halves = [encoder.inverse_transform(x[:rows // 2], conditions.slice(0, rows // 2), row_offset=0),
              encoder.inverse_transform(x[rows // 2:], conditions.slice(rows // 2), row_offset=rows // 2)]
    ids = pa.concat_arrays([half.column(column).combine_chunks() for half in halves])
    training = real.column(column).combine_chunks()
    assert pc.count_distinct(ids).as_py() == rows
    assert not pc.any(pc.is_in(ids, value_set=training)).as_py()
    assert set(pc.unique(id_skeletons(ids)).to_pylist()) <= set(pc.unique(id_skeletons(training)).to_pylist())
    # every run of letters in a fresh id is one that k training ids have there, or a random one for the rest
    letters = pc.value_counts(pc.list_flatten(pc.split_pattern_regex(training, "[^A-Za-z]+")))
    shared = {v for v, n in zip(letters.field("values").to_pylist(), letters.field("counts").to_pylist()) if n >= 5}
    fresh_letters = pc.value_counts(pc.list_flatten(pc.split_pattern_regex(ids, "[^A-Za-z]+")))
    frequent = [v for v, n in zip(fresh_letters.field("values").to_pylist(), fresh_letters.field("counts").to_pylist())
                if n >= rows // 100 and v]
    assert set(frequent) <= shared
    again = encoder.inverse_transform(x[rows // 2:], conditions.slice(rows // 2), row_offset=rows // 2)
    assert again.column(column).equals(halves[1].column(column))


def test_a_run_fewer_than_k_ids_share_never_leaves_in_the_encoder_or_a_fresh_id():
    departments = ["HR"] * 300 + ["OPS"] * 198 + ["Kowalski"] * 2  # one person's name inside two ids
    table = pa.table({"badge": [f"{d}-{i:04d}" for i, d in enumerate(departments)], "c": ["a", "b"] * 250})
    encoder = fit(table, ["c"], min_value_count=5)
    assert "Kowalski" not in encoder.to_json()
    x = np.zeros((20_000, encoder.x_dim), dtype=np.float32)
    badges = encoder.inverse_transform(x, table.select(["c"]).take(np.arange(20_000) % 500)).column("badge")
    assert not pc.any(pc.match_substring(badges, "Kowalski")).as_py()
    prefixes = pc.value_counts(pc.list_element(pc.split_pattern(badges, "-"), 0))
    assert {"HR", "OPS"} <= set(prefixes.field("values").to_pylist())  # the shared runs, redrawn letters for the rest


@pytest.mark.parametrize("arrow_type", [pa.string(), pa.large_string(), pa.string_view()])
def test_sequential_ids_get_one_digit_more_in_their_own_type(arrow_type):
    """`T-0` ... `T-499` use every number up to their longest: fresh ones are one digit longer than any."""
    sequential = pa.table({"ticket": pa.array([f"T-{i}" for i in range(500)], arrow_type), "c": ["a", "b"] * 250})
    encoder = fit(sequential, ["c"], min_value_count=5)
    x = np.zeros((3, encoder.x_dim), dtype=np.float32)
    tickets = encoder.inverse_transform(x, sequential.select(["c"]).slice(0, 3)).column("ticket")
    assert tickets.type == arrow_type and tickets.to_pylist() == ["T-0000", "T-0001", "T-0002"]


def test_rare_values_and_extremes_never_reach_the_encoder_or_its_output():
    from pipeline.evaluate.audit import audit, protected_values

    rng = np.random.default_rng(3)
    names = [f"person-{i}" for i in range(40)]
    table = pa.table({"name": rng.choice(names[:5], 2000).tolist()[:1960] + names[:40],
                      "income": np.append(rng.normal(50_000, 10_000, 1999), 9_999_999.0),
                      "c": rng.choice(["a", "b"], 2000)})
    encoder = fit(table, ["c"], min_value_count=5)
    protected = protected_values(table, encoder)
    assert len(protected.categories["name"]) == 35 and protected.bounds["income"][1] < 9_999_999
    text = encoder.to_json()
    assert not any(f'"{name}"' in text for name in protected.categories["name"])
    codec = encoder.codecs["name"]
    x = np.zeros((3000, encoder.x_dim), dtype=np.float32)
    x[:, len(codec.categories)] = 1.0  # every row asks for "other": protected values become the token
    x[:, -1] = 10.0                    # and the largest income the model can express
    back = encoder.inverse_transform(x, pa.table({"c": ["a"] * 3000}), np.random.default_rng(0))
    assert set(back.column("name").to_pylist()) == {PROTECTED_TOKEN}
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "encoder.json").write_text(text)
        assert audit(protected, folder, back) == {"artifact_text": 0, "artifact_values": 0, "output_values": 0}
    frequent = fit(table, ["c"], min_value_count=5, rare_replacement="frequent")
    back = frequent.inverse_transform(x, pa.table({"c": ["a"] * 3000}), np.random.default_rng(0))
    assert set(back.column("name").to_pylist()) <= set(names[:5])


def test_a_condition_keeps_every_value_even_a_single_one(adult):
    encoder = fit(adult, ["native-country"], min_value_count=5)
    assert "Holand-Netherlands" in encoder.codecs["native-country"].categories
    assert encoder.kinds()["native-country"] == "categorical"
