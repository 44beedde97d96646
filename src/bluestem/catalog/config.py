"""The Tiled server configuration that ``bluestem serve`` runs.

One function, :func:`server_config`, turns a catalogue directory, an API key and the
raw-data directories into the configuration dictionary Tiled's ``tiled serve config``
reads (``trees`` + ``authentication`` + ``media_types``).  ``profiles/tiled-server.yml``
is the same configuration written out for a facility to copy.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "CATALOG_FILENAME",
    "DATA_SUBDIRECTORY",
    "JSON_SEQ_EXPORTER",
    "TABULAR_FILENAME",
    "server_config",
]

CATALOG_FILENAME = "catalog.db"
DATA_SUBDIRECTORY = "data"
TABULAR_FILENAME = "tabular.duckdb"
# Without this media type a BlueskyRun cannot be exported as its documents, so
# ``run.documents()`` (and therefore offline reprocessing) fails on the client.
JSON_SEQ_EXPORTER = "bluesky_tiled_plugins.exporters:json_seq_exporter"


def server_config(
    directory: str | os.PathLike,
    *,
    api_key: str,
    raw_dirs: Iterable[str | os.PathLike] = (),
    catalog_uri: str | None = None,
    tabular_uri: str | None = None,
) -> dict[str, Any]:
    """Build the Tiled server configuration for one catalogue.

    Parameters
    ----------
    directory : path
        Catalogue directory; created if missing.  Holds ``catalog.db`` (SQLite, created
        on first start), ``data/`` (writable array storage) and ``tabular.duckdb``
        (event tables).
    api_key : str
        The single-user API key; required, every request without it gets 401.
    raw_dirs : iterable of path
        Directories holding raw-frame HDF5 files the catalogue refers to (readable
        storage).  Each must exist: a run registered with a file outside them would
        register and then fail to read.
    catalog_uri : str, optional
        Catalogue database URI (e.g. ``postgresql+asyncpg://user:pw@host/db``); default
        SQLite in ``directory``.
    tabular_uri : str, optional
        Tabular storage URI; default DuckDB in ``directory``.

    Returns
    -------
    dict
        A configuration accepted by ``tiled.server.app.build_app_from_config``.

    Raises
    ------
    ValueError
        If ``api_key`` is empty or not a string.
    FileNotFoundError, NotADirectoryError
        If a raw-data directory is missing or is not a directory (the message names it).
    """
    if not isinstance(api_key, str) or not api_key.strip():
        raise ValueError(f"api_key must be a non-empty string, got {api_key!r}")
    if any(ch.isspace() for ch in api_key):
        raise ValueError("api_key must not contain whitespace")
    root = Path(directory).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"catalogue directory {str(root)!r} is not a directory")
    readable = []
    for raw in raw_dirs:
        path = Path(raw).expanduser().resolve()
        if not path.exists():
            raise FileNotFoundError(f"raw-data directory {str(raw)!r} does not exist")
        if not path.is_dir():
            raise NotADirectoryError(f"raw-data directory {str(raw)!r} is not a directory")
        readable.append(str(path))
    data_dir = root / DATA_SUBDIRECTORY
    data_dir.mkdir(parents=True, exist_ok=True)
    catalog_uri = catalog_uri or f"sqlite:///{root / CATALOG_FILENAME}"
    tabular_uri = tabular_uri or f"duckdb:///{root / TABULAR_FILENAME}"
    return {
        "trees": [
            {
                "path": "/",
                "tree": "catalog",
                "args": {
                    "uri": catalog_uri,
                    "init_if_not_exists": True,
                    "writable_storage": [str(data_dir), tabular_uri],
                    "readable_storage": readable,
                },
            }
        ],
        "authentication": {
            "single_user_api_key": api_key,
            "allow_anonymous_access": False,
        },
        "media_types": {"BlueskyRun": {"application/json-seq": JSON_SEQ_EXPORTER}},
    }
