"""Sink: the generated dataset's layout on any fsspec URI.

    OUTPUT/part-00000.parquet ...   fixed rows per part, written whole (no reader sees half a part)
    OUTPUT/_generation.json         the spec, written before the first part: a rerun must match it
    OUTPUT/_parts/part-00000.json   journal: a part is complete once its entry exists
    OUTPUT/_manifest.json           parts, checksums, schema, model version, ... (after the last part)
    OUTPUT/_SUCCESS                 written last
Names starting with `_` are ignored by Parquet readers (pyarrow, Spark, Ray Data).
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import signal
import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pipeline.errors import UserError
from pipeline.storage import filesystem, is_local, redact

SPEC = "_generation.json"
MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"
REPORT_PAGE = "_evaluation.html"  # cvae evaluate's page, written beside a dataset it scored
JOURNAL = "_parts"


@dataclass(frozen=True)
class DatasetManifest:
    """`_manifest.json`: what a finished dataset holds and where it came from. Generation writes it (then
    `_SUCCESS`); evaluation reads it. A field an older manifest lacks reads as its default."""
    model_uri: str = ""          # as the job asked for it (an alias or a version)
    model_version_uri: str = ""  # models:/NAME/VERSION it resolved to
    model_version: str = ""
    run_id: str = ""             # the generation's MLflow run
    seed: int = 0
    conditions: Any = None       # generate.conditions, credentials redacted
    plan_fingerprint: str = ""
    num_rows: int = 0
    rows_per_part: int = 0
    parts: list[dict[str, Any]] = field(default_factory=list)  # per part: file, rows, bytes, sha256
    schema: list[dict[str, str]] = field(default_factory=list)
    excluded_columns: list[str] = field(default_factory=list)  # left out of the model (data.exclude)
    generated_ids: list[str] = field(default_factory=list)     # fresh values, unique here, never a training value
    personal_columns: list[str] = field(default_factory=list)  # names, e-mails, addresses... drawn from Faker
    column_formats: dict[str, str] = field(default_factory=dict)  # strings read as dates, times, numbers; Faker's
    rules: list[str] = field(default_factory=list)  # rules every row keeps (data.rules and those found)
    training_rows_left_out: int = 0  # training rows breaking data.rules, not learned from (data.rules_breaking)
    value_protection: dict[str, Any] = field(default_factory=dict)
    differential_privacy: dict[str, Any] | None = None  # the model's (epsilon, delta); None: not trained privately
    arrow_schema: str = ""
    created_at: str = ""
    code_version: str = ""
    format: str = "cvae-synthetic/1"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DatasetManifest":
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def failpoint(name: str) -> None:
    """Crash-recovery tests set CVAE_FAILPOINT=name to SIGKILL this process right here: a real death, not an exception."""
    if os.environ.get("CVAE_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def part_name(part: int) -> str:
    return f"part-{part:05d}.parquet"


class Sink:
    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None):
        self.uri = uri
        self.fs, self.root = filesystem(uri, storage_options)
        self.root = self.root.rstrip("/")

    def path(self, name: str) -> str:
        if name.startswith("/") or ".." in name.split("/"):
            raise UserError(f"refusing to write {name!r}: it would escape the output prefix")
        return posixpath.join(self.root, name)

    def exists(self, name: str) -> bool:
        return self.fs.exists(self.path(name))

    def read_json(self, name: str) -> dict[str, Any] | None:
        try:
            with self.fs.open(self.path(name), "rb") as handle:
                return json.loads(handle.read())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:
            raise UserError(f"{redact(self.uri)}/{name} is corrupt; rerun with --overwrite") from None

    def write(self, name: str, data: bytes) -> None:
        """Readers see the whole object or nothing: local files by rename, object stores by a single PUT."""
        target = self.path(name)
        self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        if is_local(self.uri):
            staging = posixpath.join(posixpath.dirname(target), f".{posixpath.basename(target)}.{uuid.uuid4().hex}.tmp")
            self.fs.pipe_file(staging, data)
            self.fs.mv(staging, target)
        else:
            self.fs.pipe_file(target, data)

    def write_json(self, name: str, value: Any) -> None:
        self.write(name, json.dumps(value, indent=1, sort_keys=True).encode())

    def claim(self, spec: dict[str, Any], overwrite: bool) -> str:
        """'done' when this spec already completed here, else 'go' (fresh or resuming). Refuses a different dataset."""
        existing = self.read_json(SPEC)
        if existing is not None and existing != spec:
            if not overwrite:
                raise UserError(f"{redact(self.uri)} already holds a different synthetic dataset "
                                f"({_difference(existing, spec)}); pass --overwrite to replace it or choose another "
                                "generate.output")
            self.clear()
            existing = None
        if existing is None:
            foreign = self._foreign_files()
            if foreign:
                raise UserError(f"{redact(self.uri)} holds files that are not a cvae dataset (e.g. {foreign[0]}); "
                                "choose an empty generate.output")
            self.write_json(SPEC, spec)
            return "go"
        return "done" if self.exists(SUCCESS) else "go"

    def _foreign_files(self) -> list[str]:
        if not self.fs.exists(self.root):
            return []
        ours = (SPEC, MANIFEST, SUCCESS, JOURNAL, REPORT_PAGE)
        names = [posixpath.relpath(p, self.root) for p in self.fs.find(self.root)]
        return [n for n in names if not (n.startswith(ours) or (n.startswith("part-") and n.endswith(".parquet"))
                                         or n.startswith("."))]

    def clear(self) -> None:
        """Remove this dataset's files only (never anything else under the prefix)."""
        for name in [SUCCESS, MANIFEST, REPORT_PAGE]:
            if self.exists(name):
                self.fs.rm(self.path(name))
        if self.exists(JOURNAL):
            self.fs.rm(self.path(JOURNAL), recursive=True)
        for path in self.fs.glob(self.path("part-*.parquet")):
            self.fs.rm(path)
        if self.exists(SPEC):
            self.fs.rm(self.path(SPEC))

    def write_part(self, part: int, data: bytes, rows: int) -> dict[str, Any]:
        entry = {"part": part, "file": part_name(part), "rows": rows, "bytes": len(data),
                 "sha256": hashlib.sha256(data).hexdigest()}
        self.write(part_name(part), data)
        self.write_json(f"{JOURNAL}/{part_name(part)}.json", entry)
        return entry

    def completed_parts(self) -> dict[int, dict[str, Any]]:
        """Journal entries whose part file is present with the recorded size (listed afresh: actors write too)."""
        self.fs.invalidate_cache(self.root)
        done = {}
        if not self.exists(JOURNAL):
            return done
        sizes = {posixpath.basename(p): info["size"] for p, info in
                 self.fs.find(self.root, maxdepth=1, detail=True).items()}
        for path in self.fs.glob(self.path(f"{JOURNAL}/part-*.json")):
            with self.fs.open(path, "rb") as handle:
                entry = json.loads(handle.read())
            if sizes.get(entry["file"]) == entry["bytes"]:
                done[entry["part"]] = entry
        return done

    def finish(self, manifest: DatasetManifest) -> None:
        """Manifest, then _SUCCESS; then the journal and any staging file a killed writer left behind go."""
        self.write_json(MANIFEST, manifest.to_dict())
        failpoint("before_success")
        self.write(SUCCESS, b"")
        self.fs.rm(self.path(JOURNAL), recursive=True)
        for path in self.fs.glob(self.path(".*.tmp")):
            self.fs.rm(path)


    def manifest(self) -> DatasetManifest | None:
        data = self.read_json(MANIFEST)
        return DatasetManifest.from_dict(data) if data is not None else None


def _difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:2])
