"""Secrets never leak; models and manifests are validated on load; output names stay under the output prefix."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.cli import main
from pipeline.config import EncoderConfig, ModelConfig
from pipeline.codec import fit_table
from pipeline.errors import UserError
from pipeline.model.cvae import build_model
from pipeline.artifact import load_artifact, save_artifact
from pipeline.generate.sink import Sink
from tests.conftest import free_port

SECRET = "Sup3rS3cretValue0123456789abcdef"


def files_holding(secrets: list[str], *folders: Path) -> list[str]:
    """Every regular file under `folders` that holds one of `secrets` (bytes, so databases and binaries count)."""
    needles = [secret.encode() for secret in secrets]
    found = []
    for folder in folders:
        for path in Path(folder).rglob("*"):
            if path.is_file() and not path.is_symlink():
                try:
                    data = path.read_bytes()
                except OSError:  # a file the cluster removed while we walked
                    continue
                found += [f"{path}: {secret}" for secret, needle in zip(secrets, needles) if needle in data]
    return found


@pytest.mark.slow
def test_known_secrets_appear_in_nothing_a_run_writes(workdir, weather_on_s3, s3_endpoint, s3):
    """Credentials in storage options and in a URI, and a private run's noise seed. `cvae run` (train, generate,
    evaluate; with train.privacy) on a Ray cluster of its own whose session folder (every Ray log, worker output
    included) is private to this test: grep all of it, the console, checkpoints, the MLflow store and artifacts,
    the run's temp files and every object it wrote to S3."""
    s3.mkdir("secret-out")
    key_id = "AKIASECRETKEY0000000"
    noise_seed = "918273645546372819"  # differential privacy's secret: whoever knows it can remove the noise
    secrets = [SECRET, key_id, noise_seed]
    options = json.dumps({"endpoint_url": s3_endpoint, "key": key_id, "secret": SECRET})
    private = Path(tempfile.mkdtemp(prefix="cvae-ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    (private / "tmp").mkdir()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "AWS_SECRET_ACCESS_KEY": SECRET, "RAY_TMPDIR": str(private),
           "TMPDIR": str(private / "tmp")}
    env.pop("RAY_ADDRESS", None)
    tracking = f"sqlite:///{workdir}/mlflow.db"
    overrides = [f"mlflow.tracking_uri={tracking}", "mlflow.model_name=weather-secret", f"data.path={weather_on_s3}",
                 "data.conditions=[weather]", f"data.storage_options={options}", "train.epochs=1", "model.hidden=[32]",
                 f"train.storage_path={workdir}/runs", "generate.num_rows=2000", "generate.output=s3://secret-out/data",
                 f"generate.storage_options={options}", "evaluate.sample_rows=1000", "evaluate.privacy_rows=200",
                 "train.privacy.epsilon=8", f"train.privacy.noise_seed={noise_seed}"]
    try:
        run = subprocess.run([sys.executable, "-m", "pipeline", "run", "--verbose",
                              *sum([["--set", o] for o in overrides], [])],
                             env=env, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stderr[-3000:]
        failing = subprocess.run([sys.executable, "-m", "pipeline", "train", "--set",
                                  f"mlflow.tracking_uri=http://alice:{SECRET}@127.0.0.1:{free_port()}"],
                                 env=env, capture_output=True, text=True)
        assert failing.returncode == 1 and "***@127.0.0.1" in failing.stderr

        sessions = list((private / "ray").glob("session_2*"))
        assert len(sessions) == 1 and list((sessions[0] / "logs").glob("worker-*.out")), sessions  # Ray's logs
        client = MlflowClient(tracking)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert len(runs) == 3  # train, generate, evaluate: each wrote params, tags, metrics and artifacts
        texts = [run.stdout, run.stderr, failing.stdout, failing.stderr,
                 json.dumps([[r.data.params, r.data.tags] for r in runs])]
        texts += [s3.cat(path).decode("latin-1") for path in s3.find("secret-out")]
        assert [secret for secret in secrets for text in texts if secret in text] == []
        assert files_holding(secrets, private, workdir) == []
    finally:
        shutil.rmtree(private, ignore_errors=True)


@pytest.fixture
def artifact(tmp_path, adult):
    encoder = fit_table(adult.slice(0, 500).to_batches(), ["income"], EncoderConfig())
    model = build_model(encoder.x_dim, encoder.c_dim, encoder.feature_spans, ModelConfig(hidden=[16]))
    save_artifact(tmp_path / "model", model, encoder.to_json())
    return tmp_path / "model"


def test_intact_artifact_loads(artifact):
    model, encoder = load_artifact(artifact)
    assert encoder.conditions == ["income"]


def test_tampered_weights_are_refused(artifact):
    weights = artifact / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match="checksum mismatch"):
        load_artifact(artifact)


def test_unexpected_files_are_refused(artifact):
    (artifact / "payload.pkl").write_bytes(b"\x80\x04")
    with pytest.raises(UserError, match="unexpected model files"):
        load_artifact(artifact)


def test_corrupt_manifest_is_refused(tmp_path):
    (tmp_path / "_generation.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        Sink(str(tmp_path)).read_json("_generation.json")


@pytest.mark.parametrize("name", ["../escape.parquet", "/etc/passwd", "a/../../b"])
def test_names_cannot_escape_the_output_prefix(tmp_path, name):
    with pytest.raises(UserError, match="escape the output prefix"):
        Sink(str(tmp_path / "out")).write(name, b"x")
    assert not any(Path(tmp_path).rglob("*escape*"))


def test_error_messages_redact_uri_credentials(capsys):
    assert main(["train", "--set", f"data.path=memory://key:{SECRET}@bucket/x", "--set", "data.conditions=[a]"]) == 1
    assert SECRET not in capsys.readouterr().err
