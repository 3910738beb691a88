"""Distributed training on a real local Ray cluster, data and checkpoints on a real S3 endpoint."""
import os
import signal
import threading
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.config import load_config
from pipeline.train import train

pytestmark = pytest.mark.slow


def config_for(workdir, *overrides):
    return load_config(None, [f"mlflow.tracking_uri=sqlite:///{workdir}/mlflow.db", "train.num_workers=2",
                              "model.hidden=[64, 64]", "model.latent_dim=8", *overrides])


def test_two_workers_on_s3_register_a_loadable_model(ray_cluster, workdir, adult, adult_on_s3, s3_options, s3):
    s3.mkdir("checkpoints")
    options = "{" + ", ".join(f"{k}: '{v}'" for k, v in s3_options.items()) + "}"
    config = config_for(workdir, f"data.path={adult_on_s3}", "data.conditions=[income]",
                        f"data.storage_options={options}", "train.epochs=3", "train.name=s3-run",
                        "train.storage_path=s3://checkpoints/train", f"train.storage_options={options}",
                        "mlflow.model_name=adult-s3",
                        "mlflow.alias=candidate")
    outcome = train(config)

    client = MlflowClient(config.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(config.mlflow.experiment)
    runs = client.search_runs([experiment.experiment_id])
    assert [run.info.run_id for run in runs] == [outcome.run_id]
    run = runs[0]
    assert run.data.params["train.num_workers"] == "2"
    secrets = {k: v for k, v in run.data.params.items() if k.startswith(("data.storage_options", "train.storage_options"))}
    assert secrets and set(secrets.values()) == {"***"}
    for key in ("loss", "recon", "kl", "val_elbo", "rows_per_s", "epoch_seconds"):
        assert [m.step for m in client.get_metric_history(outcome.run_id, key)] == [0, 1, 2], key
    assert "loss_curve.png" in [a.path for a in client.list_artifacts(outcome.run_id)]
    assert run.inputs.dataset_inputs and run.inputs.dataset_inputs[0].dataset.digest

    versions = client.search_model_versions("name = 'adult-s3'")
    assert [str(v.version) for v in versions] == ["1"]
    assert str(client.get_model_version_by_alias("adult-s3", "candidate").version) == "1"
    assert s3.ls("checkpoints/train/s3-run")

    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    pyfunc = mlflow.pyfunc.load_model("models:/adult-s3@candidate")
    rows = pyfunc.predict(pd.DataFrame({"income": [">50K"] * 20 + ["<=50K"] * 5}), params={"seed": 1})
    assert list(rows.columns) == adult.column_names
    assert rows["income"].tolist() == [">50K"] * 20 + ["<=50K"] * 5


def train_worker_pids() -> set[int]:
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"RayTrainWorker" in (proc / "cmdline").read_bytes():
                pids.add(int(proc.name))
        except OSError:
            continue
    return pids


def test_killed_worker_resumes_from_last_checkpoint(ray_cluster, workdir):
    config = config_for(workdir, "train.epochs=6", "train.max_failures=2", "train.name=fault",
                        "data.holdout_fraction=0.1", "mlflow.model_name=adult-fault")
    client = MlflowClient(config.mlflow.tracking_uri)
    killed = []

    def kill_after_second_epoch():
        deadline = time.time() + 240
        while time.time() < deadline:
            runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
            if runs and len(client.get_metric_history(runs[0].info.run_id, "loss")) >= 2:
                pids = sorted(train_worker_pids())
                if pids:
                    os.kill(pids[-1], signal.SIGKILL)
                    killed.append(pids[-1])
                    return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_after_second_epoch, daemon=True)
    killer.start()
    outcome = train(config)
    killer.join()

    assert killed, "no training worker was killed"
    assert killed[0] not in train_worker_pids()
    steps = [m.step for m in client.get_metric_history(outcome.run_id, "loss")]
    assert sorted(steps) == list(range(6)), steps  # every epoch once: resumed, not restarted from zero
    experiment = client.get_experiment_by_name(config.mlflow.experiment)
    assert len(client.search_runs([experiment.experiment_id])) == 1
    assert [str(v.version) for v in client.search_model_versions("name = 'adult-fault'")] == ["1"]


def test_rerun_of_a_finished_job_adds_no_run_or_version(ray_cluster, workdir):
    config = config_for(workdir, "train.epochs=1", "train.name=again", "mlflow.model_name=adult-again")
    first = train(config)
    second = train(config)
    assert (second.run_id, second.version) == (first.run_id, first.version)
    client = MlflowClient(config.mlflow.tracking_uri)
    assert len(client.search_model_versions("name = 'adult-again'")) == 1


def weights(checkpoint_dir):
    return torch.load(Path(checkpoint_dir) / "weights.pt", weights_only=True)


def test_same_seed_and_workers_give_identical_weights(ray_cluster, workdir):
    runs = [train(config_for(workdir, "train.epochs=2", f"train.name=seeded-{i}", "train.seed=5",
                             f"mlflow.model_name=adult-seeded-{i}")) for i in range(2)]
    first, second = (weights(run.checkpoint_dir) for run in runs)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
