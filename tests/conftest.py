"""Shared real components: one local Ray cluster, one S3 endpoint (moto server) per test session."""
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config import BUNDLED_DATA

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("DO_NOT_TRACK", "true")
S3_KEYS = {"key": "testing", "secret": "testing"}


@pytest.fixture(scope="session")
def adult():
    return pq.read_table(BUNDLED_DATA / "adult.parquet")


@pytest.fixture(scope="session")
def digits():
    return pq.read_table(BUNDLED_DATA / "digits.parquet")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {seconds}s")


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster; 4 logical CPUs so 2 training workers and Ray Data never starve each other."""
    import ray

    ray.init(address="local", num_cpus=4, object_store_memory=300 * 1024 ** 2, include_dashboard=True,
             logging_config=ray.LoggingConfig(log_level="WARNING"))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """A real S3 HTTP endpoint on 127.0.0.1 (moto server), reached through s3fs and pyarrow like real S3."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="session")
def s3_options(s3_endpoint):
    return {"endpoint_url": s3_endpoint, **S3_KEYS}


@pytest.fixture(scope="session")
def s3(s3_options):
    import s3fs

    return s3fs.S3FileSystem(**s3_options)


@pytest.fixture(scope="session")
def adult_on_s3(s3):
    s3.mkdir("data")
    s3.put(str(BUNDLED_DATA / "adult.parquet"), "data/adult/part-0.parquet")
    return "s3://data/adult/"


@pytest.fixture(scope="session")
def weather_on_s3(s3):
    """seattle-weather on S3: a small real table for the runs that test plumbing (jobs, secrets), not a model."""
    s3.mkdir("small")
    s3.put(str(BUNDLED_DATA / "seattle-weather.parquet"), "small/seattle-weather/part-0.parquet")
    return "s3://small/seattle-weather/"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Each test runs in its own folder: relative paths (./runs, sqlite:///mlflow.db) land there."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_db(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


def base_overrides(mlflow_db, runs_dir):
    return [f"mlflow.tracking_uri={mlflow_db}", "train.num_workers=2", "model.hidden=[64, 64]", "model.latent_dim=8",
            f"train.storage_path={runs_dir}"]


@pytest.fixture(scope="session")
def trained_adult(ray_cluster, mlflow_db, tmp_path_factory):
    """Adult conditioned on income and native-country, trained once per session (1 epoch: tests check mechanics)."""
    from pipeline.config import load_config
    from pipeline.train.driver import train

    overrides = base_overrides(mlflow_db, tmp_path_factory.mktemp("runs")) + [
        "data.conditions=[income, native-country]", "train.epochs=1", "train.name=adult-shared",
        "mlflow.model_name=adult-shared", "mlflow.alias=champion"]
    outcome = train(load_config(None, overrides))
    return overrides, outcome


@pytest.fixture(scope="session")
def trained_digits(ray_cluster, mlflow_db, tmp_path_factory):
    from pipeline.config import load_config
    from pipeline.train.driver import train

    overrides = base_overrides(mlflow_db, tmp_path_factory.mktemp("runs")) + [
        f"data.path={BUNDLED_DATA / 'digits.parquet'}", "data.conditions=[digit]", "data.columns={digit: categorical}",
        "train.epochs=2", "train.batch_size=128", "train.name=digits-shared", "mlflow.model_name=digits-shared"]
    outcome = train(load_config(None, overrides))
    return overrides, outcome


def start_mlflow_server(folder: Path, port: int, artifacts: str, env: dict[str, str]) -> subprocess.Popen:
    """A real `mlflow server` on 127.0.0.1:`port` (sqlite store in `folder`, log in folder/server.log), returned
    once it answers /health; killed and reported if it does not within 90 s."""
    import urllib.request

    with open(folder / "server.log", "ab") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri",
             f"sqlite:///{folder}/mlflow.db", "--artifacts-destination", artifacts,
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env={**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return process
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                if process.poll() is None:
                    os.killpg(process.pid, 9)
                raise RuntimeError(f"mlflow server did not start:\n{(folder / 'server.log').read_text()[-3000:]}")
            time.sleep(0.3)


@pytest.fixture(scope="session")
def mlflow_server(s3, s3_options, tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1: sqlite backend, artifacts proxied to the S3 endpoint.

    Only the server holds S3 credentials; clients (and Ray workers) talk HTTP to it."""
    s3.mkdir("mlflow-artifacts")
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3_options["endpoint_url"], "AWS_ACCESS_KEY_ID": S3_KEYS["key"],
           "AWS_SECRET_ACCESS_KEY": S3_KEYS["secret"]}
    process = start_mlflow_server(folder, port, "s3://mlflow-artifacts", env)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, 15)
        process.wait(20)


@pytest.fixture(scope="session")
def rare_training_combo(trained_adult):
    """(income, native-country, rows) seen the fewest times in `trained_adult`'s training split. Which rows train
    depends on Ray's row hash of the file's path, so a value seen once in Adult (Holand-Netherlands) may fall in
    the holdout wherever the checkout lives: ask the split, do not assume."""
    import pyarrow.compute as pc

    from pipeline.evaluate.audit import training_split
    from pipeline.config import load_config

    config = load_config(None, trained_adult[0])
    train = training_split(config.data.path, ["income", "native-country"], config.train.seed,
                           config.data.holdout_fraction)
    counts = train.filter(pc.is_valid(train["native-country"])).group_by(["income", "native-country"]).aggregate(
        [([], "count_all")]).sort_by([("count_all", "ascending"), ("native-country", "ascending")])
    income, country, rows = (counts.column(i)[0].as_py() for i in range(3))
    return income, country, rows
