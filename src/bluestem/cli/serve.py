"""``bluestem serve``: run the Tiled catalogue server (SQLite + local storage by default).

Every argument is checked before anything starts or is written; a refusal is one line
``error: --flag VALUE: why (allowed: ...)`` and exit code 2.  The port is bound during
the checks and the bound sockets are handed to uvicorn, so no other process can take the
port between the check and the start.  "serving" is printed only once the server
answers an HTTP request made with the key.  SIGINT and SIGTERM stop it cleanly (exit 0)
however it was launched.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

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
            "the key gets 401. SIGINT or SIGTERM stops it (exit 0)."
        ),
    )
    parser.add_argument("--dir", default=".", help="catalogue directory (default: .)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    # Parsed by hand so that a bad value gets the same one-line refusal as every other.
    parser.add_argument("--port", default="8000", help="TCP port (default 8000)")
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"API key, letters and digits only (default: ${KEY_ENV})",
    )
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
    parser.add_argument(
        "--log-level",
        default="warning",
        help="uvicorn log level: critical, error, warning (default), info, debug, trace",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Check every argument, then serve until SIGINT/SIGTERM; returns the exit code.

    Returns
    -------
    int
        0 after a requested stop, 1 if the server failed to start, 2 if an argument
        was refused (nothing was started or written).
    """
    from bluestem.catalog.server import Stopped, serve_forever, signals_raise_stopped

    plan = None
    try:
        # From the first moment: the checks import Tiled, which takes a while.
        with signals_raise_stopped():
            plan, problems = _check(args)
            if problems:
                for line in problems:
                    print(f"error: {line}", file=sys.stderr)
                return 2
            return serve_forever(
                plan.config,
                sockets=plan.sockets,
                host=plan.host,
                port=plan.port,
                api_key=plan.key,
                log_level=args.log_level.lower(),
                on_ready=plan.announce,
            )
    except Stopped as stop:
        print(f"bluestem catalogue stopped ({signal.Signals(stop.args[0]).name})", flush=True)
        return 0
    finally:
        for sock in plan.sockets if plan else ():
            sock.close()


@dataclass
class _Plan:
    """What the checks resolved: the key, the bound sockets, the Tiled configuration."""

    key: str
    generated: bool
    host: str
    port: int
    sockets: list
    config: object
    where: str

    def announce(self) -> None:
        """Print the "serving" banner (called once the server answers)."""
        from bluestem.catalog.server import url_host

        url = f"http://{url_host(self.host)}:{self.port}"
        print(f"bluestem catalogue serving {url} ({self.where})", flush=True)
        if self.generated:
            # Only a generated key is printed: a key the caller supplied is already known
            # to them and should not land in logs.
            print(f"API key (generated): {self.key}", flush=True)
            print(
                f"  from tiled.client import from_uri; c = from_uri({url!r}, "
                f"api_key={self.key!r})",
                flush=True,
            )


def _check(args: argparse.Namespace) -> tuple[_Plan | None, list[str]]:
    """Every argument checked, nothing written: the plan, or the refusals (one line each)."""
    import secrets

    from bluestem.catalog.config import api_key_problem, catalog_uri_problem, redact_uri

    problems = []
    env_key = os.environ.get(KEY_ENV)
    key = args.api_key if args.api_key is not None else env_key
    generated = not key and args.api_key is None
    if generated:
        key = secrets.token_hex(24)
    problem = api_key_problem(key)
    if problem:
        # The key is a secret: the message names the offending characters, not the key.
        source = "--api-key" if args.api_key is not None else f"${KEY_ENV}"
        problems.append(f"{source}: {problem}")

    port = _parse_port(args.port, problems)
    # Without a usable port the host is still checked, on a port of the kernel's choice.
    sockets, problem = _bind(args.host, port or 0)
    if problem:
        problems.append(problem)
    if port is None:
        for sock in sockets:
            sock.close()
        sockets = []

    from uvicorn.config import LOG_LEVELS

    if args.log_level.lower() not in LOG_LEVELS:
        problems.append(
            f"--log-level {args.log_level}: not a uvicorn log level "
            f"(allowed: {', '.join(LOG_LEVELS)})"
        )

    if args.config:
        config = _check_config_file(args.config, key, problems)
        where = f"config {args.config}"
    else:
        config = None
        problem = _directory_problem(args.dir)
        if problem:
            problems.append(f"--dir {args.dir}: {problem}")
        for raw in args.raw_dir:
            path = Path(raw).expanduser()
            if not path.exists():
                problems.append(
                    f"--raw-dir {raw}: does not exist (allowed: an existing directory)"
                )
            elif not path.is_dir():
                problems.append(f"--raw-dir {raw}: is not a directory (allowed: a directory)")
        if args.catalog_uri:
            problem = catalog_uri_problem(args.catalog_uri)
            if problem:
                problems.append(f"--catalog-uri {redact_uri(args.catalog_uri)}: {problem}")
        root = Path(args.dir).expanduser().absolute()
        catalogue = redact_uri(args.catalog_uri) if args.catalog_uri else str(root)
        raws = ", ".join(str(Path(r).expanduser().absolute()) for r in args.raw_dir)
        where = f"catalogue {catalogue}, raw dirs {raws or 'none'}"
    plan = _Plan(key, generated, args.host, port or 0, sockets, config, where)
    if not problems and config is None:
        from bluestem.catalog.config import server_config

        # The first write (DIR/data): only once every check has passed.
        plan.config = server_config(
            args.dir, api_key=key, raw_dirs=args.raw_dir, catalog_uri=args.catalog_uri
        )
    return plan, problems


