"""``bluestem serve`` as a user runs it: refusals before anything starts, "serving" only
once the server answers, a clean exit on SIGTERM/SIGINT from a non-interactive shell."""

from __future__ import annotations

import contextlib
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from ioc_client import children_of

from bluestem.procs import free_port

pytestmark = pytest.mark.system

BLUESTEM = Path(sys.executable).with_name("bluestem")
KEY = "s3cretKey42"


def serve(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BLUESTEM), "serve", *args], capture_output=True, text=True, timeout=timeout
    )


def test_key_with_a_hyphen_is_refused_before_anything_starts(tmp_path):
    catalogue = tmp_path / "cat"
    t0 = time.monotonic()
    result = serve("--dir", str(catalogue), "--port", str(free_port()), "--api-key", "with-hyphen")
    assert time.monotonic() - t0 < 5
    assert result.returncode == 2
    assert result.stderr.startswith("error: --api-key: contains '-'")
    assert "ASCII letters and digits only, A-Z a-z 0-9" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert "with-hyphen" not in result.stderr  # the key itself is a secret
    assert "serving" not in result.stdout
    assert not (catalogue / "catalog.db").exists()
    assert not catalogue.exists()


@pytest.fixture
def busy_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    "case", ["busy-port", "dir-is-a-file", "missing-raw-dir", "log-level", "uri-scheme", "host"]
)
def test_bad_argument_is_one_line_and_exit_2(tmp_path, busy_port, case):
    catalogue = tmp_path / "cat"
    afile = tmp_path / "afile"
    afile.write_text("")
    port = busy_port if case == "busy-port" else free_port()
    args = {"--dir": str(catalogue), "--port": str(port), "--api-key": KEY}
    flag, value, why = {
        "busy-port": ("--port", str(port), "already in use on 127.0.0.1"),
        "dir-is-a-file": ("--dir", str(afile), "is not a directory"),
        "missing-raw-dir": ("--raw-dir", str(tmp_path / "no-raw"), "does not exist"),
        "log-level": ("--log-level", "loud", "allowed: critical, error, warning, info"),
        "uri-scheme": ("--catalog-uri", "mysql://db/cat", "unsupported scheme 'mysql'"),
        # TEST-NET-1 (RFC 5737): never an address of this machine.
        "host": ("--host", "192.0.2.1", "not an address of this machine"),
    }[case]
    args[flag] = value
    result = serve(*[part for pair in args.items() for part in pair])
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {flag} {value}: ")
    assert why in line
    assert "serving" not in result.stdout
    assert not catalogue.exists()


def test_failed_start_is_one_line_and_exit_1(tmp_path):
    # The configuration parses, but the database it names cannot be reached: this fails
    # inside the application's startup, the path that used to print a long traceback.
    closed = free_port()
    config = tmp_path / "tiled.yml"
    config.write_text(
        "trees:\n  - path: /\n    tree: catalog\n"
        f"    args: {{uri: 'postgresql+asyncpg://u:pw@127.0.0.1:{closed}/cat'}}\n"
    )
    result = serve(
        "--config", str(config), "--port", str(free_port()), "--api-key", KEY, timeout=60
    )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: the catalogue server failed to start: "
        "ConnectionRefusedError: [Errno 111] Connection refused"
    ]
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) <= 3
    assert "serving" not in result.stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serving_means_answering_and_a_signal_stops_it_with_exit_0(tmp_path, sig):
    # The launch context, checked rather than assumed: SIGINT ignored in background jobs.
    probe = f"{shlex.quote(sys.executable)} -c 'import signal; print(signal.getsignal(2) == 1)'"
    inherited = subprocess.run(["bash", "-c", f"{probe} & wait"], capture_output=True, text=True)
    assert inherited.stdout.strip() == "True"

    port = free_port()
    pid_file, err_log = tmp_path / "pid", tmp_path / "stderr.log"
    catalogue = tmp_path / "cat"
    serve_cmd = shlex.join(
        [str(BLUESTEM), "serve", "--dir", str(catalogue), "--port", str(port), "--api-key", KEY]
    )
    # A background job of a non-interactive shell (SIGINT ignored); its stdout is the
    # shell's, read here line by line; the shell exits with the job's status.
    script = f"{serve_cmd} 2>{shlex.quote(str(err_log))} & echo $! >{pid_file}; wait $!"
    shell = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in shell.stdout], daemon=True)
    reader.start()
    pid = None
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pid = int(pid_file.read_text())
        while True:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
            if "serving" in line:
                break
        # At once: "serving" is a promise that the server answers.
        response = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/",
            headers={"Authorization": f"Apikey {KEY}"},
            trust_env=False,
        )
        assert response.status_code == 200
        assert line.startswith(f"bluestem catalogue serving http://127.0.0.1:{port} (catalogue ")
        children = children_of(pid)

        t0 = time.monotonic()
        os.kill(pid, sig)
        assert shell.wait(timeout=10) == 0, err_log.read_text()
        assert time.monotonic() - t0 < 10
        assert [c for c in children if Path(f"/proc/{c}").exists()] == []
        assert children_of(pid) == []
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/api/v1/", trust_env=False)
        reader.join(5)
        rest = []
        while not lines.empty():
            rest.append(lines.get())
        assert f"bluestem catalogue stopped ({sig.name})\n" in rest
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if shell.poll() is None:
            shell.kill()
        shell.wait(10)
