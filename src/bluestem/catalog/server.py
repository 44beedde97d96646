"""Run the catalogue server: in this process, or as a subprocess.

:func:`serve_forever` is what ``bluestem serve`` runs once its arguments are checked:
uvicorn on sockets already bound, "ready" only once the server answers a request made
with the key, SIGINT/SIGTERM ending in exit code 0.  :func:`start_server` runs
``bluestem serve`` in a subprocess for tests, the demo and benchmarks (as it would run
at a facility), on a free loopback port unless told otherwise, stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bluestem.procs import BLUESTEM_COMMAND, ManagedProcess, free_port

__all__ = [
    "CatalogServer",
    "Stopped",
    "describe_error",
    "serve_forever",
    "signals_raise_stopped",
    "start_server",
    "url_host",
]

READY_TIMEOUT = 30.0
# Open requests get this long after SIGTERM/SIGINT; uvicorn's default is to wait forever.
SHUTDOWN_TIMEOUT = 5.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Failure)\w*: \S")


@dataclass
class CatalogServer(ManagedProcess):
    """A running catalogue server: where it answers, its key, its process."""

    uri: str
    api_key: str
    process: subprocess.Popen
    directory: Path
    log_path: Path | None = None
    args: list[str] = field(default_factory=list)


def start_server(
    directory: str | os.PathLike,
    *,
    api_key: str,
    port: int | None = None,
    raw_dirs: Iterable[str | os.PathLike] = (),
    host: str = "127.0.0.1",
    timeout: float = 60.0,
    log_path: str | os.PathLike | None = None,
) -> CatalogServer:
    """Run ``bluestem serve`` in a subprocess and wait until it answers.

    Parameters
    ----------
    directory : path
        Catalogue directory (see :func:`bluestem.catalog.config.server_config`).
    api_key : str
        The single-user key the server requires.
    port : int, optional
        TCP port; default a free one on ``host``.
    raw_dirs : iterable of path
        Raw-data directories the server may read.
    host : str
        Bind address (loopback by default).
    timeout : float
        Seconds to wait for the server to answer before giving up (it is then stopped).
    log_path : path, optional
        File receiving the server's output (default ``directory/server.log``).
    """
    from bluestem.catalog.config import api_key_problem

    # Refused here at once, rather than by the subprocess a few seconds later.
    problem = api_key_problem(api_key)
    if problem:
        raise ValueError(f"api_key {problem}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = Path(log_path) if log_path else directory / "server.log"
    cmd = [sys.executable, "-P", "-c", BLUESTEM_COMMAND, "serve", "--dir", str(directory)]
    cmd += ["--host", host, "--port", str(port)]
    for raw in raw_dirs:
        cmd += ["--raw-dir", str(raw)]
    # The key travels in the environment, not argv, so `ps` does not show it.
    env = {**os.environ, "BLUESTEM_API_KEY": api_key}
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    handle = CatalogServer(f"http://{host}:{port}", api_key, proc, directory, log_path, cmd)
    try:
        _wait_ready(handle, timeout)
    except BaseException:
        handle.stop()
        raise
    return handle


def _wait_ready(handle: CatalogServer, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    url = f"{handle.uri}/api/v1/"
    while time.monotonic() < deadline:
        if not handle.alive():
            raise RuntimeError(
                f"catalogue server exited with code {handle.process.returncode} "
                f"before answering\n{handle.log()[-4000:]}"
            )
        try:
            response = httpx.get(url, headers={"Authorization": f"Apikey {handle.api_key}"})
            if response.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s\n{handle.log()[-4000:]}")


class Stopped(BaseException):
    """SIGINT/SIGTERM arrived before uvicorn handles signals: stop quietly.

    Not an :class:`Exception`, so that no library code catches it on the way out.
    ``args[0]`` is the signal number.
    """


def _raise_stopped(signum, frame) -> None:
    raise Stopped(signum)


@contextlib.contextmanager
def _signals_to(handler):
    """Route SIGINT and SIGTERM to ``handler`` (main thread only), restoring them after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def signals_raise_stopped():
    """Context manager: SIGINT and SIGTERM raise :class:`Stopped` while inside it.

    A non-interactive shell starts background jobs with SIGINT ignored, and SIGTERM's
    default kills without cleanup; installing a handler of our own makes both stop the
    process cleanly from its first moment, whatever it inherited.
    """
    return _signals_to(_raise_stopped)


