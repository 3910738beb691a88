"""What a person reads: results on stdout, a few progress lines on stderr, Ray's internals only with --verbose."""
import json
import os
import re
import shlex
import subprocess
import sys

import mlflow
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from pipeline import console
from pipeline.config import BUNDLED_DATA
from pipeline.evaluate.audit import training_split
from pipeline.rules import parse_rules
from test_real_tables import assert_believable_and_safe

# Ray's and MLflow's own chatter: worker reports, Ray Data plans, log records, colour codes, tracebacks.
NOISE = re.compile(r"TrainingReport|Execution plan|Starting execution|execution finished| INFO |\bDEBUG\b|"
                   r"\x1b\[|Traceback|Successfully registered|Created version|Progress bars|Deprecat")
PROGRESS = re.compile(r"^(encoder fitted in |\d+ rule\(s\) every generated row keeps |latent mixture fitted in |"
                      r"identifier column|column '|mlflow run |epoch \d+/\d+ |generating |\d+/\d+ parts |"
                      r"holdout: |warning: |[\d,]+ training rows break data.rules)")


@pytest.mark.slow
def test_cvae_run_on_a_real_table_prints_results_on_stdout_and_leaks_nothing(ray_cluster, workdir):
    """The main job as a person runs it (`cvae run`, a process of its own) on a real table nobody tuned for
    (nuclides: ids, 12-98% nulls, 29 columns) with one condition: train, generate, evaluate and a promotion gate;
    results on stdout and progress on stderr; the output has the input's schema, the requested rows and conditions,
    fresh ids and no protected value in the model or the rows. A declared rule 43 rows break
    (`half_life_uncert <= half_life`) is kept in every generated row, those rows left out of training and counted."""
    table = BUNDLED_DATA / "nuclides.parquet"
    overrides = [f"data.path={table}", "data.conditions=[is_stable]", "train.epochs=2", "train.num_workers=1",
                 "data.rules=['half_life_uncert <= half_life']", "data.rules_breaking=leave_out",
                 "model.hidden=[64, 64]", "model.latent_dim=8", "generate.num_rows=3000",
                 "generate.rows_per_part=1000", "mlflow.model_name=console", "evaluate.promote_alias=champion",
                 "evaluate.min_quality=0.1", f"ray.address={ray_cluster.get_runtime_context().gcs_address}"]
    done = subprocess.run([sys.executable, "-m", "pipeline", "run", *sum([["--set", o] for o in overrides], [])],
                          env={**os.environ, "NO_COLOR": "1", "RAY_AUTH_MODE": "disabled"}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out, err = done.stdout.splitlines(), done.stderr.splitlines()
    assert not [line for line in out + err if NOISE.search(line)], done.stderr
    assert out[0].startswith("registered models:/console/1 (alias @candidate)")
    assert any(line.startswith("wrote 3,000 rows") for line in out), out
    quality = float(done.stdout.split("quality ")[1].split()[0])
    assert 0.1 < quality <= 1 and "against the training rows (no holdout)" in done.stdout  # 338 rows: too few
    assert "promoted models:/console/1 to @champion" in done.stdout
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    assert str(client.get_model_version_by_alias("console", "champion").version) == "1"
    assert (workdir / "runs" / "synthetic" / "console-v1" / "_SUCCESS").exists()  # a folder per model version
    assert out[-1] == f"browse runs and models: mlflow ui --backend-store-uri sqlite:///{workdir}/mlflow.db"
    assert [line for line in err if line.startswith("epoch ")] == [
        line for line in err if re.match(r"^epoch [12]/2  loss -?\d", line)] and len(
        [line for line in err if line.startswith("epoch ")]) == 2  # one line per epoch, relayed from the controller
    assert any(line.startswith("4 rule(s) every generated row keeps (3 found") and "{fixed: [z, element]}" in line
               and "half_life_uncert <= half_life" in line for line in err), err
    # Anything else on stderr is Ray's own diagnostics: the raylet's warnings (routed from stdout to stderr; e.g.
    # how many worker processes the shared test cluster started) and one known line of its C++ core worker.
    others = [line for line in err if not PROGRESS.match(line) and not line.startswith("(raylet) ")]
    assert len(others) <= 1, done.stderr

    real = pq.read_table(table)
    synthetic = pq.read_table(workdir / "runs" / "synthetic" / "console-v1")
    train = training_split(str(table), real.column_names, seed=0, fraction=0.1)
    rule = parse_rules(["half_life_uncert <= half_life"])[0]
    left_out = int(rule.broken(train).sum())
    assert 0 < left_out and f"{left_out:,} training rows break data.rules and were left out" in done.stderr
    assert f"on the training split of {train.num_rows - left_out:,} rows" in done.stderr
    assert train.num_rows < real.num_rows and not rule.broken(synthetic).any()
    manifest = json.loads((workdir / "runs" / "synthetic" / "console-v1" / "_manifest.json").read_text())
    assert manifest["training_rows_left_out"] == left_out and "half_life_uncert <= half_life" in manifest["rules"]
    run_id = client.get_model_version("console", "1").run_id
    assert client.get_run(run_id).data.metrics["training_rows_left_out"] == left_out
    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow.db")
    mlflow.artifacts.download_artifacts("models:/console@candidate", dst_path=str(workdir / "model"))
    assert_believable_and_safe(real, train, synthetic, "is_stable", workdir / "model")


def test_verbose_switch_forwards_ray_output_and_no_color_reaches_ray(monkeypatch):
    for name in (console.VERBOSE_ENV, "RAY_COLOR_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    console.configure(verbose_output=False)
    assert console.ray_init_options()["log_to_driver"] is False
    assert os.environ["RAY_COLOR_PREFIX"] == "0"
    console.configure(verbose_output=True)
    assert console.ray_init_options()["log_to_driver"] is True


def test_raylet_warnings_go_to_stderr_not_to_the_results(monkeypatch, capsys):
    import ray._private.worker as ray_worker

    monkeypatch.setattr(ray_worker, "print_to_stdstream", ray_worker.print_to_stdstream)  # restored afterwards
    console.route_ray_system_messages()
    console.route_ray_system_messages()  # idempotent: wrapped once
    ray_worker.print_to_stdstream({"lines": ["WARNING: 8 PYTHON worker processes"], "pid": "raylet", "is_err": False},
                                  ignore_prefix=False)
    ray_worker.print_to_stdstream({"lines": ["a worker's own print"], "pid": 123, "is_err": False},
                                  ignore_prefix=False)
    out, err = capsys.readouterr()
    assert "(raylet) WARNING: 8 PYTHON worker processes" in err and "8 PYTHON worker processes" not in out
    assert "\x1b[" not in err  # no colour codes
    assert "a worker's own print" in out  # what a worker prints (with --verbose) keeps its stream


@pytest.mark.slow
def test_printed_next_commands_run_as_printed(trained_digits, workdir, capsys):
    """After `cvae train` with the user's own flags (a tracking store, a storage path and a table that are not the
    defaults), the `next:` line is a command that runs as pasted: generate finds the model in the user's registry,
    and the evaluate it prints scores the output against the digits table the model was trained on, not Adult."""
    from pipeline.cli import main

    overrides, outcome = trained_digits
    flags = sum([["--set", o] for o in [*overrides, "generate.num_rows=400", f"generate.output={workdir}/digits out"]],
                [])
    capsys.readouterr()
    assert main(["train", *flags]) == 0  # the finished job: nothing to train, the same version back
    printed = [line.removeprefix("next: ") for line in capsys.readouterr().out.splitlines() if line.startswith("next: ")]
    assert len(printed) == 1 and f"generate.model_uri={outcome.model_uri}" in printed[0]
    words = shlex.split(printed[0])
    assert words[:2] == ["cvae", "generate"] and main(words[1:]) == 0
    printed = [line.removeprefix("next: ") for line in capsys.readouterr().out.splitlines() if line.startswith("next: ")]
    assert len(printed) == 1 and "digits out" in printed[0]
    words = shlex.split(printed[0])
    assert words[:2] == ["cvae", "evaluate"] and main(words[1:]) == 0
    assert "quality " in capsys.readouterr().out
    assert pq.read_table(workdir / "digits out").num_rows == 400


@pytest.mark.slow
def test_inspect_shows_kinds_and_rules_before_any_condition_is_chosen(ray_cluster, capsys):
    """`cvae inspect` is a first look: no data.conditions needed; each column's kind and the rules as YAML that
    pastes into data.rules."""
    import itertools

    import yaml

    from pipeline.cli import main

    table = BUNDLED_DATA / "strings" / "peeps.parquet"
    assert main(["inspect", "--set", f"data.path={table}",
                 "--set", f"ray.address={ray_cluster.get_runtime_context().gcs_address}"]) == 0
    out = capsys.readouterr().out
    assert "100 rows, conditions none yet" in out
    assert "email_addr (string): personal: email from Faker" in out and "dob (string): formatted: date as %Y-%m-%d" in out
    lines = out.splitlines()
    start = lines.index("data:")
    block = [lines[start]] + [line for line in itertools.takewhile(lambda l: l.startswith((" ", "-")), lines[start + 1:])]
    assert {"fixed": ["country", "country_code"]} in yaml.safe_load("\n".join(block))["data"]["rules"]
