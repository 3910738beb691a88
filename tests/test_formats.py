"""Values held in strings: dates, times, timestamps and numbers are found in every training value, modelled as what
they are and written back as the real ones are written; doubles keep their grain; the evaluator scores whether
generated strings are written like the real ones."""
import re
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.codec import TableEncoder, fit_table
from pipeline.config import BUNDLED_DATA, EncoderConfig
from pipeline.evaluate.formats import format_validity, shapes
from pipeline.privacy import PrivateFit


def fitted(columns: dict[str, list], **config) -> TableEncoder:
    table = pa.table(columns)
    return fit_table(table.to_batches(max_chunksize=max(1, table.num_rows // 3)), [], EncoderConfig(**config))


def decoded(encoder: TableEncoder, table: pa.Table, seed: int = 0) -> pa.Table:
    """Encode then decode the rows (NaN where the codec skips an element, as the model's output never is)."""
    x, _ = encoder.transform(table)
    return encoder.inverse_transform(np.nan_to_num(x), table.select(encoder.conditions), np.random.default_rng(seed))


def days(n: int, start: str = "2001-01-01") -> pa.Array:
    first = np.datetime64(start, "D").astype(np.int64)
    return pa.array(np.arange(first, first + n, dtype=np.int64).astype(np.int32), pa.int32()).cast(pa.date32())


@pytest.mark.parametrize("written, family, described", [
    (pc.strftime(days(400), "%Y-%m-%d"), "date", "date as %Y-%m-%d"),
    (pc.replace_substring_regex(pc.strftime(days(400), "%m/%d/%Y"), r"(^|/)0", r"\1"), "date",
     "date as %m/%d/%Y (no leading zeros)"),
    (pc.strftime(days(400), "%d.%m.%Y"), "date", "date as %d.%m.%Y"),
    (pc.strftime(pa.array(np.arange(400) * 3607 + 1_300_000_000, pa.timestamp("s")), "%Y-%m-%d %H:%M:%S"),
     "timestamp", "timestamp as %Y-%m-%d %H:%M:%S"),
    (pa.array([f"{h:02d}:{m:02d}" for h in range(24) for m in (0, 20, 50)] * 5), "time", "time as %H:%M"),
    (pa.array([f"${v:,.2f}" for v in np.random.default_rng(0).lognormal(7, 2, 400)]), "number",
     "number as $1,234.00"),
    (pa.array([f"{v:.1f}%" for v in np.random.default_rng(0).normal(5, 3, 400)]), "number", "number as 1234.0%"),
])
def test_a_string_column_of_dates_times_or_numbers_is_written_back_in_its_format(written, family, described):
    encoder = fitted({"value": written})
    assert encoder.kinds() == {"value": "formatted"} and encoder.formats() == {"value": described}
    back = decoded(encoder, pa.table({"value": written}))
    codec = encoder.codecs["value"]
    assert back.column("value").type == pa.string() and back.column("value").null_count == 0
    read = np.zeros(back.num_rows, dtype=bool)
    for fmt in codec.formats:
        read |= fmt.parse(back.column("value").combine_chunks())[1]
    assert read.all()  # every value written in the column's format, none _RARE_
    assert codec.family == family


def test_a_column_mixing_two_formats_keeps_their_shares():
    dates = days(600)
    written = pa.concat_arrays([pc.strftime(dates.slice(0, 450), "%Y-%m-%d"),
                                pc.strftime(dates.slice(450), "%d %b %Y")])
    encoder = fitted({"when": written})
    codec = encoder.codecs["when"]
    assert [f.pattern for f in codec.formats] == ["%Y-%m-%d", "%d %b %Y"]
    assert codec.shares == pytest.approx([0.75, 0.25])
    back = decoded(encoder, pa.table({"when": pa.concat_arrays([written] * 10)})).column("when").combine_chunks()
    iso = pc.strptime(back, "%Y-%m-%d", "s", error_is_null=True).is_valid()
    assert abs(np.asarray(iso).mean() - 0.75) < 0.03  # drawn by share, each value in one of the two formats
    assert pc.strptime(pc.filter(back, pc.invert(iso)), "%d %b %Y", "s", error_is_null=True).null_count == 0


@pytest.mark.parametrize("values", [
    ["02134", "10001", "94105"] * 100,            # postcodes with a leading zero are codes, not numbers
    ["Fair", "Cloudy", "Rain"] * 100,             # words
    [f"2020-01-{d:02d}" for d in range(1, 29)] * 10 + ["soon"] * 20,  # 7% not dates: not one format
    ["1", "7", "3bis", "7bis"] * 50,              # metro lines: numbers and codes
])
def test_strings_that_are_not_one_format_stay_strings(values):
    assert fitted({"value": values}).kinds()["value"] != "formatted"


def test_a_user_keeps_a_date_column_categorical_and_a_private_fit_never_looks():
    written = pc.strftime(days(400), "%Y-%m-%d")
    assert fitted({"d": written}).kinds()["d"] == "formatted"
    table = pa.table({"d": written})
    assert fit_table(table.to_batches(), [], EncoderConfig(), {"d": "categorical"}).kinds()["d"] == "categorical"
    assert fit_table(table.to_batches(), [], EncoderConfig(typed_strings=False)).kinds()["d"] == "id"  # as before
    # which format a column's values share is an exact statistic of them: a private fit keeps strings as strings
    private = fit_table(table.to_batches(), [], EncoderConfig(), private=PrivateFit(4.0, 1e-6, 7, ()))
    assert private.kinds()["d"] == "categorical"


def test_the_fit_does_not_depend_on_how_rows_were_batched():
    written = pa.table({"d": pc.strftime(pa.array(np.random.default_rng(1).integers(0, 2e9, 5000), pa.timestamp("s")),
                                         "%m/%d/%Y %H:%M")})
    hashes = np.arange(written.num_rows, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    from pipeline.codec import EncoderSketch

    def fit(size):
        sketch = None
        for start in range(0, written.num_rows, size):
            part = EncoderSketch(written.schema, [], EncoderConfig())
            part.update(written.slice(start, size), hashes[start:start + size])
            sketch = part if sketch is None else sketch.merge(part)
        return sketch.finalize().to_json()

    assert fit(5000) == fit(700)


def test_a_saved_formatted_codec_reads_back_and_decodes_the_same():
    written = pa.table({"d": pc.strftime(days(400), "%d/%m/%Y"), "t": [f"{h % 24:02d}:30" for h in range(400)]})
    encoder = fitted(written.to_pydict())
    again = TableEncoder.from_json(encoder.to_json())
    assert again.to_json() == encoder.to_json()
    assert decoded(again, written).equals(decoded(encoder, written))


def test_doubles_keep_their_grain():
    rng = np.random.default_rng(0)
    table = pa.table({"population": rng.integers(100, 100_000, 500).astype(np.float64),
                      "price": np.round(rng.lognormal(3, 1, 500), 2), "noise": rng.normal(size=500)})
    encoder = fitted(table.to_pydict())
    back = decoded(encoder, table)
    population, price = (back.column(n).to_numpy() for n in ("population", "price"))
    assert np.array_equal(population, np.round(population))
    assert np.allclose(price * 100, np.round(price * 100))
    assert encoder.codecs["noise"].decimals is None


def test_clock_times_written_hhmm_come_back_as_times():
    """flights' departure and arrival times are HHMM integers (517 = 05:17): read as minutes since midnight, any
    decoder output comes back a time of day (a plain integer model wrote 1996 and 984); hours (0-23), minutes,
    distances and delays stay numbers."""
    flights = pq.read_table(BUNDLED_DATA / "linked" / "flights.parquet")
    encoder = TableEncoder.from_json(fit_table(flights.to_batches(max_chunksize=7000), ["carrier"],
                                               EncoderConfig()).to_json())
    clocks = [name for name, kind in encoder.kinds().items() if kind == "clock"]
    assert clocks == ["dep_time", "sched_dep_time", "arr_time", "sched_arr_time"]
    assert encoder.formats()["dep_time"].startswith("clock times written HHMM")
    x, _ = encoder.transform(flights)
    noisy = np.nan_to_num(x) + np.random.default_rng(0).normal(0, 1, x.shape).astype(np.float32)
    back = encoder.inverse_transform(noisy, flights.select(["carrier"]), np.random.default_rng(0))
    for name in clocks:
        values = pc.drop_null(back.column(name)).to_numpy()
        assert back.column(name).type == flights.column(name).type and ((values % 100) < 60).all()
        assert 0 <= values.min() and values.max() <= 2400
    exact = encoder.inverse_transform(np.nan_to_num(x), flights.select(["carrier"]), np.random.default_rng(0))
    assert pc.mean(pc.equal(exact.column("sched_dep_time"), flights.column("sched_dep_time"))).as_py() > 0.9


def test_format_validity_scores_strings_written_unlike_the_real_ones():
    peeps = pq.read_table(BUNDLED_DATA / "strings" / "peeps.parquet")
    train, holdout = peeps.slice(0, 70), peeps.slice(70)
    broken = holdout.set_column(holdout.schema.get_field_index("dob"), "dob",
                                pa.array(["00674-02-73"] * holdout.num_rows))
    broken = broken.set_column(broken.schema.get_field_index("phone_number"), "phone_number",
                               pa.array(["541-0000674-241"] * holdout.num_rows))
    real_scores = format_validity(train, holdout, holdout)["columns"]
    scores = format_validity(train, holdout, broken)["columns"]
    assert scores["dob"]["checked_by"] == "%Y-%m-%d" and scores["dob"]["synthetic"] == 0.0
    assert real_scores["dob"]["synthetic"] == 1.0 == scores["dob"]["holdout"]
    assert scores["phone_number"]["checked_by"] == "shape" and scores["phone_number"]["synthetic"] == 0.0
    assert scores["gender"]["synthetic"] == scores["gender"]["holdout"] == 1.0
    assert shapes(pa.array(["03:00000:17", "Fugger Strasse 76"])).to_pylist() == ["99:99999:99", "Aa Aa 99"]


def test_fidelity_scores_a_date_string_as_a_date():
    """sp500's dates held in strings, each trading day once: a synthetic table of other days from the same years
    shares no value with the holdout, so as categories it would score near 0 (the evaluator read such a column
    at 0.06); scored as the dates they hold, its shape is nearly the real one."""
    from pipeline.evaluate.formats import as_typed, typed_columns
    from pipeline.evaluate.metrics import prepare, quality

    sp500 = pq.read_table(BUNDLED_DATA / "strings" / "sp500.parquet").select(["date", "close"])
    odd = np.random.default_rng(0).random(sp500.num_rows) < 0.5
    train, holdout = sp500.filter(pa.array(odd)), sp500.filter(pa.array(~odd))
    synthetic = train.slice(0, holdout.num_rows)  # other days than the holdout's
    kinds = {"date": "categorical", "close": "numeric"}
    typed = typed_columns(train, kinds)
    assert [fmt.describe() for fmt in typed["date"]] == ["%Y-%m-%d"] and "close" not in typed
    as_text = quality(*prepare([holdout, synthetic], kinds))["columns"]["date"]
    scored = prepare([as_typed(holdout, typed), as_typed(synthetic, typed)], kinds | {"date": "numeric"})
    assert as_text < 0.01 and quality(*scored)["columns"]["date"] > 0.98


# ---- personal data: names, e-mails, addresses and phone numbers from Faker, never from a training row ----------

def peeps_round_trip(seed: int = 0, **overrides):
    peeps = pq.read_table(BUNDLED_DATA / "strings" / "peeps.parquet")
    encoder = fit_table(peeps.to_batches(max_chunksize=40), ["gender"], EncoderConfig(), overrides or None)
    return peeps, encoder, decoded(encoder, peeps, seed)


def test_personal_columns_are_believable_agree_within_the_row_and_come_from_no_training_row():
    peeps, encoder, synthetic = peeps_round_trip()
    kinds = encoder.kinds()
    assert [name for name, kind in kinds.items() if kind == "personal"] == [
        "name_given", "name_family", "address", "city", "state_prov", "postcode", "email_addr", "phone_number"]
    assert kinds["dob"] == "formatted" and kinds["country"] == "categorical"
    rows = synthetic.to_pylist()
    assert not [row for row in rows if "_RARE_" in row.values()]  # state_prov's rare states were `_RARE_`
    # a state of the row's country, written as the real ones are (NSW, ON, CA), none where the country has none
    states = {"AUS": {"NSW", "QLD", "SA", "TAS", "VIC", "WA", "ACT", "NT"},
              "CAN": {"AB", "BC", "MB", "NB", "NL", "NS", "NT", "NU", "ON", "PE", "QC", "SK", "YT"}}
    for row in rows:
        assert row["state_prov"] is None or row["state_prov"] in states.get(row["country"], set()) or (
            row["country"] == "USA" and re.fullmatch("[A-Z]{2}", row["state_prov"])), row
    assert {row["state_prov"] is None for row in rows if row["country"] in states} == {False}
    for row in rows:
        assert row["name_given"].isalpha() or " " in row["name_given"] or "-" in row["name_given"], row
        assert not any(ch.isdigit() for ch in row["name_given"] + row["name_family"] + row["city"]), row
        local, _, domain = row["email_addr"].partition("@")
        assert domain == "example.com"  # the one domain k or more training rows share
        first, last = (unicodedata.normalize("NFKD", row[n]).encode("ascii", "ignore").decode().lower()
                       for n in ("name_given", "name_family"))
        assert local.count("_") == 1 and local[0] == first[0] and local[-1] == last[-1], row  # dieter_koenig@
        assert any(ch.isdigit() for ch in row["address"]) and "\n" not in row["address"], row
        assert sum(ch.isdigit() for ch in row["phone_number"]) >= 6, row
    # the row's country picks the locale: German rows get German-looking addresses
    german = [row for row in rows if row["country"] == "DEU"]
    assert german and sum(("straße" in r["address"].lower()) or ("platz" in r["address"].lower())
                          or ("weg" in r["address"].lower()) or ("gasse" in r["address"].lower())
                          or ("ring" in r["address"].lower()) or ("allee" in r["address"].lower()) for r in german) >= 1
    # and its gender picks the first names: the names given to men and to women barely overlap
    assert encoder.formats()["name_given"] == "first name from Faker, by the row's country and gender"
    men, women = ({r["name_given"] for r in rows if r["gender"] == sex} for sex in ("male", "female"))
    assert men and women and len(men & women) <= 0.1 * len(men | women), men & women
    stored = encoder.to_json()
    for column in ("name_given", "name_family", "address", "email_addr", "phone_number"):
        real = set(peeps.column(column).to_pylist())
        assert not [value for value in real if value and f'"{value}"' in stored], column  # no real one kept
    assert decoded(encoder, peeps, 0).equals(synthetic) and not decoded(encoder, peeps, 1).equals(synthetic)


def test_personal_columns_are_judged_by_their_format_not_as_categories_nobody_wrote():
    """Faker's names never equal a training name by design: scoring them as categories would read 0 and drag
    quality down (peeps: 0.23); the evaluator leaves them out of fidelity, as it does fresh ids, and the
    manifest says which they are."""
    from pipeline.config import DataConfig
    from pipeline.evaluate.driver import personal_columns, scored_kinds
    from pipeline.generate.sink import DatasetManifest

    peeps, encoder, _ = peeps_round_trip()
    manifest = DatasetManifest(personal_columns=encoder.personal_columns)
    kinds = scored_kinds(peeps.schema, DataConfig(path="x", conditions=["country"]), manifest)
    assert not set(encoder.personal_columns) & set(kinds) and {"dob", "country", "gender", "height_cm"} <= set(kinds)
    data = DataConfig(path="x", conditions=["country"])
    assert personal_columns(peeps.schema, data, manifest) == encoder.personal_columns  # format validity reads them
    declared = scored_kinds(peeps.schema, DataConfig(path="x", conditions=["country"],
                                                     columns={"name_given": "first_name"}), None)
    assert "name_given" not in declared and "name_family" in declared  # without a manifest: what the user said


def test_a_name_column_is_not_a_person_unless_the_user_says_so():
    towny = {"name": ["Addington Highlands", "Laurentian Valley", "Perth", "Oakville"] * 30}
    assert fitted(towny).kinds()["name"] != "personal"
    table = pa.table({"contact": [f"user{i}@mail{i % 3}.org" for i in range(60)],
                      "who": [f"Someone {i}" for i in range(60)]})
    encoder = fit_table(table.to_batches(), [], EncoderConfig(), {"who": "full_name"})
    assert encoder.kinds() == {"contact": "id", "who": "personal"}
    assert encoder.formats()["who"].startswith("full name from Faker (en_US)")
    kept = fit_table(table.to_batches(), [], EncoderConfig(locale="de_DE"), {"who": "categorical"})
    assert kept.kinds()["who"] == "categorical"