def _parse_port(value: str, problems: list[str]) -> int | None:
    try:
        port = int(value)
    except ValueError:
        port = None
    if port is None or not 0 < port < 65536:
        problems.append(f"--port {value}: not a TCP port (allowed: 1..65535)")
        return None
    return port


def _bind(host: str, port: int) -> tuple[list[socket.socket], str | None]:
    """Bind ``host:port`` as asyncio's ``create_server`` would, and keep the sockets.

    Every address ``host`` resolves to is bound (``localhost`` is often 127.0.0.1 and
    ::1), with SO_REUSEADDR and IPV6_V6ONLY as asyncio sets them, so that the check and
    the server agree.  An address family the machine lacks (EADDRNOTAVAIL) is skipped,
    as asyncio does.
    """
    host_rule = "allowed: 127.0.0.1, ::1, 0.0.0.0, :: or an address of this machine"
    try:
        infos = socket.getaddrinfo(
            host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as exc:
        return [], f"--host {host}: does not resolve ({exc}) ({host_rule})"
    sockets, seen = [], set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno != errno.EADDRNOTAVAIL:
                    raise
                sockets.pop().close()
    except OSError as exc:
        for sock in sockets:
            sock.close()
        if exc.errno == errno.EADDRINUSE:
            return [], (
                f"--port {port}: already in use on {host} "
                "(allowed: a free port; stop the process holding it or choose another)"
            )
        if exc.errno == errno.EACCES:
            return [], f"--port {port}: permission denied on {host} (allowed: 1024..65535)"
        return [], f"--host {host} --port {port}: cannot bind ({exc.strerror})"
    if not sockets:
        return [], f"--host {host}: not an address of this machine ({host_rule})"
    return sockets, None


def _directory_problem(directory: str) -> str | None:
    """Why ``directory`` cannot hold a catalogue (without creating anything), or None."""
    path = Path(directory).expanduser().absolute()
    allowed = "allowed: a writable directory, or a path where one can be created"
    if path.exists():
        if not path.is_dir():
            return f"is not a directory ({allowed})"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"is not writable ({allowed})"
        return None
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"cannot be created: {ancestor} is not a directory ({allowed})"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot be created: {ancestor} is not writable ({allowed})"
    return None


def _check_config_file(path: str, key: str, problems: list[str]):
    if not os.path.isfile(path):
        what = "is not a file" if os.path.exists(path) else "does not exist"
        problems.append(f"--config {path}: {what} (allowed: a Tiled server YAML file)")
        return None
    from tiled.config import parse_configs

    from bluestem.catalog.server import describe_error

    # Variables the YAML refers to (${BLUESTEM_API_KEY}) must see the resolved key.
    os.environ.setdefault(KEY_ENV, key)
    try:
        config = parse_configs(path)
    except Exception as exc:
        problems.append(f"--config {path}: does not parse: {describe_error(exc)}")
        return None
    config.authentication.single_user_api_key = key
    config.authentication.allow_anonymous_access = False
    return config
