"""``bluestem demo`` end to end: IOC + embedded catalogue + session raster + PNGs."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from bluestem.frames import verify_file

pytestmark = pytest.mark.system


def test_demo_small_scan(tmp_path):
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPICS_")}
    result = subprocess.run(
        [sys.executable, "-P", "-c", "import sys; from bluestem.cli import main; sys.exit(main())",
         "demo", "--shape", "8", "8", "--frame", "64", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    assert "demo OK" in result.stdout
    assert "dropped:   0" in result.stdout
    assert "64/64 frames" in result.stderr  # the progress bar (plain lines: not a TTY)
    uid = re.search(r"run uid:\s+(\S+)", result.stdout).group(1)
    assert f"/api/v1/metadata/{uid}  (written)" in result.stdout
    (raw,) = sorted((out / "raw").glob("*.h5"))
    report = verify_file(raw)
    assert report.ok and report.frames_received == 64
    assert raw.stat().st_mode & 0o222 == 0  # closed read-only
    # The live images: virtual images, COM, iDPC, the latest and the sum pattern, figure.
    pngs = sorted(p.name for p in out.glob("*.png"))
    panels = ("adf", "bf", "com", "ddpc", "dp", "idpc", "live", "sum")
    assert pngs == [f"{name}-{uid[:8]}.png" for name in panels]
    derived = re.search(r"live:\s+derived run (\S+) \(", result.stdout).group(1)
    assert "bf" in result.stdout and "idpc" in result.stdout
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    # The journal holds the run, marked synced.
    assert list((out / "journal").rglob(f"{uid}.synced"))
    assert list((out / "journal").rglob(f"{derived}.synced"))
    # Everything it started was stopped: the pids are gone.
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\) stopped", result.stdout)]
    assert len(pids) == 2
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}")


def test_demo_refuses_catalog_without_key(tmp_path):
    result = subprocess.run(
        [sys.executable, "-P", "-c", "import sys; from bluestem.cli import main; sys.exit(main())",
         "demo", "--catalog", "http://127.0.0.1:9", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "--catalog needs --api-key" in result.stderr


def test_demo_against_a_running_catalogue(tmp_path):
    import secrets

    from tiled.client import from_uri

    from bluestem.catalog import start_server

    out = tmp_path / "demo"
    (out / "raw").mkdir(parents=True)
    key = secrets.token_hex(16)
    server = start_server(tmp_path / "cat", api_key=key, raw_dirs=[out / "raw"])
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EPICS_")}
        result = subprocess.run(
            [sys.executable, "-P", "-c",
             "import sys; from bluestem.cli import main; sys.exit(main())",
             "demo", "--shape", "4", "4", "--frame", "32", "--out", str(out),
             "--catalog", server.uri, "--api-key", key],
            capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "starting the catalogue" not in result.stdout
        uid = re.search(r"run uid:\s+(\S+)", result.stdout).group(1)
        run = from_uri(server.uri, api_key=key)[uid]
        assert run.metadata["stop"]["exit_status"] == "success"
        assert run["primary"]["det_image"].shape == (4, 4, 32, 32)
        derived = re.search(r"live:\s+derived run (\S+) \(", result.stdout).group(1)
        reduced = from_uri(server.uri, api_key=key)[derived]
        assert reduced.metadata["start"]["parent_uid"] == uid
        assert reduced["primary"]["bf"].shape == (1, 4, 4)
        assert server.alive()  # not ours to stop
    finally:
        server.stop()
