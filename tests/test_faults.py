"""Faults survived with real processes: killed drivers, a removed node, an S3 endpoint that stops answering."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import load_config
from pipeline.generate import generate
from tests.conftest import S3_KEYS, free_port, wait_for_port

pytestmark = pytest.mark.slow
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


def cli(command, overrides):
    return [sys.executable, "-m", "pipeline", command, *sum([["--set", o] for o in overrides], [])]


def part_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).glob("part-*.parquet"))}


def test_killed_training_driver_resumes_on_rerun(ray_cluster, workdir):
    tracking = f"sqlite:///{workdir}/mlflow.db"
    overrides = [f"mlflow.tracking_uri={tracking}", "train.epochs=5", "train.name=driver-kill", "train.num_workers=2",
                 "model.hidden=[64]", "mlflow.model_name=adult-driver-kill", f"train.storage_path={workdir}/runs",
                 f"ray.address={ray_cluster.get_runtime_context().gcs_address}"]
    driver = subprocess.Popen(cli("train", overrides), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None:
        try:
            runs = MlflowClient(tracking).search_runs(["1"])
            if runs and len(MlflowClient(tracking).get_metric_history(runs[0].info.run_id, "loss")) >= 2:
                break
        except Exception:  # noqa: BLE001 - the store is still being created
            pass
        time.sleep(0.3)
    driver.send_signal(signal.SIGKILL)
    driver.wait()

    rerun = subprocess.run(cli("train", overrides), env=ENV, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    client = MlflowClient(tracking)
    runs = client.search_runs(["1"])
    assert len(runs) == 1
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")]
    assert steps.count(0) == 1 and max(steps) == 4, steps  # continued, not restarted from epoch 0
    assert len(client.search_model_versions("name = 'adult-driver-kill'")) == 1


@pytest.mark.parametrize("point", ["after_spec", "before_manifest", "before_success"])
def test_generation_driver_killed_at_each_point_resumes_byte_identical(trained_adult, ray_cluster, tmp_path, point):
    base, _ = trained_adult
    plan = ["generate.conditions={income: {'>50K': 6000}}", "generate.rows_per_part=1000"]
    generate(load_config(None, [*base, *plan, f"generate.output={tmp_path / 'reference'}"]))
    overrides = [*base, *plan, f"generate.output={tmp_path / 'out'}",
                 f"ray.address={ray_cluster.get_runtime_context().gcs_address}"]
    crashed = subprocess.run(cli("generate", overrides), env={**ENV, "CVAE_FAILPOINT": point}, capture_output=True)
    assert crashed.returncode == -signal.SIGKILL
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    assert subprocess.run(cli("generate", overrides), env=ENV, capture_output=True).returncode == 0
    assert part_bytes(tmp_path / "out") == part_bytes(tmp_path / "reference")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in (tmp_path / "reference").iterdir())


NODE_REMOVAL = textwrap.dedent("""
    import json, sys, threading, time
    import ray
    from ray.cluster_utils import Cluster
    from mlflow.tracking import MlflowClient
    from pipeline.config import load_config
    from pipeline.train import train

    folder = sys.argv[1]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 150 * 1024 ** 2})
    first = cluster.add_node(num_cpus=2, object_store_memory=150 * 1024 ** 2)
    ray.init(address=cluster.address)
    tracking = f"sqlite:///{folder}/mlflow.db"
    config = load_config(None, [f"mlflow.tracking_uri={tracking}", "train.epochs=5", "train.name=node-loss",
                                "train.num_workers=2", "train.max_failures=2", "train.cache=never", "model.hidden=[64]",
                                "mlflow.model_name=adult-node-loss", f"train.storage_path={folder}/runs"])
    result = {}
    worker = threading.Thread(target=lambda: result.update(outcome=train(config)))
    worker.start()
    while worker.is_alive():
        runs = MlflowClient(tracking).search_runs(["1"]) if MlflowClient(tracking).search_experiments() else []
        if runs and MlflowClient(tracking).get_metric_history(runs[0].info.run_id, "loss"):
            break
        time.sleep(0.3)
    cluster.add_node(num_cpus=2, object_store_memory=150 * 1024 ** 2)
    cluster.remove_node(first)
    worker.join()
    client = MlflowClient(tracking)
    runs = client.search_runs(["1"])
    print(json.dumps({"runs": len(runs), "steps": [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")],
                      "versions": len(client.search_model_versions("name = 'adult-node-loss'"))}))
    ray.shutdown()
    cluster.shutdown()
""")


def test_node_removed_mid_training_completes_from_checkpoint(tmp_path):
    """A multi-node local cluster (ray.cluster_utils.Cluster), in its own process beside the session's cluster."""
    done = subprocess.run([sys.executable, "-c", NODE_REMOVAL, str(tmp_path)], env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["runs"] == 1 and result["versions"] == 1
    assert result["steps"].count(0) == 1 and max(result["steps"]) == 4, result


@pytest.fixture
def flaky_s3(tmp_path):
    """A moto server of this test's own, so pausing it stalls no other test."""
    import s3fs

    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, server)
    options = {"endpoint_url": f"http://127.0.0.1:{port}", **S3_KEYS,
               "config_kwargs": {"connect_timeout": 1, "read_timeout": 1, "retries": {"max_attempts": 2}}}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("flaky")
    yield server, options, fs
    server.send_signal(signal.SIGCONT)
    server.terminate()
    server.wait(10)


def storage_set(options):
    return "generate.storage_options=" + json.dumps(options)


def test_s3_outage_never_leaves_success_over_missing_parts(trained_adult, ray_cluster, tmp_path, flaky_s3):
    """The endpoint stops answering for 15 s mid-write, past the client's retry budget, then comes back: the job
    either rides it out or fails with one line; a `_SUCCESS` always means every part is there."""
    server, options, fs = flaky_s3
    base, _ = trained_adult
    plan = ["generate.conditions={income: {'>50K': 40000}}", "generate.rows_per_part=1000"]
    generate(load_config(None, [*base, *plan, f"generate.output={tmp_path / 'reference'}"]))
    overrides = [*base, *plan, "generate.output=s3://flaky/out", storage_set(options),
                 f"ray.address={ray_cluster.get_runtime_context().gcs_address}"]
    driver = subprocess.Popen(cli("generate", overrides), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    deadline = time.time() + 120
    while fs.invalidate_cache() or len(fs.glob("flaky/out/part-*.parquet")) < 3:
        assert time.time() < deadline and driver.poll() is None
        time.sleep(0.1)
    server.send_signal(signal.SIGSTOP)
    time.sleep(15)
    server.send_signal(signal.SIGCONT)
    _, err = driver.communicate(timeout=300)
    assert driver.returncode in (0, 1), err[-3000:]
    if driver.returncode == 1:
        assert err.strip().splitlines()[-1].startswith("cvae generate: failed:")
        assert not (fs.invalidate_cache() or fs.exists("flaky/out/_SUCCESS"))
        rerun = subprocess.run(cli("generate", overrides), env=ENV, capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (fs.invalidate_cache() or fs.exists("flaky/out/_SUCCESS"))
    for name, data in part_bytes(tmp_path / "reference").items():
        assert fs.cat(f"flaky/out/{name}") == data
    assert pq.read_table("flaky/out", filesystem=fs).num_rows == 40000


def test_short_s3_stall_is_retried(trained_adult, ray_cluster, tmp_path, flaky_s3):
    server, options, fs = flaky_s3
    base, _ = trained_adult
    options = {**options, "config_kwargs": {"connect_timeout": 1, "read_timeout": 2,
                                            "retries": {"max_attempts": 10, "mode": "standard"}}}
    overrides = [*base, "generate.conditions={income: {'>50K': 20000}}", "generate.rows_per_part=1000",
                 "generate.output=s3://flaky/stall", storage_set(options),
                 f"ray.address={ray_cluster.get_runtime_context().gcs_address}"]
    driver = subprocess.Popen(cli("generate", overrides), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    while not (fs.invalidate_cache() or fs.exists("flaky/stall/_generation.json")):
        assert driver.poll() is None
        time.sleep(0.1)
    server.send_signal(signal.SIGSTOP)
    time.sleep(3)
    server.send_signal(signal.SIGCONT)
    _, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err[-3000:]
    assert (fs.invalidate_cache() or fs.exists("flaky/stall/_SUCCESS"))