def serve_forever(
    config,
    *,
    sockets: list,
    host: str,
    port: int,
    api_key: str,
    log_level: str = "warning",
    on_ready: Callable[[], None] | None = None,
) -> int:
    """Serve a Tiled configuration in this process until SIGINT or SIGTERM.

    Parameters
    ----------
    config : dict or tiled.config.Config
        What :func:`tiled.server.app.build_app_from_config` takes
        (e.g. :func:`bluestem.catalog.config.server_config`).
    sockets : list of socket.socket
        Bound (not yet listening) sockets for ``host:port``; binding them before the
        (slow) start keeps the port from being taken in between.
    host, port : str, int
        Where the sockets are bound: the readiness request goes there.
    api_key : str
        The single-user key, sent with the readiness request.
    log_level : str
        uvicorn's log level; ``debug`` or ``trace`` also show full tracebacks.
    on_ready : callable, optional
        Called (from a helper thread) once ``/api/v1/`` answers 200 with the key.

    Returns
    -------
    int
        0 after SIGINT/SIGTERM, 1 if the server failed to start (one line on stderr
        saying why).
    """
    import logging
    import traceback

    import uvicorn
    from tiled.server.app import build_app_from_config

    debug = log_level in ("debug", "trace")
    try:
        with signals_raise_stopped():
            try:
                # Opens (and on first start creates) the catalogue database.
                app = build_app_from_config(config)
            except Exception as exc:
                if debug:
                    traceback.print_exc()
                _error(f"the catalogue could not be opened: {describe_error(exc)}")
                return 1
            watched = _StartupWatch(app, quiet=not debug)
            uconfig = uvicorn.Config(
                watched,
                host=host,
                port=port,
                log_level=log_level,
                lifespan="on",
                timeout_graceful_shutdown=SHUTDOWN_TIMEOUT,
            )
            if not debug:
                # Replaced by our own line with the reason.
                logging.getLogger("uvicorn.error").addFilter(
                    lambda record: record.getMessage() != "Application startup failed. Exiting."
                )
            server = _make_server(uconfig)
            ready = _Readiness(server, host, port, api_key, on_ready)
            ready.start()
            try:
                server.run(sockets=sockets)
            except SystemExit:
                pass  # uvicorn exits this way when the application fails to start
            finally:
                ready.finished = True
    except Stopped as stop:
        _stopped(stop.args[0])
        return 0
    if watched.error is not None:
        _error(f"the catalogue server failed to start: {describe_error(watched.error)}")
        return 1
    if server.stop_signal is not None:
        _stopped(server.stop_signal)
        return 0
    if ready.error or not ready.announced:
        _error(f"the catalogue server failed to start: {ready.error or 'it stopped'}")
        return 1
    return 0


def _error(line: str) -> None:
    print(f"error: {line}", file=sys.stderr, flush=True)


def _stopped(signum: int) -> None:
    print(f"bluestem catalogue stopped ({signal.Signals(signum).name})", flush=True)


def _make_server(config):
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, with signals that end in exit 0."""

        stop_signal: int | None = None

        @contextlib.contextmanager
        def capture_signals(self):
            # uvicorn installs handle_exit for SIGINT/SIGTERM (overriding an inherited
            # SIG_IGN), but after a graceful shutdown it re-raises the signal under the
            # previous handler: with SIGTERM's default the process then dies of it (143),
            # not exit 0.  Same handlers here, without the re-raise.
            def handle(signum, frame):
                self.stop_signal = signum
                self.handle_exit(signum, frame)

            with _signals_to(handle):
                yield

    return Server(config)


class _StartupWatch:
    """ASGI wrapper keeping the exception a failed application startup raised.

    With ``quiet``, the traceback Starlette sends with ``lifespan.startup.failed`` (which
    uvicorn would log in full) is dropped: the caller prints one line instead.
    """

    def __init__(self, app, *, quiet: bool):
        self.app = app
        self.quiet = quiet
        self.started = False
        self.error: BaseException | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)

        async def send_quietly(message):
            if message["type"] == "lifespan.startup.complete":
                self.started = True
            elif self.quiet and message["type"] == "lifespan.startup.failed":
                message = {**message, "message": ""}
            await send(message)

        try:
            return await self.app(scope, receive, send_quietly)
        except BaseException as exc:
            if not self.started:
                self.error = exc
            raise


class _Readiness(threading.Thread):
    """Call ``on_ready`` once the server answers ``/api/v1/`` with the key."""

    def __init__(self, server, host: str, port: int, api_key: str, on_ready):
        super().__init__(name="bluestem-serve-ready", daemon=True)
        self.server = server
        # A wildcard bind answers on loopback; connecting to the wildcard is not portable.
        probe_host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        self.url = f"http://{url_host(probe_host)}:{port}/api/v1/"
        self.headers = {"Authorization": f"Apikey {api_key}"}
        self.on_ready = on_ready
        self.finished = False
        self.announced = False
        self.error: str | None = None

    def run(self) -> None:
        import httpx

        server = self.server
        while not server.started:
            if server.should_exit or self.finished:
                return
            time.sleep(0.05)
        deadline = time.monotonic() + READY_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline and not server.should_exit:
            try:
                # trust_env=False: an HTTP(S)_PROXY in the environment must not see this.
                response = httpx.get(self.url, headers=self.headers, timeout=5.0, trust_env=False)
                if response.status_code == 200:
                    if self.on_ready:
                        self.on_ready()
                    self.announced = True
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        if not server.should_exit:
            self.error = f"{self.url} did not answer 200 within {READY_TIMEOUT:g} s ({last})"
            server.should_exit = True


def url_host(host: str) -> str:
    """``host`` as it goes in a URL (IPv6 addresses in brackets)."""
    return f"[{host}]" if ":" in host else host


def describe_error(exc: BaseException) -> str:
    """The gist of ``exc`` on one line (pydantic, YAML and subprocess tracebacks)."""
    errors = getattr(exc, "errors", None)
    if callable(errors) and type(exc).__name__ == "ValidationError":
        found = errors()
        if found:
            where = ".".join(str(part) for part in found[0].get("loc", ()))
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            return f"{where}: {found[0].get('msg')}{more}"
    mark = getattr(exc, "problem_mark", None)
    if getattr(exc, "problem", None) and mark is not None:
        return f"{exc.problem} at line {mark.line + 1}, column {mark.column + 1}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    # Tiled's `catalog init` runs in a subprocess and hands back its whole traceback:
    # the exception line near the end is the reason.
    raised = [line for line in lines if _EXCEPTION_LINE.match(line)]
    if len(lines) > 1 and raised:
        return raised[-1]
    return f"{type(exc).__name__}: {lines[0]}"
