"""Distributed training on a real local Ray cluster, data and checkpoints on a real S3 endpoint."""
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import ray.train
import torch
from mlflow.tracking import MlflowClient

from pipeline.config import load_config
from pipeline.train.driver import train

pytestmark = pytest.mark.slow


def config_for(workdir, *overrides):
    return load_config(None, [f"mlflow.tracking_uri=sqlite:///{workdir}/mlflow.db", "train.num_workers=2",
                              "model.hidden=[64, 64]", "model.latent_dim=8", *overrides])


def train_attempts(name: str) -> list:
    """Ray Train's own record of the latest run called `name` (kept when RAY_TRAIN_ENABLE_STATE_TRACKING=1): its
    worker-group attempts, oldest first, each with a status and its workers' pids."""
    from ray.train.v2._internal.state.state_actor import get_state_actor

    actor = get_state_actor()
    runs = [run for run in ray.get(actor.get_train_runs.remote()).values() if run.name == name] if actor else []
    if not runs:
        return []
    run = max(runs, key=lambda r: r.start_time_ns)
    attempts = ray.get(actor.get_train_run_attempts.remote()).get(run.id, {})
    return sorted(attempts.values(), key=lambda a: a.start_time_ns)


def checkpoints(job_dir) -> list[tuple[Path, dict, int]]:
    """The checkpoints Ray Train recorded for a job (what a restart or rerun resumes from; a worker group that dies
    mid-report can leave a folder it never recorded), as (folder, training progress saved in it, write time in ns),
    by epoch. Keeps all of them only with train.keep_checkpoints >= epochs."""
    found = []
    for checkpoint, _ in ray.train.Result.from_path(str(job_dir)).best_checkpoints:
        state = Path(checkpoint.path) / "training_state.pt"
        progress = torch.load(state, weights_only=True)["progress"]
        found.append((Path(checkpoint.path), progress, state.stat().st_mtime_ns))
    return sorted(found, key=lambda item: item[1]["epoch"])


def latest_epoch(job_dir) -> int:
    """The epoch of the checkpoint a rerun of the job resumes from."""
    with ray.train.Result.from_path(str(job_dir)).checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / "training_state.pt", weights_only=True)["progress"]["epoch"]


def weights(checkpoint_dir):
    return torch.load(Path(checkpoint_dir) / "weights.pt", weights_only=True)


def same_weights(first, second) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


def kill_a_worker_after(client: MlflowClient, job: str, metric: str, epochs: int, killed: dict) -> threading.Thread:
    """A started thread that SIGKILLs one running worker of training job `job` as soon as MLflow holds `epochs`
    epochs of `metric`; it records the pid and the epochs logged by then in `killed`."""
    def kill():
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
                steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, metric)] if runs else []
            except Exception:  # noqa: BLE001 - the store is still being created
                steps = []
            running = [a for a in train_attempts(job) if a.status == "RUNNING" and a.workers]
            if len(steps) >= epochs and running:
                pid = running[-1].workers[-1].pid
                os.kill(pid, signal.SIGKILL)
                killed.update(pid=pid, steps=steps)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    return killer


def test_rerun_of_a_finished_job_trains_nothing_and_adds_no_run_or_version(trained_adult, capsys):
    """The session's shared Adult job, submitted again as it was: the same run and version come back at once, with no
    checkpoint written and no Ray Train run started; asked for more epochs, the same job would resume instead."""
    overrides, first = trained_adult
    config = load_config(None, overrides)
    job_dir = Path(first.checkpoint_dir).parent
    before = sorted(p.name for p in job_dir.iterdir())
    capsys.readouterr()
    started = time.perf_counter()
    second = train(config)
    assert time.perf_counter() - started < 15  # checks and two registry calls; a Ray Train start alone is ~10 s
    assert (second.run_id, second.version) == (first.run_id, first.version)
    assert "finished its 1 epochs earlier: nothing to train" in capsys.readouterr().err
    assert sorted(p.name for p in job_dir.iterdir()) == before
    client = MlflowClient(config.mlflow.tracking_uri)
    assert len(client.search_model_versions(f"name = '{config.mlflow.model_name}'")) == 1
    assert str(client.get_model_version_by_alias(config.mlflow.model_name, "champion").version) == first.version


def test_short_epochs_do_not_wait_for_the_controller(ray_cluster, workdir):
    """Digits' epochs take a fraction of a second. A worker's report waits until Ray Train's controller has taken
    the previous one; at the controller's default 2 s poll every such epoch would idle ~1.8 s (a 78-101% overhead
    on Adult before `cvae train` set the poll to 0.2 s)."""
    from pipeline.config import BUNDLED_DATA

    config = config_for(workdir, f"data.path={BUNDLED_DATA / 'digits.parquet'}", "data.conditions=[digit]",
                        "data.columns={digit: categorical}", "data.holdout_fraction=0.0", "train.num_workers=1",
                        "train.epochs=4", "train.batch_size=256", "train.name=short-epochs",
                        "mlflow.model_name=short-epochs")
    outcome = train(config)
    client = MlflowClient(config.mlflow.tracking_uri)
    waited = [m.value for m in sorted(client.get_metric_history(outcome.run_id, "previous_report_seconds"),
                                      key=lambda m: m.step)]
    assert len(waited) == 4
    # each report, checkpoint upload included, returns within a poll or so; the median, because one report in
    # three can meet a 1.2 s hiccup on a loaded 2-core machine, while a 2 s poll makes every one wait ~1.8 s
    assert sorted(waited[1:])[1] < 1.0, waited
