"""The generated Tiled server configuration and ``bluestem serve`` argument checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiled.config import Config, parse_configs

from bluestem.catalog.config import (
    JSON_SEQ_EXPORTER,
    api_key_problem,
    catalog_uri_problem,
    server_config,
)
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


@pytest.mark.parametrize("key", ["with-hyphen", "under_score", "k\u00e9", "tab\tkey", "a.b"])
def test_key_tiled_would_refuse_is_refused_naming_the_rule(tmp_path, key):
    with pytest.raises(ValueError, match="ASCII letters and digits only, A-Z a-z 0-9") as err:
        server_config(tmp_path / "cat", api_key=key)
    assert key not in str(err.value)  # names the bad characters, never the secret
    assert not (tmp_path / "cat").exists()  # refused before anything is created


def test_key_rule_is_tiled_startup_check_on_ascii():
    # Tiled 0.2.20 refuses the key at startup unless key.isalnum(); on ASCII the rule
    # here must agree character for character (beyond ASCII it is stricter: such keys
    # cannot travel in an HTTP header).
    for code in range(32, 127):
        key = f"ab{chr(code)}9"
        assert (api_key_problem(key) is None) == key.isalnum(), repr(key)
    assert api_key_problem("0123456789abcdefABCDEF") is None


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("mysql://db/cat", "unsupported scheme 'mysql'"),
        ("sqlite+pysqlite:////tmp/c.db", "unsupported scheme 'sqlite+pysqlite'"),
        ("/srv/cat/catalog.db", "has no scheme"),
        ("sqlite:///:memory:", "names no database file"),
        ("sqlite:////no/such/dir/catalog.db", "'/no/such/dir', which is not an existing"),
    ],
)
def test_catalog_uri_tiled_cannot_open_is_refused(tmp_path, uri, why):
    assert why in catalog_uri_problem(uri)
    with pytest.raises(ValueError, match="catalog_uri"):
        server_config(tmp_path / "cat", api_key="k", catalog_uri=uri)
    assert not (tmp_path / "cat").exists()


def test_catalog_uri_message_hides_the_password(tmp_path):
    with pytest.raises(ValueError) as err:
        server_config(tmp_path, api_key="k", catalog_uri="mysql://ada:hunter2@db/cat")
    assert "hunter2" not in str(err.value)
    assert "ada:***@db" in str(err.value)


@pytest.mark.parametrize(
    "uri", ["sqlite:///cat.db", "sqlite+aiosqlite:////tmp/cat.db", "postgresql://u:p@h/db"]
)
def test_catalog_uri_tiled_opens_is_accepted(uri):
    assert catalog_uri_problem(uri) is None


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
