"""A consumer of the registry: `mlflow models serve` for `models:/NAME@ALIAS` where this project is not installed."""
import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
import warnings

import mlflow
import pandas as pd
import pytest

from pipeline.config import load_config
from tests.conftest import free_port, wait_for_port

pytestmark = pytest.mark.slow
MODEL = "models:/adult-shared@champion"


@pytest.fixture(scope="module")
def consumer_env(tmp_path_factory):
    """A fresh virtual environment that sees the installed dependencies (as if installed from the model's
    requirements) but not this project: the project's editable-install hook lives in a .pth file, which Python
    only runs for site directories, and the dependencies' folder is added as a plain path."""
    folder = tmp_path_factory.mktemp("consumer")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder / "env")], check=True)
    python = folder / "env" / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, "dependencies.pth"), "w") as pth:
        pth.write(sysconfig.get_paths()["purelib"] + "\n")
    (folder / "env" / "bin" / "uvicorn").write_text(f'#!/bin/sh\nexec "{python}" -m uvicorn "$@"\n')
    (folder / "env" / "bin" / "uvicorn").chmod(0o755)
    env = {"PATH": f"{folder / 'env' / 'bin'}:/usr/bin:/bin", "HOME": str(folder), "MLFLOW_ENABLE_TELEMETRY": "false",
           "DO_NOT_TRACK": "true"}
    return folder, python, env


def test_the_project_is_absent_from_the_consumer_env(consumer_env):
    folder, python, env = consumer_env
    found = subprocess.run([str(python), "-c", "import pipeline"], cwd=folder, env=env, capture_output=True, text=True)
    assert found.returncode != 0 and "No module named 'pipeline'" in found.stderr
    assert subprocess.run([str(python), "-c", "import mlflow, torch"], cwd=folder, env=env).returncode == 0


def test_logged_model_is_self_contained(trained_adult, tmp_path):
    base, outcome = trained_adult
    mlflow.set_tracking_uri(load_config(None, base).mlflow.tracking_uri)
    local = mlflow.artifacts.download_artifacts(artifact_uri=MODEL, dst_path=str(tmp_path))
    requirements = open(os.path.join(local, "requirements.txt")).read().split()
    assert not [r for r in requirements if "+" in r or r.startswith("cvae-synth")], requirements  # a public index has them
    assert {r.split("==")[0] for r in requirements} >= {"torch", "pyarrow", "pandas", "mlflow", "pydantic"}
    assert os.path.isfile(os.path.join(local, "code", "pipeline", "pyfunc.py"))
    assert not os.path.exists(os.path.join(local, "code", "pipeline", "data"))  # no training tables travel
    spec = json.loads(mlflow.models.Model.load(local).signature.to_dict()["inputs"])
    assert {c["name"]: c["required"] for c in spec} == {"income": True, "native-country": False}  # nulls seen there


def test_mlflow_models_serve_answers_without_the_project(trained_adult, consumer_env, adult):
    base, outcome = trained_adult
    folder, python, env = consumer_env
    tracking = load_config(None, base).mlflow.tracking_uri
    port = free_port()
    server = subprocess.Popen([str(python), "-m", "mlflow", "models", "serve", "-m", MODEL, "--env-manager", "local",
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              cwd=folder, env={**env, "MLFLOW_TRACKING_URI": tracking}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for_port(port, server, seconds=180)
        rows = {"dataframe_split": {"columns": ["income", "native-country"],
                                    "data": [[">50K", "United-States"]] * 30 + [["<=50K", None]] * 20},
                "params": {"seed": 3}}
        predictions = post(port, rows)
        only_income = post(port, {"dataframe_split": {"columns": ["income"], "data": [[">50K"]] * 5}})
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        log = server.communicate(timeout=30)[0]
    served = pd.DataFrame(predictions)
    assert list(served.columns) == adult.column_names  # the training table's columns, in order
    assert len(served) == 50 and served["income"].tolist() == [">50K"] * 30 + ["<=50K"] * 20
    assert served["native-country"].head(30).eq("United-States").all() and served["native-country"].tail(20).isna().all()
    assert len(only_income) == 5 and all(pd.isna(row["native-country"]) for row in only_income)
    assert "Traceback" not in log, log[-3000:]

    mlflow.set_tracking_uri(tracking)
    local = mlflow.pyfunc.load_model(MODEL).predict(
        pd.DataFrame(rows["dataframe_split"]["data"], columns=rows["dataframe_split"]["columns"]), params={"seed": 3})
    assert list(served.columns) == list(local.columns)
    pd.testing.assert_frame_equal(served, local.astype(served.dtypes.to_dict()), check_dtype=False)


def post(port, body):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["predictions"]
        except urllib.error.URLError:
            if time.time() > deadline:
                raise
            time.sleep(1)


def test_logging_the_model_raises_no_warnings(trained_adult, tmp_path):
    """What `cvae train` does at the end (log the pyfunc, register, alias), again into a fresh store: MLflow has
    nothing to warn about (signature, requirements, input example, code paths)."""
    from pipeline.artifact import MODEL_ARTIFACT
    from pipeline.registry import fetch_model, register
    from pipeline.tracking import client_for

    base, outcome = trained_adult
    mlflow.set_tracking_uri(load_config(None, base).mlflow.tracking_uri)
    folder = tmp_path / MODEL_ARTIFACT
    folder.mkdir()
    for name, data in fetch_model(outcome.model_uri).items():
        (folder / name).write_bytes(data)
    config = load_config(None, [f"mlflow.tracking_uri=sqlite:///{tmp_path}/fresh.db", "mlflow.model_name=fresh"])
    client = client_for(config.mlflow.tracking_uri)
    run_id = client.create_run(client.create_experiment("fresh")).info.run_id
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert register(client, run_id, str(folder), config) == "1"
    assert not [str(w.message) for w in caught if "mlflow" in w.filename or "pipeline" in w.filename], \
        [f"{w.filename}: {w.message}" for w in caught]
