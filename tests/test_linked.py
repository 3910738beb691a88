"""Linked tables (data.key, data.children): a parent table and its children trained and generated together, on the
bundled classes -> pupils tables and the males panel (pipeline/data/README.md), on a real local Ray cluster."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.cli import main
from pipeline.config import BUNDLED_DATA, load_config
from pipeline.errors import UserError
from pipeline.linked.generate import generate_linked
from pipeline.linked.tables import PARENT_PREFIX, derived_tables
from pipeline.linked.train import train_linked

LINKED = BUNDLED_DATA / "linked"
PUPILS = {"path": str(LINKED / "nl-classes.parquet"), "key": "class",
          "children": {"pupils": {"path": str(LINKED / "nl-pupils.parquet"), "foreign_key": "class"}}}
PANEL = {"path": str(LINKED / "males.parquet"), "key": "nr",
         "children": {"years": {"path": str(LINKED / "males.parquet"), "foreign_key": "nr", "order_by": ["year"]}}}


def linked_config(folder: Path, data: dict, name: str, mlflow_db: str) -> Path:
    """A YAML config as a user writes one (the children are a mapping: --set cannot write them comfortably)."""
    config = {"data": data, "train": {"epochs": 1, "num_workers": 2, "storage_path": str(folder / "runs"),
                                      "name": name},
              "model": {"hidden": [64, 64], "latent_dim": 8},
              "mlflow": {"tracking_uri": mlflow_db, "model_name": name}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def generated(config_path: Path, output: Path, *overrides: str, overwrite: bool = False):
    config = load_config(str(config_path), [f"generate.output={output}", *overrides])
    return generate_linked(config, overwrite)


def part_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.glob("*/part-*.parquet"))}


@pytest.fixture(scope="module")
def trained_pupils(ray_cluster, mlflow_db, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pupils")
    path = linked_config(folder, PUPILS, "classes-linked", mlflow_db)
    return path, train_linked(load_config(str(path)))


@pytest.fixture(scope="module")
def trained_panel(ray_cluster, mlflow_db, tmp_path_factory):
    folder = tmp_path_factory.mktemp("panel")
    path = linked_config(folder, PANEL, "males-linked", mlflow_db)
    return path, train_linked(load_config(str(path)))


@pytest.mark.slow
def test_parents_and_children_round_trip_with_fresh_keys_and_every_reference_valid(trained_pupils, tmp_path):
    path, trained = trained_pupils
    outcome = generated(path, tmp_path / "out", "generate.num_rows=150", "generate.rows_per_part=50")
    classes, pupils = pq.read_table(tmp_path / "out" / "nl-classes"), pq.read_table(tmp_path / "out" / "pupils")
    real_classes, real_pupils = pq.read_table(PUPILS["path"]), pq.read_table(PUPILS["children"]["pupils"]["path"])
    assert classes.schema.remove_metadata() == real_classes.schema.remove_metadata()
    assert pupils.schema.remove_metadata() == real_pupils.schema.remove_metadata()
    keys = classes.column("class").to_pylist()
    assert classes.num_rows == 150 and len(set(keys)) == 150
    assert not set(keys) & set(real_classes.column("class").to_pylist())  # fresh, never a training key
    assert pupils.column("class").null_count == 0
    assert set(pupils.column("class").to_pylist()) <= set(keys)  # 100% referential integrity
    counts = np.bincount(pc.index_in(pupils.column("class"), pa.array(keys)).to_numpy(), minlength=150)
    real_counts = set(pc.value_counts(real_pupils.column("class")).field("counts").to_pylist())
    assert set(counts.tolist()) <= real_counts | {0} and len(set(counts.tolist())) > 3  # drawn from the model

    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["format"] == "cvae-linked-synthetic/1" and manifest["num_parents"] == 150
    assert manifest["tables"]["pupils"]["rows"] == pupils.num_rows == outcome.rows["pupils"]
    assert [p["rows"] for p in manifest["tables"]["nl-classes"]["parts"]] == [50, 50, 50]
    assert manifest["tables"]["pupils"]["references"] == "nl-classes.class"
    assert [c["name"] for c in manifest["tables"]["nl-classes"]["schema"]] == real_classes.column_names
    assert manifest["children_models"]["pupils"] == trained.children["pupils"].model_uri
    assert (tmp_path / "out" / "_SUCCESS").exists() and not (tmp_path / "out" / "_parts").exists()


@pytest.mark.slow
def test_conditions_on_the_parent_choose_the_parents_and_so_their_children(trained_pupils, tmp_path):
    """Without data.conditions the parent model conditions on the child counts: 30 classes of exactly 20 pupils."""
    path, _ = trained_pupils
    generated(path, tmp_path / "out", "generate.conditions={pupils.count: {20: 30}}")
    classes, pupils = pq.read_table(tmp_path / "out" / "nl-classes"), pq.read_table(tmp_path / "out" / "pupils")
    assert classes.num_rows == 30 and pupils.num_rows == 600
    assert set(pc.value_counts(pupils.column("class")).field("counts").to_pylist()) == {20}


@pytest.mark.slow
def test_parts_are_identical_for_the_driver_and_one_or_two_actors(trained_pupils, tmp_path):
    path, _ = trained_pupils
    plan = ["generate.num_rows=120", "generate.rows_per_part=40"]
    generated(path, tmp_path / "driver", *plan)
    generated(path, tmp_path / "one", *plan, "generate.in_process_rows=0", "generate.num_workers=1")
    generated(path, tmp_path / "two", *plan, "generate.in_process_rows=0", "generate.num_workers=2")
    driver = part_bytes(tmp_path / "driver")
    assert sorted(driver) == [f"{t}/part-{k:05d}.parquet" for t in ("nl-classes", "pupils") for k in range(3)]
    assert driver == part_bytes(tmp_path / "one") == part_bytes(tmp_path / "two")


@pytest.mark.slow
def test_killed_linked_generation_resumes_to_the_same_bytes(trained_pupils, tmp_path):
    path, _ = trained_pupils
    plan = ["generate.num_rows=120", "generate.rows_per_part=40"]
    generated(path, tmp_path / "reference", *plan)
    command = [sys.executable, "-m", "pipeline", "generate", "--config", str(path),
               *sum([["--set", s] for s in [*plan, f"generate.output={tmp_path / 'out'}"]], [])]
    killed = subprocess.run(command, env={**os.environ, "CVAE_FAILPOINT": "before_manifest"}, capture_output=True)
    assert killed.returncode == -9 and not (tmp_path / "out" / "_SUCCESS").exists()
    assert subprocess.run(command, capture_output=True).returncode == 0
    assert part_bytes(tmp_path / "out") == part_bytes(tmp_path / "reference")
    assert (tmp_path / "out" / "_SUCCESS").exists()


@pytest.mark.slow
def test_a_panel_keeps_each_sequence_in_order_and_a_person_s_fixed_columns_fixed(trained_panel, tmp_path, capsys):
    path, trained = trained_panel
    generated(path, tmp_path / "out", "generate.num_rows=60")
    men, years = pq.read_table(tmp_path / "out" / "males"), pq.read_table(tmp_path / "out" / "years")
    assert men.column_names == ["nr"] and years.schema.remove_metadata() == \
        pq.read_table(PANEL["path"]).schema.remove_metadata()
    frame = years.to_pandas()
    assert set(frame["nr"]) <= set(men.column("nr").to_pylist())
    for _, rows in frame.groupby("nr", sort=False):
        assert rows["year"].is_monotonic_increasing  # order_by holds in every sequence
        assert rows["ethn"].nunique(dropna=False) == 1 and rows["school"].nunique(dropna=False) == 1
    assert (frame.groupby("nr").size() == 8).all()  # every man of the panel has 8 years

    assert main(["evaluate", "--config", str(path), "--set", f"evaluate.synthetic={tmp_path / 'out'}"]) == 0
    shown = capsys.readouterr().out
    assert "years: references 100.0%  in order 100.0%  children per parent 1.000 (mean 8.0 vs 8.0)" in shown


def write(table: pa.Table, path: Path) -> str:
    pq.write_table(table, path)
    return str(path)


def bad_tables(tmp_path: Path) -> dict[str, dict]:
    parents = pa.table({"id": [1, 2, 3], "kind": ["a", "b", "a"]})
    children = pa.table({"id": [1, 1, 2, 3], "t": [1, 2, 1, 1], "v": [0.5, 0.7, 0.1, 0.2]})
    good_parent, good_child = write(parents, tmp_path / "p.parquet"), write(children, tmp_path / "c.parquet")

    def linked(parent=good_parent, child=good_child, **spec):
        return {"path": parent, "key": "id", "children": {"c": {"path": child, "foreign_key": "id", **spec}}}
    return {
        "repeated key": (linked(parent=write(pa.table({"id": [1, 1, 3]}), tmp_path / "dup.parquet")),
                         "data.key: 'id' repeats in 1 keys"),
        "null key": (linked(parent=write(pa.table({"id": pa.array([1, None, 3])}), tmp_path / "null.parquet")),
                     "data.key: 'id' is null in 1 parent rows"),
        "key types": (linked(child=write(children.set_column(0, "id", pa.array(["1", "1", "2", "3"])),
                                         tmp_path / "str.parquet")), "is string, but it references 'id', which is int64"),
        "null order": (linked(child=write(children.set_column(1, "t", pa.array([1, None, 1, 1])),
                                          tmp_path / "order.parquet"), order_by=["t"]),
                       "order_by: 't' is null in 1 rows"),
        "too many children": (linked(max_children=1), "a parent has 2 children, over data.children.c.max_children=1"),
        "reserved name": (linked(child=write(children.append_column("parent.kind", pa.array(["x"] * 4)),
                                             tmp_path / "reserved.parquet")), "uses a name linked tables reserve"),
        "missing foreign key": (linked(foreign_key="nope"), "'nope' is not a column of"),
    }


@pytest.mark.parametrize("case", ["repeated key", "null key", "key types", "null order", "too many children",
                                  "reserved name", "missing foreign key"])
def test_bad_linked_tables_fail_in_one_line_before_anything_is_written(case, tmp_path, capsys):
    data, message = bad_tables(tmp_path)[case]
    config = {"data": data, "train": {"storage_path": str(tmp_path / "runs")},
              "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}}
    (tmp_path / "linked.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(tmp_path / "linked.yaml")]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0], error
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.parquet"))


def test_children_without_a_parent_are_left_out_and_counted(tmp_path):
    config = load_config(None, [f"data.path={LINKED / 'planes.parquet'}", "data.key=tailnum",
                                f"data.children={{flights: {{path: {LINKED / 'flights.parquet'}, foreign_key: tailnum,"
                                " order_by: [time_hour, dep_time]}}", f"train.storage_path={tmp_path}"])
    tables = derived_tables(config)
    flights = pq.read_table(LINKED / "flights.parquet")
    planes = set(pq.read_table(LINKED / "planes.parquet").column("tailnum").to_pylist())
    tails = flights.column("tailnum").to_pylist()
    orphans = sum(1 for t in tails if t is not None and t not in planes)
    assert tables.children["flights"].left_out == {"null_foreign_key": tails.count(None), "no_such_parent": orphans}
    learned = sum(pq.read_table(tables.path(split, "flights")).num_rows for split in ("train", "holdout"))
    assert learned == flights.num_rows - orphans - tails.count(None) and orphans > 0
    assert tables.children["flights"].lifted == {"carrier": "carrier", "year": "flights.year"}  # one per plane
    history = tables.children["flights"].history  # a flight follows the plane's previous one
    assert "dest" in history and "time_hour" in history and "tailnum" not in history and "carrier" not in history


def test_parent_values_held_by_fewer_than_k_parents_never_reach_the_child_model(tmp_path):
    """Value protection counts parents: a kind one parent holds stays out of its 40 children's context."""
    parents = pa.table({"id": list(range(30)), "kind": ["solo"] + ["common"] * 29})
    children = pa.table({"id": [0] * 40 + [i for i in range(1, 30) for _ in range(2)],
                         "v": np.linspace(0, 1, 98)})
    data = {"path": write(parents, tmp_path / "p.parquet"), "key": "id",
            "children": {"c": {"path": write(children, tmp_path / "c.parquet"), "foreign_key": "id"}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"data": data, "train": {"storage_path": str(tmp_path / "r")}}))
    config = load_config(str(tmp_path / "c.yaml"), ["data.holdout_fraction=0.0"])
    tables = derived_tables(config)
    rows = pq.read_table(tables.path("train", "c"))
    kinds = set(rows.column(PARENT_PREFIX + "kind").to_pylist())
    assert "solo" not in kinds and "common" in kinds
    assert rows.column_names.count("id") == 0  # the foreign key is never a modelled value
    assert tables.children["c"].history == []  # children in no order have no previous row to follow


def test_a_linked_config_needs_the_parent_key():
    with pytest.raises(UserError, match="data.key: required with data.children"):
        load_config(None, ["data.children={c: {path: x.parquet, foreign_key: id}}"])
