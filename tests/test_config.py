from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import DEFAULT_DATA_PATH, load_config
from pipeline.errors import UserError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def error_for(tmp_path, yaml_text=None, overrides=()):
    path = None
    if yaml_text is not None:
        path = tmp_path / "job.yaml"
        path.write_text(yaml_text)
    with pytest.raises(UserError) as info:
        load_config(str(path) if path else None, list(overrides))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_embedded_default_is_the_adult_demo():
    config = load_config()
    assert config.data.path == DEFAULT_DATA_PATH
    assert config.data.conditions == ["income"]
    assert config.mlflow.tracking_uri == "sqlite:///mlflow.db"
    assert config.mlflow.model_name == "adult-cvae"
    assert config.train.storage_path.startswith("./runs/")


def test_defaults_derived_for_one_config_do_not_leak_into_the_next():
    assert load_config(None, ["data.path=s3://b/sales.parquet", "data.conditions=[x]"]).mlflow.model_name == "sales-cvae"
    assert load_config().mlflow.model_name == "adult-cvae"


def test_adult_yaml_writes_out_the_embedded_default(monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)
    from_file = load_config(str(CONFIGS / "adult.yaml")).model_dump()
    embedded = load_config().model_dump()
    assert Path(from_file["data"].pop("path")).resolve() == Path(embedded["data"].pop("path")).resolve()
    assert from_file == embedded


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_config_validates(name):
    load_config(str(CONFIGS / name))


def test_overrides_are_yaml_scalars_applied_over_the_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("train:\n  epochs: 3\n  seed: 7\n")
    config = load_config(str(path), ["train.epochs=5", "model.hidden=[64, 32]", "train.use_gpu=true",
                                     "mlflow.alias=null"])
    assert (config.train.epochs, config.train.seed) == (5, 7)
    assert config.model.hidden == [64, 32]
    assert config.train.use_gpu is True
    assert config.mlflow.alias is None


def test_unknown_key_names_key_and_file(tmp_path):
    message = error_for(tmp_path, "train:\n  epoch: 3\n")
    assert "job.yaml" in message and "train.epoch" in message and "unknown key" in message
    assert "epochs" in message  # the valid keys are listed


def test_unknown_section(tmp_path):
    message = error_for(tmp_path, "trainer:\n  epochs: 3\n")
    assert "trainer" in message and "unknown key" in message


def test_a_misspelt_set_is_blamed_with_the_key_meant():
    """`--set dat.path=...` fails at the section `dat`: the error names the --set the user typed, not the defaults,
    and the key they meant."""
    with pytest.raises(UserError) as error:
        load_config(None, ["data.conditions=[income]", "dat.path=/tmp/x.parquet"])
    assert str(error.value).startswith("config error in --set dat.path: dat: unknown key; did you mean 'data'?")
    with pytest.raises(UserError, match="did you mean 'epochs'"):
        load_config(None, ["train.epoch=3"])


def test_default_output_is_a_folder_per_model_version():
    """Two tables (two models) generated with the defaults never share an output folder; an output the user sets
    is used as given."""
    generate = load_config(None, []).generate
    assert generate.output_for("models:/adult-cvae/3") == "./runs/synthetic/adult-cvae-v3"
    assert generate.output_for("models:/peeps-cvae/1") == "./runs/synthetic/peeps-cvae-v1"
    assert load_config(None, ["generate.output=s3://b/out"]).generate.output_for("models:/x/1") == "s3://b/out"


def test_personal_roles_are_column_kinds_the_config_accepts():
    """`data.columns.NAME: first_name` (and every other personal-data role) passes the config to the codecs."""
    from typing import get_args

    from pipeline.codec.kinds import PERSONAL_ROLES
    from pipeline.config import ColumnKind

    assert set(PERSONAL_ROLES) <= set(get_args(ColumnKind))
    config = load_config(None, ["data.conditions=[country]", "data.columns={name_given: first_name, email_addr: email}"])
    assert config.data.columns == {"name_given": "first_name", "email_addr": "email"}
    with pytest.raises(UserError, match=r"^config error: data.conditions: required"):  # nobody set it: no blame
        load_config(None, ["data.path=/data/peeps.parquet"])


def test_wrong_type_names_key_and_value(tmp_path):
    message = error_for(tmp_path, "train:\n  epochs: ten\n")
    assert "job.yaml" in message and "train.epochs" in message and "'ten'" in message


def test_out_of_range_from_override_names_the_override(tmp_path):
    message = error_for(tmp_path, "train:\n  epochs: 3\n", ["train.num_workers=0"])
    assert "--set train.num_workers" in message and "greater than or equal to 1" in message


def test_missing_required_conditions_for_another_table(tmp_path):
    message = error_for(tmp_path, "data:\n  path: s3://bucket/table/\n")
    assert "job.yaml" in message and "data.conditions" in message and "required" in message


def test_malformed_yaml_names_the_line(tmp_path):
    message = error_for(tmp_path, "train:\n  epochs: [3\n")
    assert "job.yaml" in message and "malformed YAML" in message and "line" in message


def test_missing_file():
    with pytest.raises(UserError, match="nope.yaml: cannot read"):
        load_config("nope.yaml")


@pytest.mark.parametrize("override", ["train.epochs", "=3", "train..epochs=3"])
def test_malformed_override(override):
    with pytest.raises(UserError, match="expected dotted.key=value"):
        load_config(None, [override])


def test_enum_and_plan_shapes_are_checked(tmp_path):
    assert "model.prior" in error_for(tmp_path, overrides=["model.prior=gaussian"])
    message = error_for(tmp_path, overrides=["generate.conditions=[1, 2]"])
    assert "generate.conditions" in message and "proportional" in message


def test_cli_reports_one_line_and_nonzero_exit(capsys):
    assert main(["train", "--set", "train.lr=-1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.lr" in err


def test_help_shows_keys_that_exist_and_points_at_a_reference_that_exists(capsys):
    """`cvae --help` lists common keys and an example: each key a valid config key, the reference file present."""
    import re

    from pipeline.cli import EPILOG

    with pytest.raises(SystemExit):
        main(["--help"])
    shown = capsys.readouterr().out
    assert "common keys" in shown and "docs/configuration.md" in shown
    assert (Path(__file__).parent.parent / "docs" / "configuration.md").exists()
    settings = re.findall(r"'?([a-z_]+\.[a-z_]+=[^ ']+)'?", EPILOG)
    assert len(settings) >= 9
    load_config(None, settings)  # every key the help names is one the config accepts
