"""Real tables nobody tuned the model for, with the defaults and one condition column: each table's codecs, model
and sampling in process (nuclides also end to end, as a person runs `cvae run`: tests/test_console.py). The output
must have the input's schema, the requested rows and conditions, and no protected value anywhere (artifact or
rows)."""
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import torch

from conftest import base_overrides
from pipeline.artifact import save_artifact
from pipeline.cli import main
from pipeline.codec import TableEncoder, fit_table
from pipeline.config import BUNDLED_DATA, EncoderConfig, GenerateConfig, ModelConfig
from pipeline.evaluate.audit import audit, protected_values, training_split
from pipeline.generate.plan import build_plan
from pipeline.model.cvae import build_model
from pipeline.model.latent_prior import ROWS_PER_COMPONENT, collect_codes, fit_mixture
from pipeline.model.sampling import synthesize
from pipeline.train.worker import run_epoch
from pipeline.rowhash import ROW_HASH, in_holdout
from pipeline.source import read_table
from pipeline.storage import filesystem

TABLES = {  # table -> a natural condition column (README of the bundled data)
    "pizzaplace": "type",
    "airports": "state",
    "nuclides": "is_stable",
    "penguins-raw": "Species",
    "seattle-weather": "weather",
    "sf-temps": "date",
    "strings/gibraltar": "condition",
    "strings/peeps": "gender",
    "strings/sp500": "date",  # a date held in a string conditions by value, as sf-temps' timestamp does
    "linked/flights": "carrier",
}
CLOCKS = {"linked/flights": ["dep_time", "sched_dep_time", "arr_time", "sched_arr_time"]}  # HHMM integers
FORMATTED = {  # dates, times and numbers held in strings: the formats every generated value must parse in
    "strings/gibraltar": {"date": "%Y-%m-%d", "time": "%H:%M"},
    "strings/peeps": {"dob": "%Y-%m-%d"},
    "strings/sp500": {"date": "%Y-%m-%d"},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TABLES))
def test_every_real_table_round_trips_its_types_and_leaks_nothing(name, ray_cluster, tmp_path):
    """Each bundled table through the same codecs, model and sampling `cvae run` uses, in this process: the
    training split as cvae splits it, the encoder fitted on it, a few epochs of the worker's own step, the latent
    mixture, a saved model artifact, 3,000 proportional rows; then the same checks as the end-to-end runs."""
    condition = TABLES[name]
    real = pq.read_table(BUNDLED_DATA / f"{name}.parquet")
    train = training_split(str(BUNDLED_DATA / f"{name}.parquet"), real.column_names, seed=0, fraction=0.1)
    encoder = fit_table(train.to_batches(max_chunksize=5000), [condition], EncoderConfig())
    x, c = (torch.from_numpy(m) for m in encoder.transform(train))
    torch.manual_seed(0)
    model = build_model(encoder.x_dim, encoder.c_dim, encoder.feature_spans, ModelConfig(hidden=[64, 64], latent_dim=8))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        order = torch.randperm(len(x))
        run_epoch(model, optimizer, ((x[order[i:i + 500]], c[order[i:i + 500]]) for i in range(0, len(x), 500)), 1.0)
    mixture = fit_mixture(*collect_codes(model, [(x, c)], len(x), 0), ModelConfig().latent_mixture, 0)
    model = model if mixture is None else model.with_mixture(mixture)
    save_artifact(tmp_path / "model", model, encoder.to_json())
    plan = build_plan(GenerateConfig(num_rows=3000, seed=0), encoder)
    synthetic = pa.concat_tables(synthesize(model, encoder, plan.rows(start, start + 1000), seed=start, row_offset=start)
                                 for start in (0, 1000, 2000))
    assert_believable_and_safe(real, train, synthetic, condition, tmp_path / "model")
    for column in CLOCKS.get(name, []):  # every value a time of day (no 1996, no 984), in the real range
        assert encoder.kinds()[column] == "clock", encoder.kinds()
        values = pc.drop_null(synthetic.column(column)).to_numpy()
        assert len(values) and ((values % 100) < 60).all() and values.min() >= 0 and values.max() <= 2400, column
    for column, pattern in FORMATTED.get(name, {}).items():
        assert encoder.kinds()[column] == "formatted", encoder.kinds()
        written = pc.drop_null(synthetic.column(column))
        assert len(written) > 0 and synthetic.column(column).type == real.column(column).type
        parsed = pc.strptime(written, pattern, "s", error_is_null=True)  # every value a date or time, none _RARE_
        assert parsed.null_count == 0, pc.filter(written, pc.is_null(parsed))[:5]
        assert pc.all(pc.equal(pc.strftime(parsed, pattern), written)).as_py()  # written as the real ones are
        low, high = (pc.strptime(pc.min_max(real.column(column))[end], pattern, "s") for end in ("min", "max"))
        assert low.as_py() <= pc.min(parsed).as_py() and pc.max(parsed).as_py() <= high.as_py()
        if column == condition:  # 16,000 dates seen once each, 10,000 kept: a spread of them, not the earliest
            assert pc.max(parsed).as_py() - pc.min(parsed).as_py() > 0.9 * (high.as_py() - low.as_py())


