"""URIs and filesystems: one fsspec resolution for every stage, handed to pyarrow and Ray as needed."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import fsspec
import pyarrow.fs as pafs
from fsspec.implementations.local import LocalFileSystem

from pipeline.errors import UserError

GLOB_CHARS = re.compile(r"[*?\[]")


def filesystem(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(fsspec filesystem, path inside it) for any URI; a bare path is a local file."""
    try:
        return fsspec.core.url_to_fs(uri, **(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise UserError(f"{redact(uri)}: no filesystem for this URI ({exc}); "
                        "use file://, s3://, gs:// or another installed fsspec protocol") from None


def arrow_filesystem(fs: fsspec.AbstractFileSystem) -> pafs.FileSystem:
    """The same filesystem for pyarrow and Ray Data (credentials and endpoint included)."""
    if isinstance(fs, LocalFileSystem):
        return pafs.LocalFileSystem()
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def absolute(uri: str) -> str:
    """Local paths made absolute, so Ray workers and actors started elsewhere find the same files."""
    if not is_local(uri):
        return uri
    return str(Path(uri.removeprefix("file://")).expanduser().resolve())


def absolute_tracking_uri(uri: str) -> str:
    """`sqlite:///relative.db` and bare local paths pinned to the current directory."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    if is_local(uri) and not uri.startswith("sqlite:"):
        return Path(absolute(uri)).as_uri()
    return uri


def parquet_files(uri: str, storage_options: dict[str, Any] | None = None,
                  key: str = "data.path") -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """The Parquet files behind a file, folder or glob; a clear error, naming the config `key`, when there are none."""
    fs, path = filesystem(uri, storage_options)
    try:
        if GLOB_CHARS.search(path):
            files = sorted(p for p in fs.glob(path) if fs.isfile(p))
        elif fs.isdir(path):
            files = sorted(p for p in fs.find(path) if p.endswith((".parquet", ".parq", ".pq"))
                           and not any(part.startswith(("_", ".")) for part in p[len(path):].split("/")))
        elif fs.isfile(path):
            files = [path]
        else:
            raise UserError(f"{key} {redact(uri)} does not exist; point it at a Parquet file, folder or glob")
    except UserError:
        raise
    except PermissionError as exc:
        raise UserError(f"{key} {redact(uri)}: access denied ({redact(str(exc))}); check the credentials in the "
                        "environment or the storage_options for it") from None
    except Exception as exc:  # noqa: BLE001 - botocore/gcsfs/adlfs raise their own types for bad credentials
        raise UserError(f"{key} {redact(uri)}: cannot list it ({type(exc).__name__}: {redact(str(exc))}); check "
                        "the credentials and endpoint in the environment or the storage_options for it") from None
    if not files:
        raise UserError(f"{key} {redact(uri)} holds no Parquet files; point it at a folder of *.parquet files")
    return fs, files


def digest(fs: fsspec.AbstractFileSystem, files: list[str]) -> str:
    """A cheap fingerprint of a file set: paths, sizes and version markers (ETag or mtime), not contents."""
    entries = []
    for path in files:
        info = fs.info(path)
        marker = info.get("ETag") or info.get("mtime") or info.get("LastModified") or ""
        entries.append([path, info.get("size"), str(marker)])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def redact(text: str) -> str:
    """Credentials embedded in URIs (`scheme://user:secret@host`) never reach logs or errors."""
    return re.sub(r"(://)[^/@\s]+@", r"\1***@", text)
