"""The model artifact: a folder of plain files that a checkpoint, MLflow and a Ray actor all carry.

`weights.pt` (a state_dict, loaded with weights_only=True), `model.json`
(hyper-parameters), `encoder.json` (the fitted encoder), `privacy.json` for a
model trained under `train.privacy` (its (epsilon, delta) and how it was spent)
and `artifact.json` (format and SHA-256 of each file). No pickled module, no
training rows.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import torch

from pipeline.codec import TableEncoder
from pipeline.errors import UserError
from pipeline.model.cvae import CVAE, CVAEConfig

ARTIFACT_FORMAT = "cvae-model/1"
ARTIFACT_FILES = ("weights.pt", "model.json", "encoder.json")
PRIVACY_FILE = "privacy.json"  # only in a differentially private model
MODEL_ARTIFACT = "cvae"  # the artifact folder's name inside the logged pyfunc: artifacts/cvae/


def save_artifact(directory: str | Path, model: CVAE, encoder_json: str, privacy: dict | None = None) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, directory / "weights.pt")
    (directory / "model.json").write_text(json.dumps(model.config.to_dict()))
    (directory / "encoder.json").write_text(encoder_json)
    if privacy is not None:
        (directory / PRIVACY_FILE).write_text(json.dumps(privacy))
    checksums = {name: _sha256(directory / name) for name in artifact_files(directory)}
    (directory / "artifact.json").write_text(json.dumps({"format": ARTIFACT_FORMAT, "sha256": checksums}))


def load_artifact(directory: str | Path, device: str = "cpu") -> tuple[CVAE, TableEncoder]:
    """Refuses a folder with unexpected files or a checksum that does not match."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / "artifact.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise UserError(f"{directory} is not a cvae model artifact (artifact.json missing or unreadable)") from None
    if manifest.get("format") != ARTIFACT_FORMAT:
        raise UserError(f"{directory}: model format {manifest.get('format')!r}, expected {ARTIFACT_FORMAT}")
    present = {p.name for p in directory.iterdir()} - {"artifact.json"}
    if present != set(artifact_files(directory)) or PRIVACY_FILE in present and PRIVACY_FILE not in manifest.get("sha256", {}):
        raise UserError(f"{directory}: unexpected model files {sorted(present ^ set(ARTIFACT_FILES))}; refusing to load")
    for name, expected in manifest.get("sha256", {}).items():
        if _sha256(directory / name) != expected:
            raise UserError(f"{directory}/{name}: checksum mismatch, the model was modified; re-export it")
    model = CVAE(CVAEConfig(**json.loads((directory / "model.json").read_text())))
    model.load_state_dict(torch.load(directory / "weights.pt", map_location=device, weights_only=True))
    model.to(device).eval()
    return model, TableEncoder.from_json((directory / "encoder.json").read_text())


def artifact_files(directory: str | Path) -> tuple[str, ...]:
    """The files a model folder holds besides artifact.json: privacy.json too when it was trained privately."""
    return (*ARTIFACT_FILES, PRIVACY_FILE) if (Path(directory) / PRIVACY_FILE).exists() else ARTIFACT_FILES


def privacy_guarantee(files: dict[str, bytes]) -> dict | None:
    """The (epsilon, delta) guarantee of a model's files (as `fetch_model` returns them); None if not private."""
    return json.loads(files[PRIVACY_FILE]) if PRIVACY_FILE in files else None


def load_artifact_files(files: dict[str, bytes], device: str = "cpu") -> tuple[CVAE, TableEncoder]:
    with tempfile.TemporaryDirectory() as scratch:
        for name, data in files.items():
            (Path(scratch) / Path(name).name).write_bytes(data)
        return load_artifact(scratch, device)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
