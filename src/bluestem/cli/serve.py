"""``bluestem serve``: run the Tiled catalogue server (SQLite + local storage by default)."""

from __future__ import annotations

import argparse
import os
import sys

NAME = "serve"
KEY_ENV = "BLUESTEM_API_KEY"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``serve`` subcommand."""
    parser = subparsers.add_parser(
        NAME,
        help="run the Tiled catalogue server (API key required)",
        description=(
            "Serve a Tiled catalogue: SQLite catalogue DIR/catalog.db (created if missing), "
            "writable storage DIR/data, event tables in DIR/tabular.duckdb, raw-data "
            f"directories readable. The API key comes from --api-key or ${KEY_ENV}; "
            "if neither is given one is generated and printed. Every request without "
            "the key gets 401."
        ),
    )
    parser.add_argument("--dir", default=".", help="catalogue directory (default: .)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--api-key", default=None, help=f"API key (default: ${KEY_ENV})")
    parser.add_argument(
        "--raw-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="raw-data directory the server may read (repeatable)",
    )
    parser.add_argument(
        "--catalog-uri",
        default=None,
        help="catalogue database URI instead of SQLite (e.g. postgresql+asyncpg://...)",
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="a Tiled server YAML (e.g. profiles/tiled-server.yml); --dir/--raw-dir ignored",
    )
    parser.add_argument("--log-level", default="warning", help="uvicorn log level")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Build the configuration and serve until interrupted (SIGINT/SIGTERM)."""
    import secrets

    if not 0 < args.port < 65536:
        print(f"error: --port must be in 1..65535, got {args.port}", file=sys.stderr)
        return 2
    key = args.api_key or os.environ.get(KEY_ENV)
    generated = not key
    if generated:
        key = secrets.token_hex(24)
    try:
        config = _load_config(args, key)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    import uvicorn
    from tiled.server.app import build_app_from_config

    app = build_app_from_config(config)
    url = f"http://{args.host}:{args.port}"
    print(f"bluestem catalogue serving {url}", flush=True)
    if generated:
        # Only a generated key is printed: a key the caller supplied is already known
        # to them and should not land in logs.
        print(f"API key (generated): {key}", flush=True)
        print(f"  from tiled.client import from_uri; c = from_uri({url!r}, api_key={key!r})")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _load_config(args: argparse.Namespace, key: str):
    if args.config:
        from tiled.config import parse_configs

        if not os.path.isfile(args.config):
            raise FileNotFoundError(f"--config file {args.config!r} does not exist")
        # Variables the YAML refers to (${BLUESTEM_API_KEY}) must see the resolved key.
        os.environ.setdefault(KEY_ENV, key)
        config = parse_configs(args.config)
        config.authentication.single_user_api_key = key
        config.authentication.allow_anonymous_access = False
        return config
    from bluestem.catalog.config import server_config

    return server_config(
        args.dir, api_key=key, raw_dirs=args.raw_dir, catalog_uri=args.catalog_uri
    )