def assert_believable_and_safe(real, train, synthetic, condition, model_dir):
    """The input's schema, requested conditions only, no protected value in the model's files or the rows, a latent
    mixture for each condition value with enough rows, fresh unique ids."""
    assert [(f.name, f.type) for f in synthetic.schema] == [(f.name, f.type) for f in real.schema]
    assert synthetic.num_rows == 3000
    seen = pc.unique(train.column(condition).combine_chunks())
    assert pc.all(pc.is_in(synthetic.column(condition), value_set=seen)).as_py()
    encoder = TableEncoder.from_json(next(model_dir.rglob("encoder.json")).read_text())
    protected = protected_values(train, encoder)
    assert audit(protected, model_dir, synthetic) == {"artifact_text": 0, "artifact_values": 0, "output_values": 0}
    # the latent mixture is fitted for every condition value with enough training rows (sf-temps conditions on
    # an hourly timestamp: no value has, so generation draws from p(z|c) there)
    combinations, components = json.loads(next(model_dir.rglob("model.json")).read_text())["mixture_size"]
    many = pc.value_counts(train.column(condition)).field("counts").to_numpy() >= ROWS_PER_COMPONENT
    assert combinations == many.sum() and components >= combinations, (combinations, components)
    for column in encoder.id_columns:  # fresh, unique, never a real value
        generated = pc.drop_null(synthetic.column(column))
        assert len(pc.unique(generated)) == len(generated)
        assert not pc.any(pc.is_in(generated, value_set=pc.unique(real.column(column).combine_chunks()))).as_py()


@pytest.mark.slow
def test_a_rare_condition_value_can_be_requested_by_name(trained_adult, rare_training_combo, workdir):
    """Conditions keep every value: the rarest country in the training split (one or two rows) still comes back,
    in every row."""
    overrides, outcome = trained_adult
    income, country, _ = rare_training_combo
    args = ["generate"]
    for item in [*overrides, f"generate.model_uri={outcome.model_uri}", f"generate.output={workdir / 'rare'}",
                 f"generate.conditions=[{{income: '{income}', native-country: {country}, count: 500}}]"]:
        args += ["--set", item]
    assert main(args) == 0
    table = pq.read_table(workdir / "rare")
    assert table.num_rows == 500 and set(table.column("native-country").to_pylist()) == {country}


