"""The way users run it on a cluster: Ray Jobs submitted to a real `ray start --head`, a real MLflow server
with artifacts proxied to S3, data and output on the S3 endpoint."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import free_port, wait_for_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
EXCLUDES = [".venv", ".git", "runs", "*.db", "mlartifacts", "__pycache__", ".pytest_cache", "bench", "tests"]


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head` on 127.0.0.1 with its own temp dir and ports, beside the session's test cluster."""
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")
    gcs, dashboard = free_port(), free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env |= {"RAY_AUTH_MODE": "disabled", "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"}
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", f"--port={gcs}",
         "--node-ip-address=127.0.0.1", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={free_port()}",
         f"--ray-client-server-port={free_port()}", "--min-worker-port=21000", "--max-worker-port=21999",
         "--num-cpus=4", f"--object-store-memory={300 * 1024 ** 2}", f"--temp-dir={temp_dir}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(dashboard, head, seconds=90)
        from ray.job_submission import JobSubmissionClient

        deadline = time.time() + 60
        while True:
            try:
                yield JobSubmissionClient(f"http://127.0.0.1:{dashboard}")
                break
            except Exception:  # noqa: BLE001 - the job API comes up a little after the port
                if time.time() > deadline:
                    raise
                time.sleep(1)
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(10)
        except subprocess.TimeoutExpired:  # its graceful stop waits on every Ray process in turn (~30 s here)
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(30)
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit_and_wait(client, entrypoint, seconds=600):
    from ray.job_submission import JobStatus

    job_id = client.submit_job(entrypoint=entrypoint, runtime_env={
        "working_dir": str(ROOT), "excludes": EXCLUDES,
        "env_vars": {"RAY_AUTH_MODE": "disabled", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}})
    deadline = time.time() + seconds
    while (status := client.get_job_status(job_id)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        assert time.time() < deadline, f"job {job_id} still {status}:\n{client.get_job_logs(job_id)[-4000:]}"
        time.sleep(2)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, f"job {job_id} {status}:\n{logs[-6000:]}"
    return logs


def sets(*pairs):
    return " ".join(f"--set \"{pair}\"" for pair in pairs)


def test_jobs_train_generate_from_champion_and_evaluate_through_mlflow_server_and_s3(
        ray_head, mlflow_server, weather_on_s3, s3, s3_options):
    s3.mkdir("jobs")
    options = "{" + ", ".join(f"{k}: {v}" for k, v in s3_options.items()) + "}"
    common = [f"mlflow.tracking_uri={mlflow_server}", "mlflow.experiment=jobs", "mlflow.model_name=weather-jobs"]
    train_logs = submit_and_wait(ray_head, "python jobs/train.py " + sets(
        *common, f"data.path={weather_on_s3}", "data.conditions=[weather]", f"data.storage_options={options}",
        "train.epochs=1", "train.num_workers=2", "model.hidden=[32]", "train.name=jobs-train",
        "train.storage_path=s3://jobs/checkpoints", f"train.storage_options={options}"))
    assert "registered models:/weather-jobs/1" in train_logs

    # what the two workers' run left in MLflow (through the server) and on S3
    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("jobs").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["train.num_workers"] == "2"
    secrets = {k: v for k, v in run.data.params.items() if k.startswith(("data.storage_options", "train.storage_options"))}
    assert secrets and set(secrets.values()) == {"***"}
    for key in ("loss", "recon", "kl", "val_elbo", "rows_per_s", "epoch_seconds"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0], key
    assert "loss_curve.png" in [a.path for a in client.list_artifacts(run.info.run_id)]
    assert run.inputs.dataset_inputs and run.inputs.dataset_inputs[0].dataset.digest
    assert [str(v.version) for v in client.search_model_versions("name = 'weather-jobs'")] == ["1"]
    assert str(client.get_model_version_by_alias("weather-jobs", "candidate").version) == "1"
    assert s3.ls("jobs/checkpoints/jobs-train")
    client.set_registered_model_alias("weather-jobs", "champion", "1")  # a person promotes the candidate
    # The jobs ran without S3 credentials for MLflow; the server proxied the model into its bucket.
    assert any(path.endswith("artifacts/cvae/weights.pt") for path in s3.find("mlflow-artifacts"))
    # a person pulls the registered model through the server and asks it for rows
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(mlflow_server)
    pyfunc = mlflow.pyfunc.load_model("models:/weather-jobs@champion")
    rows = pyfunc.predict(pd.DataFrame({"weather": ["rain"] * 20 + ["sun"] * 5}), params={"seed": 1})
    assert list(rows.columns) == ["date", "precipitation", "temp_max", "temp_min", "wind", "weather"]
    assert rows["weather"].tolist() == ["rain"] * 20 + ["sun"] * 5

    generate = "python jobs/generate.py " + sets(
        *common, "generate.model_uri=models:/weather-jobs@champion", "generate.num_rows=5000",
        "generate.rows_per_part=2000", "generate.output=s3://jobs/synthetic", f"generate.storage_options={options}")
    submit_and_wait(ray_head, generate)
    names = sorted(p.rsplit("/", 1)[-1] for p in s3.ls("jobs/synthetic"))
    assert names == ["_SUCCESS", "_generation.json", "_manifest.json", "part-00000.parquet", "part-00001.parquet",
                     "part-00002.parquet"]
    manifest = json.loads(s3.cat("jobs/synthetic/_manifest.json"))
    assert manifest["model_uri"] == "models:/weather-jobs@champion"
    assert manifest["model_version_uri"] == "models:/weather-jobs/1"
    assert sum(part["rows"] for part in manifest["parts"]) == 5000

    # a re-triggered schedule (exit 0, nothing rewritten) is the same driver code: tests/test_generate.py

    evaluate_logs = submit_and_wait(ray_head, "python jobs/evaluate.py " + sets(
        *common, f"data.path={weather_on_s3}", "data.conditions=[weather]", f"data.storage_options={options}",
        "generate.output=s3://jobs/synthetic", f"generate.storage_options={options}", "evaluate.sample_rows=5000",
        "evaluate.privacy_rows=1000"))
    assert "quality 0." in evaluate_logs and "per weather" in evaluate_logs
    evaluation = client.search_runs([client.get_experiment_by_name("jobs").experiment_id],
                                    filter_string="tags.`cvae.model_version` = '1' and attributes.run_name LIKE 'evaluate%'")
    assert len(evaluation) == 1 and 0 < evaluation[0].data.metrics["quality_overall"] <= 1
    assert any(path.endswith("evaluation/report.json") for path in s3.find("mlflow-artifacts"))
