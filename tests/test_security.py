"""Secrets never leak; models and manifests are validated on load; output names stay under the output prefix."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.cli import main
from pipeline.config import EncoderConfig, ModelConfig
from pipeline.encoding import TableEncoder
from pipeline.errors import UserError
from pipeline.model import build_model
from pipeline.artifact import load_artifact, save_artifact
from pipeline.sink import Sink
from tests.conftest import free_port

SECRET = "Sup3rS3cretValue0123456789abcdef"


@pytest.mark.slow
def test_known_secrets_appear_in_no_output(ray_cluster, workdir, adult_on_s3, s3_endpoint, s3):
    """Credentials in storage options and in a URI: grep logs, MLflow params and tags, manifests and errors."""
    s3.mkdir("secret-out")
    options = json.dumps({"endpoint_url": s3_endpoint, "key": "AKIASECRETKEY0000000", "secret": SECRET})
    tracking = f"sqlite:///{workdir}/mlflow.db"
    common = [f"mlflow.tracking_uri={tracking}", "mlflow.model_name=adult-secret",
              f"ray.address={ray_cluster.get_runtime_context().gcs_address}"]
    train = ["train", *sum([["--set", o] for o in [*common, f"data.path={adult_on_s3}", "data.conditions=[income]",
                                                  f"data.storage_options={options}", "train.epochs=1",
                                                  "model.hidden=[32]", f"train.storage_path={workdir}/runs"]], [])]
    generate = ["generate", *sum([["--set", o] for o in [*common, "generate.num_rows=2000",
                                                        "generate.output=s3://secret-out/data",
                                                        f"generate.storage_options={options}"]], [])]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "AWS_SECRET_ACCESS_KEY": SECRET}
    outputs = [subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, capture_output=True, text=True)
               for args in (train, generate)]
    assert [o.returncode for o in outputs] == [0, 0], outputs[-1].stderr[-3000:]
    failing = subprocess.run([sys.executable, "-m", "pipeline", "train", "--set",
                              f"mlflow.tracking_uri=http://alice:{SECRET}@127.0.0.1:{free_port()}"],
                             env=env, capture_output=True, text=True)
    assert failing.returncode == 1 and "***@127.0.0.1" in failing.stderr

    texts = [o.stdout + o.stderr for o in [*outputs, failing]]
    client = MlflowClient(tracking)
    for run in client.search_runs([e.experiment_id for e in client.search_experiments()]):
        texts.append(json.dumps([run.data.params, run.data.tags]))
    texts += [s3.cat(path).decode() for path in s3.find("secret-out") if path.endswith(".json")]
    for text in texts:
        assert SECRET not in text and "AKIASECRETKEY0000000" not in text


@pytest.fixture
def artifact(tmp_path, adult):
    encoder = TableEncoder.fit(adult.slice(0, 500).to_batches(), ["income"], EncoderConfig())
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
