"""Start and stop bluestem's server processes (soft IOCs) on this machine.

Used by ``bluestem demo``, the system tests and the benchmarks.  It runs the
``bluestem ioc ...`` command in a subprocess (it never imports ``bluestem.ioc``), with
Channel Access kept on loopback and on ports of its own, so that nothing else on the
network sees it and several can run at once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "BLUESTEM_COMMAND",
    "IocProcess",
    "ManagedProcess",
    "MerlinSimProcess",
    "ca_environment",
    "free_port",
    "start_ioc",
    "start_merlin_sim",
]

# `python -c` rather than the console script: works from any virtualenv without PATH.
# Run it as `python -P -c`: plain `-c` puts the working directory first on sys.path, and
# a `bluestem/` folder there (the one holding a clone) becomes a namespace package that
# wins over the editable install.
BLUESTEM_COMMAND = "import sys; from bluestem.cli import main; sys.exit(main())"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (also free for UDP in practice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", 0))
        port = tcp.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", port))
    return port


def ca_environment(server_port: int | None = None, repeater_port: int | None = None) -> dict:
    """EPICS_CA_* variables that keep Channel Access on loopback, on private ports."""
    return {
        "EPICS_CA_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_SERVER_PORT": str(server_port or free_port()),
        "EPICS_CA_REPEATER_PORT": str(repeater_port or free_port()),
        "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
    }


class ManagedProcess:
    """What every server-process handle offers: stop by PID, its log, liveness.

    Subclasses are dataclasses with a ``process`` (:class:`subprocess.Popen`) and a
    ``log_path`` (file receiving its output, or None).
    """

    process: subprocess.Popen
    log_path: Path | None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        """What the process printed so far (when started with a log file)."""
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return ""

    def stop(self, timeout: float = 15.0) -> int:
        """Terminate by PID (SIGTERM: servers close their files), kill if needed."""
        proc = self.process
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL at once: a server that vanishes without warning (tests)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class IocProcess(ManagedProcess):
    """A running IOC: its PV prefix, the CA environment to reach it, the process."""

    prefix: str
    env: dict[str, str]
    process: subprocess.Popen
    log_path: Path | None = None
    args: list[str] = field(default_factory=list)


def start_ioc(
    name: str = "sim",
    *,
    prefix: str | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    ready_pv: str = "STATUS",
    timeout: float = 60.0,
    log_path: str | os.PathLike | None = None,
) -> IocProcess:
    """Start ``bluestem ioc NAME --prefix PFX ...`` and wait until ``PFX + ready_pv`` answers.

    Parameters
    ----------
    name : str
        The IOC (``bluestem ioc NAME``).
    prefix : str, optional
        PV prefix; default a random ``bst<hex>:`` so that runs never collide.
    args : sequence of str
        Further command-line arguments (``--data-dir``, ``--max-rate``, ...).
    env : mapping, optional
        CA environment; default :func:`ca_environment` (loopback, fresh ports).  The
        caller's CA client must use the same (``handle.env``) before its first CA call.
    ready_pv, timeout
        The PV polled until it answers, and for how long.
    log_path : path, optional
        File receiving the IOC's stdout and stderr (default: discarded).
    """
    prefix = prefix or f"bst{uuid.uuid4().hex[:8]}:"
    ca_env = dict(env) if env is not None else ca_environment()
    full_env = {**os.environ, **ca_env}
    cmd = [sys.executable, "-P", "-c", BLUESTEM_COMMAND, "ioc", name, "--prefix", prefix, *args]
    if "--interfaces" not in args:
        cmd += ["--interfaces", "127.0.0.1"]
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        proc = subprocess.Popen(cmd, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log_path:
            out.close()
    handle = IocProcess(prefix, ca_env, proc, Path(log_path) if log_path else None, cmd)
    try:
        _wait_ready(handle, prefix + ready_pv, timeout)
    except BaseException:
        handle.stop()
        raise
    return handle


def _wait_ready(handle: IocProcess, pv: str, timeout: float) -> None:
    # A throwaway subprocess probes the PV so that this process's CA client is not
    # created (and its environment frozen) before the caller is ready.
    probe = (
        "import sys; from caproto.sync.client import read; "
        f"read({pv!r}, timeout=1.0, repeater=False); sys.exit(0)"
    )
    deadline = time.monotonic() + timeout
    env = {**os.environ, **handle.env}
    while time.monotonic() < deadline:
        if not handle.alive():
            raise RuntimeError(
                f"IOC exited with code {handle.process.returncode} before {pv} answered\n"
                + handle.log()[-4000:]
            )
        # No pipes: a CA helper process inheriting them would keep run() waiting.
        result = subprocess.run(
            [sys.executable, "-P", "-c", probe],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )
        if result.returncode == 0:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{pv} did not answer within {timeout} s\n{handle.log()[-4000:]}")


@dataclass
class MerlinSimProcess(ManagedProcess):
    """A running ``bluestem merlin-sim``: its ports on 127.0.0.1, the process."""

    command_port: int
    data_port: int
    process: subprocess.Popen
    log_path: Path | None = None
    args: list[str] = field(default_factory=list)


def start_merlin_sim(
    args: Sequence[str] = (),
    *,
    log_path: str | os.PathLike | None = None,
    timeout: float = 60.0,
) -> MerlinSimProcess:
    """Start ``bluestem merlin-sim`` on free loopback ports and wait until it listens.

    ``args`` are further options (``--chips``, ``--frames-from``, ``--faults``, ...).
    """
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bluestem-merlin-") as tmp:
        ports_file = Path(tmp) / "ports.json"
        options = ["--host", "127.0.0.1", "--port-base", "0", "--ports-file", str(ports_file)]
        cmd = [sys.executable, "-P", "-c", BLUESTEM_COMMAND, "merlin-sim", *options, *args]
        out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        finally:
            if log_path:
                out.close()
        log = Path(log_path) if log_path else None
        deadline = time.monotonic() + timeout
        while not ports_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                handle = MerlinSimProcess(0, 0, proc, log, cmd)
                handle.stop()
                raise RuntimeError(f"merlin-sim did not start (exit {proc.returncode})\n"
                                   + handle.log()[-4000:])  # fmt: skip
            time.sleep(0.05)
        ports = json.loads(ports_file.read_text())
    return MerlinSimProcess(int(ports["command"]), int(ports["data"]), proc, log, cmd)
