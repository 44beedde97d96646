"""System-test fixtures: real ``bluestem ioc sim`` processes on loopback.

The CA environment (loopback address list, private server/repeater ports) is set for the
whole session before any CA client is created; each IOC is a subprocess with a random
prefix, stopped by PID at teardown and checked to leave no process behind.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from ioc_client import CA, restore_settings, snapshot_settings, stop_and_check

from bluestem.procs import IocProcess, ca_environment, start_ioc


@pytest.fixture(scope="session")
def ca_env() -> Iterator[pytest.MonkeyPatch]:
    """Session CA environment: loopback only, private repeater port, set before any
    client exists.  Each IOC gets its own server port, appended to the address list as
    ``127.0.0.1:PORT`` (unicast searches reach only one server per port)."""
    env = ca_environment()
    # Hold the (unused) repeater port, so that no client's ephemeral UDP socket can land
    # on it and receive the beacons / registrations meant for a repeater.
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("0.0.0.0", int(env["EPICS_CA_REPEATER_PORT"])))
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(key, value)
    mp.setenv("EPICS_CA_ADDR_LIST", "")
    yield mp
    mp.undo()
    holder.close()


@pytest.fixture(scope="session")
def sim_factory(ca_env, tmp_path_factory):
    """Start extra IOCs: ``sim_factory(*args, ioc="sim") -> (IocProcess, CA, data_dir)``
    (``ioc``: ``bluestem ioc NAME``)."""
    started: list[IocProcess] = []

    def start(*args: str, data_dir: Path | None = None, ioc: str = "sim"):
        data = data_dir or tmp_path_factory.mktemp("data")
        log = tmp_path_factory.mktemp("log") / "ioc.log"
        env = ca_environment(repeater_port=int(os.environ["EPICS_CA_REPEATER_PORT"]))
        proc = start_ioc(ioc, args=["--data-dir", str(data), *args], env=env, log_path=log,
                         timeout=90)  # fmt: skip
        started.append(proc)
        addresses = os.environ["EPICS_CA_ADDR_LIST"].split()
        ca_env.setenv(
            "EPICS_CA_ADDR_LIST",
            " ".join([*addresses, f"127.0.0.1:{env['EPICS_CA_SERVER_PORT']}"]),
        )
        return proc, CA(proc.prefix), data

    yield start
    for proc in started:
        stop_and_check(proc)


@pytest.fixture(scope="session")
def shared_sim(sim_factory):
    """The worker's shared IOC (default options) and its settings as started:
    ``((IocProcess, CA, data_dir), settings)``."""
    started = sim_factory("--seed", "7")
    return started, snapshot_settings(started[1])


@pytest.fixture(scope="module")
def sim(shared_sim):
    """The shared IOC, ``(IocProcess, CA, data_dir)``, with the settings it started with:
    each test file begins from the same IOC, whatever file ran before it on this worker."""
    started, settings = shared_sim
    restore_settings(started[1], settings)
    return started


@pytest.fixture
def ca(sim) -> CA:
    return sim[1]


@pytest.fixture(scope="module")
def server(sim, tmp_path_factory):
    """A real ``bluestem serve`` whose readable storage is the shared IOC's data dir."""
    import secrets

    from bluestem.catalog import start_server

    _ioc, _ca, data = sim
    handle = start_server(
        tmp_path_factory.mktemp("catalog"), api_key=secrets.token_hex(16), raw_dirs=[data]
    )
    yield handle
    handle.stop()
    assert not handle.alive()


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(size_mb) -> Path``: a small RAM disk to fill up (needs root to mount, as
    this project's CI has); unmounted after the test."""
    import subprocess

    mounts = []

    def mount(size_mb: int) -> Path:
        where = tmp_path / f"disk{len(mounts)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs",
                               str(where)], capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): needs root")
        mounts.append(where)
        return where

    yield mount
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], check=False)
