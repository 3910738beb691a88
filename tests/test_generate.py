"""Generation from a registered model on a real local Ray cluster, to local files and a real S3 endpoint."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from pipeline.evaluate.audit import training_split
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import UserError
from pipeline.generate.driver import generate
from pipeline.generate.part_writer import writer_pool

pytestmark = pytest.mark.slow


def run_generate(trained, output, *overrides, overwrite=False, storage_options=None):
    base, _ = trained
    extra = [f"generate.output={output}", *overrides]
    if storage_options:
        extra.append("generate.storage_options={" + ", ".join(f"{k}: '{v}'" for k, v in storage_options.items()) + "}")
    return generate(load_config(None, base + extra), overwrite=overwrite)


def part_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).glob("part-*.parquet"))}


def test_the_driver_one_actor_and_two_actors_write_identical_parts(trained_adult, tmp_path, adult):
    plan = "generate.conditions={income: {'>50K': 7000, '<=50K': 5000}}"
    one = run_generate(trained_adult, tmp_path / "one", plan, "generate.rows_per_part=2500", "generate.num_workers=1",
                 "generate.in_process_rows=0")
    run_generate(trained_adult, tmp_path / "two", plan, "generate.rows_per_part=2500", "generate.num_workers=2",
                 "generate.in_process_rows=0")
    run_generate(trained_adult, tmp_path / "driver", plan, "generate.rows_per_part=2500")  # small: no actors
    first, second, driver = (part_bytes(tmp_path / name) for name in ("one", "two", "driver"))
    assert list(first) == [f"part-{k:05d}.parquet" for k in range(5)]
    assert first == second == driver

    table = pq.read_table(tmp_path / "one")
    assert table.schema.remove_metadata() == adult.schema.remove_metadata()
    counts = dict(zip(*[c.to_pylist() for c in pc.value_counts(table["income"]).flatten()]))
    assert counts == {">50K": 7000, "<=50K": 5000}

    manifest = json.loads((tmp_path / "one" / "_manifest.json").read_text())
    assert manifest["model_uri"] == "models:/adult-shared@champion"
    assert manifest["model_version_uri"] == one.model_uri
    assert [p["rows"] for p in manifest["parts"]] == [2500, 2500, 2500, 2500, 2000]
    assert all(len(p["sha256"]) == 64 for p in manifest["parts"])
    assert (tmp_path / "one" / "_SUCCESS").exists()
    generation = MlflowClient(load_config(None, trained_adult[0]).mlflow.tracking_uri).get_run(manifest["run_id"])
    assert generation.data.metrics["rows"] == 12000 and generation.data.metrics["rows_per_s"] > 0
    assert generation.data.tags["cvae.model_version"] == one.model_uri.rsplit("/", 1)[-1]
    assert not list((tmp_path / "one").glob(".*")) and not (tmp_path / "one" / "_parts").exists()


def test_complete_output_is_not_rewritten_and_a_different_spec_is_refused(trained_adult, tmp_path, capsys):
    base, _ = trained_adult
    args = ["generate", *sum([["--set", o] for o in base], []), "--set", f"generate.output={tmp_path / 'out'}",
            "--set", "generate.num_rows=3000", "--set", "generate.rows_per_part=1000"]
    assert main(args) == 0
    stamp = (tmp_path / "out" / "_SUCCESS").stat().st_mtime_ns
    assert main(args) == 0  # a scheduler may re-trigger: nothing happens
    assert "nothing to do" in capsys.readouterr().out
    assert (tmp_path / "out" / "_SUCCESS").stat().st_mtime_ns == stamp

    assert main([*args, "--set", "generate.seed=9"]) == 1
    err = capsys.readouterr().err.strip()
    assert "already holds a different synthetic dataset" in err and "--overwrite" in err and "\n" not in err
    assert main([*args, "--set", "generate.seed=9", "--overwrite"]) == 0
    assert json.loads((tmp_path / "out" / "_manifest.json").read_text())["seed"] == 9


def test_pyfunc_predict_equals_the_ray_part(trained_adult, tmp_path):
    base, outcome = trained_adult
    run_generate(trained_adult, tmp_path / "out", "generate.conditions={income: {'>50K': 300}}",
                 "generate.rows_per_part=100", "generate.seed=4")
    part = pq.read_table(tmp_path / "out" / "part-00002.parquet").to_pandas()
    assert part["native-country"].isna().any()  # null condition values (filled in from training) go through pandas
    mlflow.set_tracking_uri(load_config(None, base).mlflow.tracking_uri)
    model = mlflow.pyfunc.load_model(outcome.model_uri)
    predicted = model.predict(pd.DataFrame({"income": [">50K"] * 100, "native-country": part["native-country"]}),
                              params={"seed": 4, "part": 2})
    pd.testing.assert_frame_equal(predicted, part)


def test_condition_seen_once_in_training_is_honoured_in_every_row(trained_adult, rare_training_combo, tmp_path):
    income, country, seen = rare_training_combo
    assert seen <= 2  # Adult has countries seen once or twice per income class
    plan = (f"generate.conditions=[{{income: '{income}', native-country: {country}, count: 2000}}, "
            f"{{income: '{income}', native-country: United-States, count: 2000}}]")
    run_generate(trained_adult, tmp_path / "out", plan, "generate.rows_per_part=1500")
    table = pq.read_table(tmp_path / "out")
    for requested in (country, "United-States"):
        rows = table.filter(pc.equal(table["native-country"], requested))
        assert rows.num_rows == 2000  # the same rate for the rare and the common value: every requested row
        assert pc.all(pc.equal(rows["income"], income)).as_py()


def test_partial_and_proportional_plans_keep_exact_counts(trained_adult, tmp_path, adult):
    run_generate(trained_adult, tmp_path / "partial", "generate.conditions=[{income: '>50K', count: 5000}]")
    partial = pq.read_table(tmp_path / "partial")
    assert partial.num_rows == 5000 and pc.all(pc.equal(partial["income"], ">50K")).as_py()
    assert pc.count_distinct(partial["native-country"]).as_py() > 5  # filled in from the training distribution

    run_generate(trained_adult, tmp_path / "prop", "generate.num_rows=20000")
    prop = pq.read_table(tmp_path / "prop")
    assert prop.num_rows == 20000
    # the plan follows the training split's condition counts (the holdout is never seen by the encoder)
    config = load_config(None, trained_adult[0])
    train_rows = training_split(config.data.path, ["income"], config.train.seed, config.data.holdout_fraction)
    real_share = pc.mean(pc.equal(train_rows["income"], ">50K")).as_py()
    assert abs(pc.mean(pc.equal(prop["income"], ">50K")).as_py() - real_share) < 0.001


def test_parquet_condition_rows_give_one_row_each(trained_adult, tmp_path, adult):
    conditions = adult.select(["income", "native-country"]).slice(100, 3000)
    pq.write_table(conditions, tmp_path / "conditions.parquet", row_group_size=700)
    run_generate(trained_adult, tmp_path / "out", f"generate.conditions={tmp_path / 'conditions.parquet'}",
                 "generate.rows_per_part=1000")
    table = pq.read_table(tmp_path / "out")
    assert table.select(["income", "native-country"]).equals(conditions)


@pytest.mark.parametrize("plan,message", [
    ("generate.conditions={sex: {Male: 10}}", "'sex' is not a condition column"),
    ("generate.conditions={income: {'>70K': 10}}", "income='>70K' was never seen in training"),
    ("generate.conditions={income: {'>50K': 0}}", "must be a positive integer"),
    ("generate.conditions=[{income: '>50K'}]", "missing 'count'"),
])
def test_bad_plans_fail_before_anything_is_written(trained_adult, tmp_path, plan, message):
    with pytest.raises(UserError, match=message):
        run_generate(trained_adult, tmp_path / "out", plan)
    assert not (tmp_path / "out").exists()


def test_output_on_s3_reads_back_with_the_training_schema(trained_adult, s3, s3_options, adult):
    s3.mkdir("synthetic")
    plan = "generate.conditions={income: {'>50K': 1500, '<=50K': 2500}}"
    run_generate(trained_adult, "s3://synthetic/adult", plan, "generate.rows_per_part=1000",
                 storage_options=s3_options)
    assert sorted(p.split("/")[-1] for p in s3.ls("synthetic/adult")) == [
        "_SUCCESS", "_generation.json", "_manifest.json"] + [f"part-{k:05d}.parquet" for k in range(4)]
    filesystem = pa.fs.S3FileSystem(endpoint_override=s3_options["endpoint_url"], access_key="testing",
                                    secret_key="testing", scheme="http")
    table = pq.read_table("synthetic/adult", filesystem=filesystem)
    assert table.schema.remove_metadata() == adult.schema.remove_metadata()
    counts = dict(zip(*[c.to_pylist() for c in pc.value_counts(table["income"]).flatten()]))
    assert counts == {">50K": 1500, "<=50K": 2500}


def test_digits_come_back_as_64_float_images_per_digit(trained_digits, tmp_path, digits):
    run_generate(trained_digits, tmp_path / "out", "generate.conditions={digit: {0: 30, 7: 30}}")
    table = pq.read_table(tmp_path / "out")
    assert table.schema.field("pixels").type == pa.list_(pa.float32(), 64)
    assert table["digit"].to_pylist() == [0] * 30 + [7] * 30
    pixels = table["pixels"].combine_chunks().flatten().to_numpy()
    assert len(pixels) == 60 * 64 and pixels.min() >= 0 and pixels.max() <= 16


def test_killed_driver_resumes_to_the_same_bytes(trained_adult, ray_cluster, tmp_path):
    base, _ = trained_adult
    plan = ["generate.conditions={income: {'>50K': 40000}}", "generate.rows_per_part=1000"]
    run_generate(trained_adult, tmp_path / "reference", *plan)

    address = ray_cluster.get_runtime_context().gcs_address
    sets = sum([["--set", o] for o in [*base, *plan, f"generate.output={tmp_path / 'out'}",
                                          f"ray.address={address}"]], [])
    command = [sys.executable, "-m", "pipeline", "generate", *sets]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list((tmp_path / "out").glob("part-*.parquet"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    written = len(list((tmp_path / "out").glob("part-*.parquet")))
    assert 3 <= written < 40, written
    assert not (tmp_path / "out" / "_SUCCESS").exists()

    assert subprocess.run(command, env=env, capture_output=True).returncode == 0
    assert part_bytes(tmp_path / "out") == part_bytes(tmp_path / "reference")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in (tmp_path / "reference").iterdir())


@pytest.mark.parametrize("workers,cpus_each,gpu,resources,expected", [
    ("auto", 1, False, {"CPU": 8.0}, (8, 0.0)),
    ("auto", 2, False, {"CPU": 8.0}, (4, 0.0)),
    ("auto", 4, False, {"CPU": 2.0}, (1, 0.0)),  # never none
    (3, 1, False, {"CPU": 8.0}, (3, 0.0)),
    ("auto", 1, True, {"CPU": 16.0, "GPU": 1.0}, (8, 0.125)),  # several writers share a GPU
    ("auto", 1, True, {"CPU": 2.0, "GPU": 1.0}, (2, 0.5)),
    ("auto", 1, True, {"CPU": 32.0, "GPU": 2.0}, (16, 0.125)),
    ("auto", 4, True, {"CPU": 16.0, "GPU": 1.0}, (4, 0.25)),
    (2, 1, True, {"CPU": 16.0, "GPU": 1.0}, (2, 0.5)),
])
def test_writers_are_sized_to_the_cluster(workers, cpus_each, gpu, resources, expected):
    pool = writer_pool(workers, cpus_each, gpu, resources)
    assert (pool.actors, pool.gpus_per_actor) == expected
