import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import UserError
from pipeline.storage import absolute_tracking_uri, parquet_files, redact


def write(path, rows=3):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"a": list(range(rows))}), path)


def test_a_file_a_folder_and_a_glob_resolve_to_parquet_files(tmp_path):
    write(tmp_path / "t" / "part-0.parquet")
    write(tmp_path / "t" / "year=2024" / "part-1.parquet")
    (tmp_path / "t" / "_SUCCESS").write_text("")
    write(tmp_path / "t" / "_tmp" / "hidden.parquet")
    _, one = parquet_files(str(tmp_path / "t" / "part-0.parquet"))
    _, folder = parquet_files(str(tmp_path / "t"))
    _, glob = parquet_files(f"file://{tmp_path}/t/*.parquet")
    assert [p.rsplit("/", 1)[-1] for p in one] == ["part-0.parquet"]
    assert [p.rsplit("/", 1)[-1] for p in folder] == ["part-0.parquet", "part-1.parquet"]
    assert [p.rsplit("/", 1)[-1] for p in glob] == ["part-0.parquet"]


def test_missing_and_empty_paths_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        parquet_files(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no Parquet files"):
        parquet_files(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="no filesystem for this URI"):
        parquet_files("nosuchproto://bucket/x")


def test_credentials_in_uris_are_redacted():
    assert redact("https://alice:s3cr3t@mlflow.example/api") == "https://***@mlflow.example/api"
    assert "s3cr3t" not in redact("error reading s3://KEY:s3cr3t@bucket/x")


def test_relative_sqlite_tracking_uri_is_pinned(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_tracking_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    assert absolute_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
