"""DatasetSettings: environment variable names and derived paths."""

from __future__ import annotations

from pathlib import Path

from tagrate_common.config import DEFAULT_METRICS_PORTS, DEFAULT_PORTS
from tagrate_dataset.config import DatasetSettings


def test_defaults_derive_from_the_data_dir(monkeypatch, tmp_path: Path) -> None:
    for name in ("DATABASE_URL", "DATASET_PORT", "DATASET_METRICS_PORT", "DATASET_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TAGRATE_DATA_DIR", str(tmp_path))
    settings = DatasetSettings()
    assert settings.port == DEFAULT_PORTS["dataset"]
    assert settings.metrics_port == DEFAULT_METRICS_PORTS["dataset"]
    assert settings.database_url == f"sqlite:///{tmp_path / 'dataset' / 'tagrate.db'}"
    assert settings.blob_path == tmp_path / "dataset" / "blobs"
    assert settings.cache_path == tmp_path / "dataset" / "cache"
    assert (settings.userdata_default_limit, settings.userdata_max_limit) == (60, 1000)


def test_environment_names(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATASET_HOST", "0.0.0.0")
    monkeypatch.setenv("DATASET_PORT", "6001")
    monkeypatch.setenv("DATABASE_URL", "postgresql://tagrate@db/tagrate")
    monkeypatch.setenv("DATASET_BLOB_DIR", str(tmp_path / "b"))
    monkeypatch.setenv("TAGRATE_MAX_UPLOAD_BYTES", "1234")
    settings = DatasetSettings()
    assert (settings.host, settings.port) == ("0.0.0.0", 6001)
    assert settings.database_url == "postgresql://tagrate@db/tagrate"
    assert settings.blob_path == tmp_path / "b"
    assert settings.image_limits.max_bytes == 1234


def test_keyword_arguments_use_field_names(tmp_path: Path) -> None:
    settings = DatasetSettings(database_url="sqlite:///x.db", data_dir=tmp_path, port=0)
    assert (settings.database_url, settings.port, settings.blob_path) == (
        "sqlite:///x.db",
        0,
        tmp_path / "dataset/blobs",
    )
