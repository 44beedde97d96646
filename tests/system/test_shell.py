"""``bluestem shell`` as a new user meets it: a run right before exit reaches the
catalogue, an unreachable catalogue is waited for only so long (and the journal and the
shell say what is left), the shell says what each run recorded, and a session that
cannot be built stops the shell instead of opening IPython without ``RE``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from sessions import inventory, set_frame

pytestmark = pytest.mark.system

BLUESTEM = Path(sys.executable).with_name("bluestem")
PROFILE = Path(__file__).resolve().parents[2] / "profiles" / "profile_bluestem"
RASTER = "RE(raster(det, scan, shape=(8, 8), dwell=1e-4, fov=1.0, microscope=mic))"


def _config(tmp_path, ioc, data, **extra) -> Path:
    inv = inventory(ioc, data, tmp_path / "journal", namespace=["bluestem.plans"], **extra)
    path = tmp_path / "session.yml"
    path.write_text(yaml.safe_dump(inv))
    return path


def _shell(config: Path, code: str, *, timeout: float = 240, env=None):
    return subprocess.run(
        [str(BLUESTEM), "shell", "--config", str(config), "--", "-c", code],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )  # fmt: skip


def _journal(tmp_path) -> dict[str, dict]:
    """uid -> which markers its journal file has, and the unsynced reason."""
    out = {}
    for path in (tmp_path / "journal").rglob("*.jsonl"):
        unsynced = path.with_suffix(".unsynced")
        out[path.stem] = {
            "synced": path.with_suffix(".synced").exists(),
            "unsynced": json.loads(unsynced.read_text())["reason"] if unsynced.exists() else None,
        }
    return out


def test_a_run_just_before_exit_is_in_the_catalogue_and_the_shell_says_so(sim, server, tmp_path):
    from tiled.client import from_uri
    from tiled.queries import Key

    ioc, ca, data = sim
    set_frame(ca, 32)
    config = _config(tmp_path, ioc, data, catalog={"uri": server.uri, "api_key": server.api_key})
    result = _shell(config, RASTER)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = [line for line in result.stdout.splitlines() if line.startswith("raster ")]
    assert len(summary) == 1, result.stdout
    uid = summary[0].split()[1]
    assert f"raster {uid} success" in summary[0]
    assert str(data) in summary[0] and ".h5" in summary[0]
    derived_uid = summary[0].split("derived run ")[1].split()[0]
    assert f'c["{uid}"]["primary"]["det_image"]' in result.stdout
    assert "NOT in the catalogue" not in result.stderr

    catalog = from_uri(server.uri, api_key=server.api_key)
    assert catalog[uid].metadata["stop"]["exit_status"] == "success"
    (found,) = list(catalog.search(Key("start.parent_uid") == uid))
    assert found == derived_uid
    assert catalog[derived_uid].metadata["stop"]["exit_status"] == "success"
    marks = _journal(tmp_path)
    assert marks[uid] == {"synced": True, "unsynced": None}
    assert marks[derived_uid] == {"synced": True, "unsynced": None}


@pytest.fixture
def black_hole():
    """A TCP server that accepts connections and never answers (a hung catalogue)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    listener.close()


def test_a_hung_catalogue_is_waited_for_only_so_long_and_the_runs_are_named(
    sim, tmp_path, black_hole
):
    ioc, ca, data = sim
    set_frame(ca, 32)
    catalog = {"uri": black_hole, "api_key": "secret", "exit_timeout": 2}
    config = _config(tmp_path, ioc, data, catalog=catalog)
    t0 = time.monotonic()
    result = _shell(config, RASTER)
    took = time.monotonic() - t0
    assert result.returncode == 0, result.stdout + result.stderr
    assert took < 90, took
    marks = _journal(tmp_path)
    assert len(marks) == 2  # the raw run and its derived run
    assert "2 run(s) are NOT in the catalogue" in result.stderr, result.stderr
    assert f"bluestem sync --journal {tmp_path / 'journal'} --catalog {black_hole}" in (
        result.stderr
    )
    for uid, mark in marks.items():
        assert uid in result.stderr
        assert not mark["synced"]
        assert "the session ended before the catalogue had it" in mark["unsynced"]


def _unreachable(tmp_path) -> Path:
    """An inventory whose device prefix no IOC serves."""
    config = tmp_path / "bad.yml"
    config.write_text(yaml.safe_dump({
        "devices": [{"class": "bluestem.devices.Microscope", "prefix": "NOSUCH:MIC:",
                     "name": "mic"}],
        "connect_timeout": 0.5, "progress": False, "journal_dir": str(tmp_path / "j"),
    }))  # fmt: skip
    return config


def test_a_session_that_cannot_connect_does_not_open_ipython(tmp_path, ca_env):
    config = _unreachable(tmp_path)
    result = _shell(config, "print('REACHED IPYTHON')", timeout=120)
    assert result.returncode == 1
    assert "REACHED IPYTHON" not in result.stdout
    assert "no session, not starting IPython" in result.stderr
    assert "ConnectionError: device 'mic'" in result.stderr
    assert "NOSUCH:MIC:" in result.stderr


def test_plain_ipython_profile_starts_degraded_and_says_so(tmp_path, ca_env):
    config = _unreachable(tmp_path)
    ipython = Path(sys.executable).with_name("ipython")
    result = subprocess.run(
        [str(ipython), f"--profile-dir={PROFILE}", "-c", "print('session is', session)"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "BLUESTEM_CONFIG": str(config)},
    )  # fmt: skip
    assert "session is None" in result.stdout
    assert "bluestem: NO SESSION" in result.stderr
    assert "RE, the devices and the plans are NOT defined" in result.stderr
