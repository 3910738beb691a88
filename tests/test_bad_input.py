"""Every bad input a user can give, through the CLI: one line naming the problem and the fix, a non-zero exit,
and nothing written (no MLflow store, no checkpoints, no output)."""
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.config import BUNDLED_DATA
from tests.conftest import free_port


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def fails(capsys, root: Path, command: str, *overrides: str, config: Path | None = None) -> str:
    """Runs the CLI in `root`; asserts exit 1, one stderr line, and no new file; returns the line."""
    before = tree(root)
    args = [command, *(["--config", str(config)] if config else []), *sum([["--set", o] for o in overrides], [])]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err, err
    assert tree(root) == before, tree(root) - before
    return err


@pytest.fixture
def inputs(workdir):
    """Bad tables, written before the test snapshots the folder."""
    folder = workdir / "inputs"
    folder.mkdir()
    (folder / "csv").mkdir()
    (folder / "csv" / "table.csv").write_text("a,b\n1,2\n")
    pq.write_table(pa.table({"income": pa.array([], pa.string()), "x": pa.array([], pa.int64())}),
                   folder / "empty.parquet")
    (folder / "text.parquet").write_text("this is not parquet")
    data = (BUNDLED_DATA / "adult.parquet").read_bytes()
    (folder / "truncated.parquet").write_bytes(data[: len(data) // 2])
    pq.write_table(pa.table({"income": pa.nulls(5, pa.string()), "x": [1, 2, 3, 4, 5]}), folder / "null-cond.parquet")
    (folder / "mixed").mkdir()
    pq.write_table(pa.table({"income": ["a"], "x": [1]}), folder / "mixed" / "a.parquet")
    pq.write_table(pa.table({"income": ["a"], "y": [1.0]}), folder / "mixed" / "b.parquet")
    pq.write_table(pa.table({"income": ["a"], "nested": [{"k": 1}]}), folder / "struct.parquet")
    (folder / "bad.yaml").write_text("train:\n  epochs: [1\n")
    return folder


@pytest.mark.parametrize("path,expected", [
    ("inputs/missing.parquet", "does not exist"),
    ("inputs/csv", "holds no Parquet files"),
    ("inputs/empty.parquet", "empty table (0 rows)"),
    ("inputs/text.parquet", "is not a readable Parquet file"),
    ("inputs/truncated.parquet", "is not a readable Parquet file"),
    ("inputs/null-cond.parquet", "'income' is entirely null"),
    ("inputs/mixed", "every file must share one schema"),
    ("inputs/struct.parquet", "'nested' has Arrow type"),
])
def test_bad_training_tables(capsys, workdir, inputs, path, expected):
    err = fails(capsys, workdir, "train", f"data.path={path}", "data.conditions=[income]")
    assert err.startswith("cvae train: error:") and expected in err


def test_condition_column_missing(capsys, workdir, inputs):
    err = fails(capsys, workdir, "train", "data.conditions=[salary]")
    assert "'salary' is not in the table" in err and "income" in err


@pytest.mark.parametrize("overrides,expected", [
    (["train.epochs=ten"], "train.epochs"),
    (["train.epoch=3"], "unknown key"),
    (["generate.num_rows=0"], "generate.num_rows"),
    (["generate.num_rows=-5"], "generate.num_rows"),
    (["generate.rows_per_part=0"], "generate.rows_per_part"),
    (["data.columns={age: list}"], "data.columns.age"),
    (["mlflow.tracking_uri=sqlite:///no/such/folder/mlflow.db"], "folder"),
])
def test_bad_configuration(capsys, workdir, inputs, overrides, expected):
    assert expected in fails(capsys, workdir, "train", *overrides)


def test_malformed_yaml(capsys, workdir, inputs):
    err = fails(capsys, workdir, "train", config=inputs / "bad.yaml")
    assert "bad.yaml" in err and "malformed YAML" in err


def test_mlflow_server_unreachable_fails_before_any_work(capsys, workdir, inputs):
    err = fails(capsys, workdir, "train", f"mlflow.tracking_uri=http://127.0.0.1:{free_port()}")
    assert "is unreachable" in err and "mlflow.tracking_uri" in err


def test_generate_without_any_trained_model(capsys, workdir, inputs):
    assert "no MLflow store" in fails(capsys, workdir, "generate")


@pytest.mark.slow
def test_unreadable_credentials(capsys, workdir, inputs, adult_on_s3, s3_options):
    options = f"{{endpoint_url: '{s3_options['endpoint_url']}', profile: no-such-profile}}"
    err = fails(capsys, workdir, "train", f"data.path={adult_on_s3}", "data.conditions=[income]",
                f"data.storage_options={options}")
    assert "no-such-profile" in err and "credentials" in err


@pytest.fixture
def generation(trained_adult, workdir):
    base, _ = trained_adult
    return base


@pytest.mark.slow
@pytest.mark.parametrize("overrides,expected", [
    (["generate.model_uri=models:/adult-shared@no-such-alias"], "not found in the registry"),
    (["generate.model_uri=models:/no-such-model/latest"], "no registered versions"),
    (["generate.conditions={income: {'>90K': 10}}"], "never seen in training"),
    (["generate.conditions={salary: {high: 10}}"], "not a condition column"),
    (["generate.conditions=[{income: '>50K', native-country: Atlantis, count: 3}]"], "Atlantis"),
])
def test_bad_generation_requests(capsys, workdir, generation, overrides, expected):
    err = fails(capsys, workdir, "generate", *generation, f"generate.output={workdir}/out", *overrides)
    assert expected in err


@pytest.mark.slow
def test_condition_rows_with_the_wrong_schema(capsys, workdir, generation):
    pq.write_table(pa.table({"income": [1, 2], "native-country": ["Cuba", "Peru"]}), workdir / "conds.parquet")
    err = fails(capsys, workdir, "generate", *generation, f"generate.output={workdir}/out",
                f"generate.conditions={workdir}/conds.parquet")
    assert "income" in err and ("was never seen" in err or "do not fit the training types" in err)


@pytest.mark.slow
def test_output_holding_foreign_files_is_refused(capsys, workdir, generation):
    (workdir / "out").mkdir()
    (workdir / "out" / "report.csv").write_text("someone else's file")
    err = fails(capsys, workdir, "generate", *generation, f"generate.output={workdir}/out")
    assert "not a cvae dataset" in err and "report.csv" in err


def test_a_condition_that_cannot_work_fails_before_training():
    """airports conditioned on their names: 3,000 distinct texts in as many rows would train for minutes on one
    condition dimension per row; the fit says so in one line. sp500's date held in a string conditions by value
    (a quantile code and calendar phases), as a Parquet date does."""
    from pipeline.codec import fit_table
    from pipeline.config import EncoderConfig
    from pipeline.errors import UserError

    airports = pq.read_table(BUNDLED_DATA / "airports.parquet")
    with pytest.raises(UserError, match="name take 3,237 distinct values in 3,376 training rows") as error:
        fit_table(airports.to_batches(), ["name"], EncoderConfig())
    assert "\n" not in str(error.value) and "coarser column" in str(error.value)
    with pytest.raises(UserError, match="encoder.max_condition_combinations"):
        fit_table(airports.to_batches(), ["state"], EncoderConfig(max_condition_combinations=20))
    sp500 = pq.read_table(BUNDLED_DATA / "strings" / "sp500.parquet")
    encoder = fit_table(sp500.to_batches(), ["date"], EncoderConfig())
    assert encoder.kinds()["date"] == "formatted" and encoder.calendar["date"] == ["week", "year"]
