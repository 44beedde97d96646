"""``bluestem ioc sim`` as a process: banner, data directory, duplicate prefix, signals,
and a working directory that must not shadow the package.

Every IOC here is a real process on loopback with a random prefix and CA ports of its
own, stopped by PID in ``finally``.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from ioc_client import CA, children_of, stop_and_check

from bluestem.procs import BLUESTEM_COMMAND, ca_environment, start_ioc

pytestmark = pytest.mark.system

CLI = [sys.executable, "-P", "-c", BLUESTEM_COMMAND]
BANNER = re.compile(
    r"bluestem ioc sim: serving (?P<count>\d+) PVs with prefix (?P<prefix>\S+) on "
    r"(?P<interfaces>[^(]+) \(CA server port (?P<ca_port>\d+), TCP port (?P<tcp_port>\d+)\); "
    r"data directory (?P<data_dir>.+); ready"
)


def new_prefix() -> str:
    return f"cli{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def ioc_env(ca_env, monkeypatch) -> dict[str, str]:
    """A private CA environment for one test's IOC(s); this process's CA client reaches
    it (the session's address list is restored after the test)."""
    env = ca_environment(repeater_port=int(os.environ["EPICS_CA_REPEATER_PORT"]))
    port = env["EPICS_CA_SERVER_PORT"]
    monkeypatch.setenv("EPICS_CA_ADDR_LIST", f"127.0.0.1:{port}")
    return env


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(what)


def wait_banner(log: Path, alive, timeout: float = 60.0) -> re.Match:
    def banner():
        if not alive():
            raise RuntimeError(f"IOC exited before its banner:\n{log.read_text()}")
        return BANNER.search(log.read_text()) if log.exists() else None

    return wait_for(banner, timeout, f"no banner in {log}")


def answers_once(prefix: str) -> bool:
    """One CA read of PFX:STATUS, no retry: is it being served right now?"""
    from caproto import CaprotoTimeoutError
    from caproto.sync.client import read

    try:
        return read(prefix + "STATUS", timeout=2.0, repeater=False).data[0] == b"OK"
    except CaprotoTimeoutError:
        return False


def count_listed_pvs(prefix: str) -> int:
    out = subprocess.run(
        [*CLI, "ioc", "sim", "--prefix", prefix, "--list-pvs"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    return len(out.splitlines())


# -- banner and data directory --------------------------------------------------------


def test_banner_after_serving_names_prefix_ports_data_dir_and_pv_count(ioc_env, tmp_path):
    from bluestem.cli._ioc_serve import find_server

    prefix = new_prefix()
    data = tmp_path / "not" / "yet" / "raw"
    log = tmp_path / "ioc.log"
    cmd = [*CLI, "ioc", "sim", "--prefix", prefix, "--data-dir", str(data)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, env={**os.environ, **ioc_env}, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        banner = wait_banner(log, lambda: proc.poll() is None)
        # The banner is the readiness signal: the IOC answers at once, no retry.
        assert answers_once(prefix), log.read_text()
        assert banner["prefix"] == prefix
        assert banner["interfaces"] == "127.0.0.1"
        assert banner["ca_port"] == ioc_env["EPICS_CA_SERVER_PORT"]
        assert banner["data_dir"] == str(data)
        assert data.is_dir()
        assert int(banner["count"]) == count_listed_pvs(prefix) > 100
        # The TCP port is the one a CA search reports.
        assert find_server(prefix + "STATUS") == ("127.0.0.1", int(banner["tcp_port"]))
        assert CA(prefix).get_str("DET:HDF1:FilePath_RBV") == str(data)
        assert log.read_text().count("ready") == 1
    finally:
        if proc.poll() is None:
            proc.terminate()
        assert proc.wait(15) == 0
    assert "stopped by SIGTERM" in log.read_text()


@pytest.mark.parametrize("case", ["under-a-file", "a-file"])
def test_an_impossible_data_dir_is_refused_before_serving(ioc_env, tmp_path, case):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    data = blocker / "raw" if case == "under-a-file" else blocker
    prefix = new_prefix()
    started = time.monotonic()
    result = subprocess.run(
        [*CLI, "ioc", "sim", "--prefix", prefix, "--data-dir", str(data)],
        env={**os.environ, **ioc_env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert str(data) in output and "nothing served" in output
    assert ("Not a directory" if case == "under-a-file" else "not a directory") in output
    assert BANNER.search(output) is None
    assert time.monotonic() - started < 20


# -- duplicate prefix ------------------------------------------------------------------


def test_a_second_ioc_with_the_same_prefix_refuses(ioc_env, tmp_path):
    log = tmp_path / "first.log"
    first = start_ioc(env=ioc_env, log_path=log, args=["--data-dir", str(tmp_path)], timeout=90)
    try:
        tcp_port = wait_banner(log, first.alive)["tcp_port"]
        started = time.monotonic()
        second = subprocess.run(
            [*CLI, "ioc", "sim", "--prefix", first.prefix, "--data-dir", str(tmp_path)],
            env={**os.environ, **ioc_env}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        elapsed = time.monotonic() - started
        output = second.stdout + second.stderr
        assert second.returncode == 2, output
        assert first.prefix in output and f"127.0.0.1:{tcp_port}" in output, output
        assert BANNER.search(output) is None
        assert elapsed < 10, elapsed
        assert first.alive()
        assert answers_once(first.prefix)
    finally:
        stop_and_check(first)
    assert first.process.returncode == 0


# -- signals, in a launch context that ignores SIGINT ----------------------------------


def launch_in_background(cmd: list[str], env: dict, log: Path) -> tuple[subprocess.Popen, int]:
    """``bash -c 'CMD > LOG 2>&1 & echo $!; wait $!'``: a non-interactive shell starts
    the job with SIGINT (and SIGQUIT) ignored.  Returns (the shell, the IOC's PID); the
    shell's exit code is the IOC's."""
    script = f"{shlex.join(cmd)} > {shlex.quote(str(log))} 2>&1 & echo $!; wait $!"
    shell = subprocess.Popen(["bash", "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    return shell, int(shell.stdout.readline())


def ignored_signals(pid: int) -> int:
    """The SigIgn mask of ``pid`` (bit ``n - 1`` set: signal ``n`` ignored)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"SigIgn:\s*([0-9a-f]+)", status)[1], 16)


def bit(signum: int) -> int:
    return 1 << (signum - 1)


def background_job_ignores(signum: int) -> bool:
    """Whether a job started like :func:`launch_in_background` starts with ``signum``
    ignored (read by the job itself)."""
    out = subprocess.run(
        ["bash", "-c", "grep SigIgn /proc/self/status & wait $!"],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout  # fmt: skip
    return bool(int(out.split()[1], 16) & bit(signum))


def assert_closed_read_only(path: str):
    import h5py

    from bluestem.frames import RECEIVED_PATH

    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    with h5py.File(path, "r") as f:
        return f[RECEIVED_PATH][()]


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["TERM", "INT", "HUP"]
)
def test_a_background_ioc_stops_cleanly_on_a_signal(ioc_env, tmp_path, signum):
    prefix = new_prefix()
    log = tmp_path / "ioc.log"
    cmd = [*CLI, "ioc", "sim", "--prefix", prefix, "--data-dir", str(tmp_path)]
    cmd += ["--interfaces", "127.0.0.1"]
    shell, pid = launch_in_background(cmd, {**os.environ, **ioc_env}, log)
    try:
        wait_banner(log, lambda: shell.poll() is None)
        # The launch context this test is about: such a job starts with SIGINT ignored
        # (and SIGQUIT, which the IOC leaves alone); the IOC installed its own handler.
        assert background_job_ignores(signal.SIGINT)
        assert ignored_signals(pid) & bit(signal.SIGQUIT)
        assert not ignored_signals(pid) & bit(signal.SIGINT)
        ca = CA(prefix)
        ca.put("DET:HDF1:FileName", f"sig{signum.name}")
        if signum == signal.SIGINT:
            # A scan in flight: the engine is aborted, the file keeps what was written.
            from ioc_client import configure_scan

            configure_scan(ca, shape=(64, 64), frame=32, dwell=1e-3, name=f"sig{signum.name}")
            ca.put("DET:HDF1:Capture", 1)
            ca.put("DET:cam1:Acquire", 1)
            ca.put("SCAN:Start", 1)
            ca.wait("DET:HDF1:NumCaptured_RBV", lambda n: n > 0, timeout=60)
        else:
            # A file open, nothing running: the writer alone is closed.
            ca.put("DET:HDF1:Capture", 1)
        path = ca.get_str("DET:HDF1:FullFileName_RBV")
        assert ca.get("DET:HDF1:Capture_RBV") == 1
        kids = children_of(pid)
        started = time.monotonic()
        os.kill(pid, signum)
        assert shell.wait(15) == 0, log.read_text()
        assert time.monotonic() - started < 10
        assert not Path(f"/proc/{pid}").exists()
        wait_for(
            lambda: not [k for k in kids if Path(f"/proc/{k}").exists()], 5, "orphaned children"
        )
        received = assert_closed_read_only(path)
        if signum == signal.SIGINT:
            assert 0 < received.sum() < received.size
        assert f"stopped by {signum.name}" in log.read_text()
    finally:
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
        if shell.poll() is None:
            shell.kill()
        shell.wait(10)


# -- the working directory must not shadow the package --------------------------------


def shadowing_folder(root: Path, layout: str) -> Path:
    """A working directory holding a ``bluestem/`` folder (empty, or a clone's layout)."""
    (root / "bluestem").mkdir()
    if layout == "clone":
        package = root / "bluestem" / "src" / "bluestem"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text('"""A checkout without __version__."""\n')
    return root


@pytest.mark.parametrize("layout", ["empty", "clone"])
def test_start_ioc_from_a_folder_holding_bluestem(ca_env, tmp_path, monkeypatch, layout):
    monkeypatch.chdir(shadowing_folder(tmp_path, layout))
    env = ca_environment(repeater_port=int(os.environ["EPICS_CA_REPEATER_PORT"]))
    log = tmp_path / "ioc.log"
    ioc = start_ioc(env=env, log_path=log, args=["--data-dir", str(tmp_path)], timeout=90)
    try:
        assert ioc.alive()
        assert BANNER.search(ioc.log()), ioc.log()
    finally:
        stop_and_check(ioc)


def test_start_server_from_a_folder_holding_bluestem(tmp_path, monkeypatch):
    from bluestem.catalog import start_server

    monkeypatch.chdir(shadowing_folder(tmp_path, "clone"))
    server = start_server(tmp_path / "cat", api_key=secrets.token_hex(16), timeout=90)
    try:
        assert server.alive()
    finally:
        server.stop()
    assert not server.alive()
