"""Faults survived with real processes: killed drivers, a removed node, an S3 endpoint that stops answering, a
tracking server that goes away mid-training. Each test proves its fault hit running work, then what survived."""
import contextlib
import hashlib
import json
import os
import re
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
from pipeline.generate.driver import generate
from tests.conftest import S3_KEYS, free_port, start_mlflow_server, wait_for_port
from tests.test_train import checkpoints, latest_epoch, train_attempts

pytestmark = pytest.mark.slow
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


def cli(command, overrides):
    return [sys.executable, "-m", "pipeline", command, *sum([["--set", o] for o in overrides], [])]


def part_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).glob("part-*.parquet"))}


def wait_until(condition, seconds, what, poll=0.2):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, f"gave up after {seconds}s waiting for {what}"
        time.sleep(poll)


def loss_steps(tracking: str) -> list[int]:
    """The steps of the first run's "loss" history; [] while the store or run does not exist yet."""
    try:
        client = MlflowClient(tracking)
        runs = client.search_runs(["1"])
        return [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")] if runs else []
    except Exception:  # noqa: BLE001 - the store is still being created
        return []


def epoch_lines(stderr: str, epochs: int) -> list[int]:
    """The 0-based epochs a training driver printed progress for ("epoch 3/5 ..." is epoch 2)."""
    return [int(n) - 1 for n in re.findall(rf"^epoch (\d+)/{epochs} ", stderr, re.M)]


def test_killed_training_driver_resumes_on_rerun(ray_cluster, workdir):
    """SIGKILL the `cvae train` driver after two epochs reached MLflow: it dies with the job's workers, before
    registering; the rerun resumes the same run from the last checkpoint and trains only the epochs after it."""
    tracking = f"sqlite:///{workdir}/mlflow.db"
    overrides = [f"mlflow.tracking_uri={tracking}", "train.epochs=5", "train.name=driver-kill", "train.num_workers=2",
                 "model.hidden=[64]", "mlflow.model_name=adult-driver-kill", f"train.storage_path={workdir}/runs",
                 "train.keep_checkpoints=10", f"ray.address={ray_cluster.get_runtime_context().gcs_address}"]
    env = {**ENV, "RAY_TRAIN_ENABLE_STATE_TRACKING": "1"}  # Ray Train records the job's worker pids
    driver = subprocess.Popen(cli("train", overrides), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(loss_steps(tracking)) >= 2 or driver.poll() is not None, 300, "two epochs in MLflow")
        steps_at_kill = loss_steps(tracking)
        workers = {w.pid for a in train_attempts("driver-kill") for w in a.workers}
        assert driver.poll() is None, f"the driver exited with {driver.returncode} before the kill"
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait()
    assert driver.returncode == -signal.SIGKILL
    assert 2 <= len(steps_at_kill) < 5 and workers, (steps_at_kill, workers)  # killed mid-training
    # The job's Ray Train workers die with their driver: nothing is written after this point.
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), 60, "the job's workers to exit")
    client = MlflowClient(tracking)
    assert not client.search_model_versions("name = 'adult-driver-kill'")  # it died before registering
    last = latest_epoch(workdir / "runs" / "driver-kill")
    assert len(steps_at_kill) - 1 <= last < 4, (steps_at_kill, last)

    rerun = subprocess.run(cli("train", overrides), env=ENV, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert re.search(r"^mlflow run \w+ \(resumed\)", rerun.stderr, re.M), rerun.stderr[-3000:]
    assert epoch_lines(rerun.stderr, 5) == list(range(last + 1, 5)), rerun.stderr[-3000:]  # no epoch trained twice
    runs = client.search_runs(["1"])
    assert len(runs) == 1
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")]
    assert sorted(steps) == list(range(5)), steps
    saved = checkpoints(workdir / "runs" / "driver-kill")
    assert [progress["epoch"] for _, progress, _ in saved] == list(range(5))  # each epoch recorded once
    assert [entry["epoch"] for entry in saved[-1][1]["history"]] == list(range(5))
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
    from pipeline.train.driver import train

    folder = sys.argv[1]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 150 * 1024 ** 2})
    first = cluster.add_node(num_cpus=2, object_store_memory=150 * 1024 ** 2)
    ray.init(address=cluster.address)
    tracking = f"sqlite:///{folder}/mlflow.db"
    config = load_config(None, [f"mlflow.tracking_uri={tracking}", "train.epochs=4", "train.name=node-loss",
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
    runs = MlflowClient(tracking).search_runs(["1"])
    logged = len(MlflowClient(tracking).get_metric_history(runs[0].info.run_id, "loss"))
    alive = worker.is_alive()
    cluster.remove_node(first)
    worker.join()
    client = MlflowClient(tracking)
    runs = client.search_runs(["1"])
    print(json.dumps({"removed_mid_training": alive and logged < 4, "runs": len(runs), "steps": [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")],
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
    assert result["removed_mid_training"], result  # the node went while training ran on it
    assert result["runs"] == 1 and result["versions"] == 1, (result, done.stderr[-4000:])
    assert result["steps"].count(0) == 1 and max(result["steps"]) == 3, result


@pytest.fixture
def flaky_s3(tmp_path):
    """A moto server of this test's own, so pausing it stalls no other test; its request log in moto.log."""
    import s3fs

    port = free_port()
    log = tmp_path / "moto.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1",
                                   "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    wait_for_port(port, server)
    options = {"endpoint_url": f"http://127.0.0.1:{port}", **S3_KEYS,
               "config_kwargs": {"connect_timeout": 1, "read_timeout": 1, "retries": {"max_attempts": 2}}}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("flaky")
    yield server, options, fs, log
    server.send_signal(signal.SIGCONT)
    server.terminate()
    server.wait(10)


def storage_set(options):
    return "generate.storage_options=" + json.dumps(options)


def test_s3_outage_never_leaves_success_over_missing_parts(trained_adult, ray_cluster, tmp_path, flaky_s3):
    """The endpoint stops answering for 15 s mid-write, past the client's retry budget, then comes back: the job
    either rides it out or fails with one line; a `_SUCCESS` always means every part is there."""
    server, options, fs, _ = flaky_s3
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


def unread_requests(port: int) -> int:
    """What waits on a server at 127.0.0.1:`port` that it has not read: connections it has not accepted (the
    listening socket's queue) plus connections holding request bytes it has not read (this host's /proc/net/tcp)."""
    waiting = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, state, rx_queue = int(fields[1].split(":")[1], 16), fields[3], int(fields[4].split(":")[1], 16)
        if local_port == port and rx_queue:
            waiting += rx_queue if state == "0A" else 1  # 0A: LISTEN, whose rx_queue counts unaccepted connections
    return waiting


def test_short_s3_stall_is_retried(trained_adult, ray_cluster, tmp_path, flaky_s3):
    """The endpoint freezes (SIGSTOP) while parts are being written, until a request sent to it has waited past the
    client's 2 s read timeout (a few seconds): that attempt fails, is retried, and the job ends with every part
    intact and no error."""
    server, options, fs, log = flaky_s3
    base, _ = trained_adult
    port, read_timeout = int(options["endpoint_url"].rsplit(":", 1)[1]), 2
    options = {**options, "config_kwargs": {"connect_timeout": 1, "read_timeout": read_timeout,
                                            "retries": {"max_attempts": 10, "mode": "standard"}}}
    overrides = [*base, "generate.conditions={income: {'>50K': 20000}}", "generate.rows_per_part=200",
                 "generate.output=s3://flaky/stall", storage_set(options),
                 f"ray.address={ray_cluster.get_runtime_context().gcs_address}"]
    driver = subprocess.Popen(cli("generate", overrides), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    parts = lambda: fs.invalidate_cache() or len(fs.glob("flaky/stall/part-*.parquet"))  # noqa: E731
    wait_until(lambda: parts() >= 2 or driver.poll() is not None, 120, "the first parts")
    written = parts()
    assert driver.poll() is None and written < 100, (driver.poll(), written)  # the job is mid-write
    server.send_signal(signal.SIGSTOP)
    stopped, first_waiting = time.time(), None
    try:  # frozen until a request has waited on it past the client's read timeout: that attempt must fail
        while time.time() - stopped < 10 and (first_waiting is None or time.time() - first_waiting < read_timeout + 1):
            if first_waiting is None and unread_requests(port):
                first_waiting = time.time()
            time.sleep(0.05)
    finally:
        server.send_signal(signal.SIGCONT)
    resumed = time.time()
    _, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err[-3000:]
    assert first_waiting is not None, f"no request reached the stalled endpoint; its log:\n{log.read_text()[-3000:]}"
    assert resumed - first_waiting > read_timeout, (first_waiting - stopped, resumed - stopped)  # so it timed out
    assert (fs.invalidate_cache() or fs.exists("flaky/stall/_SUCCESS"))
    manifest = json.loads(fs.cat("flaky/stall/_manifest.json"))
    assert [entry["part"] for entry in manifest["parts"]] == list(range(100))
    for entry in manifest["parts"]:
        assert hashlib.sha256(fs.cat(f"flaky/stall/{entry['file']}")).hexdigest() == entry["sha256"], entry["file"]


class MlflowServer:
    """A real `mlflow server` of one test's own (sqlite store, local artifacts) that the test can kill and restart on
    the same port, its clients none the wiser."""

    def __init__(self, folder: Path):
        self.folder, self.port, self.process = folder, free_port(), None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = start_mlflow_server(self.folder, self.port, f"file://{self.folder}/artifacts", dict(os.environ))

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def own_mlflow(tmp_path):
    server = MlflowServer(tmp_path)
    server.start()
    yield server
    with contextlib.suppress(ProcessLookupError):
        server.kill()


def test_mlflow_server_gone_mid_training_costs_no_epoch_or_metric(ray_cluster, workdir, own_mlflow):
    """The tracking server is killed once the first epoch's metrics reached it and comes back (same port, same store)
    only after the controller failed to log an epoch to it. Training goes on without a restart; every epoch's
    metrics end up in the run exactly once, and the model is registered once."""
    overrides = [f"mlflow.tracking_uri={own_mlflow.url}", "train.epochs=6", "train.name=mlflow-outage",
                 "model.hidden=[64]", "mlflow.model_name=adult-outage", f"train.storage_path={workdir}/runs",
                 "train.keep_checkpoints=10", f"ray.address={ray_cluster.get_runtime_context().gcs_address}"]
    stderr = workdir / "driver.stderr"
    with open(stderr, "w") as err:
        driver = subprocess.Popen(cli("train", overrides), env={**ENV, "RAY_TRAIN_ENABLE_STATE_TRACKING": "1"},
                                  stdout=subprocess.DEVNULL, stderr=err, text=True)
    client = MlflowClient(own_mlflow.url)
    try:
        run_id = lambda: re.findall(r"^mlflow run (\w+) \(new\)", stderr.read_text(), re.M)  # noqa: E731
        wait_until(lambda: driver.poll() is not None or (run_id() and client.get_metric_history(run_id()[0], "loss")),
                   300, "the first epoch's metrics in MLflow")
        steps_before = [m.step for m in client.get_metric_history(run_id()[0], "loss")]
        assert driver.poll() is None and len(steps_before) < 6, stderr.read_text()[-3000:]
        own_mlflow.kill()
        down = time.time()
        wait_until(lambda: "did not take epoch metrics" in stderr.read_text() or driver.poll() is not None, 120,
                   "the controller to fail logging an epoch")
        assert "did not take epoch metrics" in stderr.read_text(), stderr.read_text()[-3000:]
        time.sleep(max(0.0, 8 - (time.time() - down)))
        own_mlflow.start()
        driver.wait(300)
    finally:
        driver.kill()
        driver.wait()
    text = stderr.read_text()
    assert driver.returncode == 0, text[-3000:]
    assert re.search(r"^warning: MLflow at http://127\.0\.0\.1:\d+ did not take epoch metrics", text, re.M), text
    assert epoch_lines(text, 6) == list(range(6)), text  # each epoch trained once
    attempts = train_attempts("mlflow-outage")
    assert [a.status for a in attempts] == ["FINISHED"], [(a.status, a.status_detail) for a in attempts]  # no restart
    run = client.get_run(run_id()[0])
    for key in ("loss", "kl", "val_elbo", "epoch_seconds"):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == list(range(6)), key
    assert len(client.search_runs([run.info.experiment_id])) == 1
    assert [str(v.version) for v in client.search_model_versions("name = 'adult-outage'")] == ["1"]
    assert [progress["epoch"] for _, progress, _ in checkpoints(workdir / "runs" / "mlflow-outage")] == list(range(6))
