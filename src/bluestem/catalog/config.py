"""The Tiled server configuration that ``bluestem serve`` runs.

:func:`server_config` turns a catalogue directory, an API key and the raw-data
directories into the configuration dictionary Tiled's ``tiled serve config`` reads
(``trees`` + ``authentication`` + ``media_types``).  ``profiles/tiled-server.yml`` is the
same configuration written out for a facility to copy.  :func:`api_key_problem` and
:func:`catalog_uri_problem` say why Tiled would refuse a key or a catalogue URI, so that
``bluestem serve`` refuses them before starting anything.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "API_KEY_RULE",
    "CATALOG_FILENAME",
    "CATALOG_SCHEMES",
    "DATA_SUBDIRECTORY",
    "JSON_SEQ_EXPORTER",
    "TABULAR_FILENAME",
    "api_key_problem",
    "catalog_uri_problem",
    "redact_uri",
    "server_config",
]

CATALOG_FILENAME = "catalog.db"
DATA_SUBDIRECTORY = "data"
TABULAR_FILENAME = "tabular.duckdb"
# Without this media type a BlueskyRun cannot be exported as its documents, so
# ``run.documents()`` (and therefore offline reprocessing) fails on the client.
JSON_SEQ_EXPORTER = "bluesky_tiled_plugins.exporters:json_seq_exporter"

# Tiled 0.2.20 checks the single-user key only when the application starts
# (``tiled.server.app``: ``single_user_api_key.isalnum()``; the config model's
# ``pattern="[a-zA-Z0-9]+"`` is a search, so "with-hyphen" passes it).  ``isalnum`` also
# admits non-ASCII letters and digits ("ké", "٣"), which no HTTP client can send in an
# ``Authorization`` header, so the rule applied here is the ASCII subset.
API_KEY_RULE = (
    "ASCII letters and digits only, A-Z a-z 0-9, as Tiled requires of a single-user key; "
    "e.g. `openssl rand -hex 32`"
)
_API_KEY_PATTERN = re.compile(r"[A-Za-z0-9]+")

# The catalogue is opened with SQLAlchemy's async engine and Tiled has SQL for these two
# dialects only; a bare "sqlite"/"postgresql" gets Tiled's default async driver.
CATALOG_SCHEMES = {
    "sqlite": "aiosqlite",
    "sqlite+aiosqlite": "aiosqlite",
    "postgresql": "asyncpg",
    "postgresql+asyncpg": "asyncpg",
}


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
        If ``api_key`` breaks Tiled's rule (:data:`API_KEY_RULE`) or ``catalog_uri`` is
        not one Tiled can open (:data:`CATALOG_SCHEMES`).
    FileNotFoundError, NotADirectoryError
        If a raw-data directory is missing or is not a directory (the message names it).
    """
    problem = api_key_problem(api_key)
    if problem:
        raise ValueError(f"api_key {problem}")
    if catalog_uri is not None:
        problem = catalog_uri_problem(catalog_uri)
        if problem:
            raise ValueError(f"catalog_uri {redact_uri(catalog_uri)!r} {problem}")
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


def api_key_problem(api_key: object) -> str | None:
    """Why Tiled would refuse ``api_key`` as its single-user key, or None if it is fine.

    Parameters
    ----------
    api_key : object
        The candidate key.

    Returns
    -------
    str or None
        A reason ending in the rule, e.g. ``"contains '-' (allowed: letters and digits
        only, ...)"``; the key itself is never echoed (it is a secret).
    """
    if not isinstance(api_key, str) or not api_key:
        if api_key is None:
            kind = "missing"
        elif api_key == "":
            kind = "empty"
        else:
            kind = f"a {type(api_key).__name__}, not a string"
        return f"is {kind} (allowed: {API_KEY_RULE})"
    if _API_KEY_PATTERN.fullmatch(api_key):
        return None
    bad = "".join(sorted({ch for ch in api_key if not _API_KEY_PATTERN.fullmatch(ch)}))
    return f"contains {bad!r} (allowed: {API_KEY_RULE})"


def catalog_uri_problem(uri: str) -> str | None:
    """Why Tiled could not open ``uri`` as a catalogue database, or None.

    Checks the scheme (:data:`CATALOG_SCHEMES`), that its async driver is installed and,
    for SQLite, that the database file's directory exists (SQLite does not create it).

    Parameters
    ----------
    uri : str
        e.g. ``sqlite:////srv/cat/catalog.db`` or ``postgresql+asyncpg://u:pw@host/db``.

    Returns
    -------
    str or None
        The reason, naming what is allowed.
    """
    allowed = ", ".join(f"{scheme}://" for scheme in CATALOG_SCHEMES)
    scheme, sep, rest = str(uri).partition("://")
    if not sep:
        return f"has no scheme (allowed: {allowed})"
    if scheme not in CATALOG_SCHEMES:
        return f"has an unsupported scheme {scheme!r} (allowed: {allowed})"
    driver = CATALOG_SCHEMES[scheme]
    if importlib.util.find_spec(driver) is None:
        return f"needs the {driver} package, which is not installed (pip install {driver})"
    if scheme.startswith("sqlite"):
        # sqlite:///relative.db and sqlite:////absolute.db: the path follows the third /.
        path = rest[1:] if rest.startswith("/") else ""
        path = path.split("?", 1)[0]
        if not path or path == ":memory:":
            return (
                "names no database file (allowed: sqlite:///PATH; an in-memory "
                "catalogue would lose every run)"
            )
        parent = Path(path).expanduser().absolute().parent
        if not parent.is_dir():
            return f"is in {str(parent)!r}, which is not an existing directory"
    return None


def redact_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (for messages and logs)."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", str(uri))
