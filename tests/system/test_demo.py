"""``bluestem demo`` end to end: a fresh IOC, a scan over CA, a verified file."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bluestem.frames import verify_file

pytestmark = pytest.mark.system


def test_demo_small_scan(tmp_path):
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPICS_")}
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from bluestem.cli import main; sys.exit(main())",
         "demo", "--shape", "8", "8", "--frame", "64", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo OK" in result.stdout
    assert "dropped:   0" in result.stdout
    files = sorted(out.glob("demo_*.h5"))
    assert [f.name for f in files] == ["demo_000001.h5"]
    report = verify_file(files[0])
    assert report.ok and report.frames_received == 64
    assert not os.access(files[0], os.W_OK) or os.geteuid() == 0  # closed read-only
    assert files[0].stat().st_mode & 0o222 == 0
    # The IOC was stopped: its pid is gone.
    pid = int(result.stdout.split("IOC (pid ")[1].split(",")[0])
    assert not os.path.exists(f"/proc/{pid}")
