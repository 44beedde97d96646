"""The generated Tiled server configuration and ``bluestem serve`` argument checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiled.config import Config, parse_configs

from bluestem.catalog.config import JSON_SEQ_EXPORTER, server_config
from bluestem.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_config_has_storage_key_and_exporter(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    config = server_config(tmp_path / "cat", api_key="k3y", raw_dirs=[raw])
    args = config["trees"][0]["args"]
    assert args["uri"] == f"sqlite:///{(tmp_path / 'cat' / 'catalog.db').resolve()}"
    assert args["init_if_not_exists"] is True
    assert args["readable_storage"] == [str(raw.resolve())]
    assert str((tmp_path / "cat" / "data").resolve()) in args["writable_storage"]
    assert any(s.startswith("duckdb:///") for s in args["writable_storage"])
    assert (tmp_path / "cat" / "data").is_dir()
    assert config["authentication"] == {
        "single_user_api_key": "k3y",
        "allow_anonymous_access": False,
    }
    assert config["media_types"]["BlueskyRun"]["application/json-seq"] == JSON_SEQ_EXPORTER
    # Tiled itself accepts it.
    parsed = Config.model_validate(config)
    assert parsed.authentication.single_user_api_key == "k3y"
    assert parsed.authentication.allow_anonymous_access is False


def test_config_postgres_uri_passes_through(tmp_path):
    uri = "postgresql+asyncpg://bluestem:pw@db.example/catalog"
    config = server_config(tmp_path, api_key="k", catalog_uri=uri)
    assert config["trees"][0]["args"]["uri"] == uri


@pytest.mark.parametrize("key", ["", "   ", None, "two words"])
def test_config_requires_a_usable_key(tmp_path, key):
    with pytest.raises(ValueError, match="api_key"):
        server_config(tmp_path, api_key=key)


def test_missing_raw_dir_is_named(tmp_path):
    missing = tmp_path / "no-such-raw"
    with pytest.raises(FileNotFoundError, match="no-such-raw"):
        server_config(tmp_path / "cat", api_key="k", raw_dirs=[missing])


def test_raw_dir_that_is_a_file_is_named(tmp_path):
    afile = tmp_path / "frames.h5"
    afile.write_bytes(b"")
    with pytest.raises(NotADirectoryError, match=r"frames\.h5"):
        server_config(tmp_path / "cat", api_key="k", raw_dirs=[afile])


def test_serve_cli_rejects_missing_raw_dir_before_serving(tmp_path, capsys):
    code = main(["serve", "--dir", str(tmp_path), "--api-key", "k", "--raw-dir", "/no/such/dir"])
    assert code == 2
    assert "/no/such/dir" in capsys.readouterr().err


def test_serve_cli_rejects_bad_port(tmp_path, capsys):
    assert main(["serve", "--dir", str(tmp_path), "--api-key", "k", "--port", "70000"]) == 2
    assert "70000" in capsys.readouterr().err


def test_profile_yaml_is_a_valid_tiled_config(tmp_path, monkeypatch):
    monkeypatch.setenv("BLUESTEM_API_KEY", "from-env")
    monkeypatch.setenv("BLUESTEM_CATALOG_DIR", str(tmp_path))
    monkeypatch.setenv("BLUESTEM_RAW_DIR", str(tmp_path / "raw"))
    config = parse_configs(ROOT / "profiles" / "tiled-server.yml")
    assert config.authentication.single_user_api_key == "from-env"
    assert config.authentication.allow_anonymous_access is False
    (tree,) = config.trees
    assert tree.args["uri"] == f"sqlite:///{tmp_path}/catalog.db"
    assert tree.args["readable_storage"] == [str(tmp_path / "raw")]
    assert "BlueskyRun" in config.media_types
