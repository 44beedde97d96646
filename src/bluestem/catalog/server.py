"""Start and stop a ``bluestem serve`` catalogue server as a subprocess.

For tests, the demo and benchmarks: the server runs in its own process (as it would at a
facility), on a free loopback port unless told otherwise, and is stopped by PID.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bluestem.procs import BLUESTEM_COMMAND, ManagedProcess, free_port

__all__ = ["CatalogServer", "start_server"]


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
    if not api_key:
        raise ValueError("api_key is required to start a catalogue server")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = Path(log_path) if log_path else directory / "server.log"
    cmd = [sys.executable, "-c", BLUESTEM_COMMAND, "serve", "--dir", str(directory)]
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