@pytest.mark.slow
def test_left_out_columns_and_every_type_survive_a_run(ray_cluster, mlflow_db, workdir, capsys):
    """The torture table (every modelled type, nulls everywhere) plus columns the model cannot represent."""
    from test_encoding import torture_table

    table = torture_table(rows=3000)
    table = table.append_column("nested", pa.array([{"a": i} for i in range(3000)]))
    table = table.append_column("blob", pa.array([b"x"] * 3000, pa.binary()))
    pq.write_table(table, workdir / "torture.parquet")
    args = ["train"]
    for item in [*base_overrides(mlflow_db, workdir / "runs"), f"data.path={workdir / 'torture.parquet'}",
                 "data.conditions=[condition]", "train.epochs=1"]:
        args += ["--set", item]
    assert main(args) == 1
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cvae ")]
    assert len(error) == 1 and "'nested'" in error[0] and "data.exclude" in error[0]

    args = ["run", "--set", "data.exclude=[nested, blob]", "--set", "generate.num_rows=2000",
            "--set", f"generate.output={workdir / 'out'}", *args[1:]]
    assert main(args) == 0, capsys.readouterr().err
    synthetic = pq.read_table(workdir / "out")
    stored = pq.read_schema(workdir / "torture.parquet")  # as Parquet keeps it (date64 is stored as a date32)
    expected = [(f.name, f.type) for f in stored if f.name not in ("nested", "blob")]
    assert [(f.name, f.type) for f in synthetic.schema] == expected
    manifest = __import__("json").loads((workdir / "out" / "_manifest.json").read_text())
    assert manifest["excluded_columns"] == ["nested", "blob"]
    assert set(manifest["generated_ids"]) == {"order_id", "customer_id"}
    assert manifest["value_protection"]["min_value_count"] == 5


@pytest.mark.slow
def test_a_data_problem_found_inside_ray_is_one_line(ray_cluster, mlflow_db, workdir, capsys):
    """A NaN in a holdout row is first met by a Ray Data task encoding the holdout, not by the driver's fit."""
    path = workdir / "weather.parquet"
    table = pq.read_table(BUNDLED_DATA / "seattle-weather.parquet")
    pq.write_table(table, path)
    fs, _ = filesystem(str(path))
    hashes = pa.concat_tables(read_table(fs, [str(path)]).iter_batches(batch_format="pyarrow")).column(ROW_HASH)
    row = int(np.flatnonzero(in_holdout(hashes.to_numpy(), 0, 0.1))[0])
    wind = table.column("wind").to_numpy(zero_copy_only=False).copy()
    wind[row] = math.nan
    pq.write_table(table.set_column(table.schema.get_field_index("wind"), "wind", pa.array(wind)), path)

    args = ["train"]
    for item in [*base_overrides(mlflow_db, workdir / "runs"), f"data.path={path}", "data.conditions=[weather]",
                 "train.epochs=1", "train.max_failures=0"]:
        args += ["--set", item]
    assert main(args) == 1
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cvae ")]
    assert error == ["cvae train: error: column 'wind' holds NaN or infinite values; replace them with nulls or numbers"]


@pytest.mark.slow
def test_same_name_other_job_is_refused_and_restart_starts_over(ray_cluster, mlflow_db, workdir, capsys):
    penguins = BUNDLED_DATA / "penguins-raw.parquet"
    base = [*base_overrides(mlflow_db, workdir / "runs"), f"data.path={penguins}", "train.epochs=1",
            "mlflow.model_name=penguins-rerun"]

    def train(*extra):
        args = ["train", *extra]
        for item in base:
            args += ["--set", item]
        return main(args)

    assert train("--set", "data.conditions=[Species]") == 0
    first = capsys.readouterr().out
    assert train("--set", "data.conditions=[Island]") == 1
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cvae ")]
    assert len(error) == 1
    assert "data.conditions" in error[0] and "Species" in error[0] and "Island" in error[0] and "--restart" in error[0]
    assert train("--set", "data.conditions=[Species]") == 0  # the same job is still there, finished
    rerun = capsys.readouterr()
    assert "nothing to train" in rerun.err and "registered models:/penguins-rerun/1 " in rerun.out
    assert train("--restart", "--set", "data.conditions=[Island]") == 0
    restarted = capsys.readouterr()
    assert "(new)" in restarted.err and "registered models:/penguins-rerun/2 " in restarted.out, (first, restarted)
