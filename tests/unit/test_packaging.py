"""The built wheel carries every module of the four packages, at the mapped names."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAPPING = {
    "src/bluestem": "bluestem",
    "devices": "bluestem/devices",
    "plans": "bluestem/plans",
    "ioc": "bluestem/ioc",
}


def expected_members() -> set[str]:
    members = set()
    for folder, package in MAPPING.items():
        for path in (ROOT / folder).rglob("*.py"):
            members.add(f"{package}/{path.relative_to(ROOT / folder).as_posix()}")
    return members


def test_wheel_contains_every_module(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("bluestem-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = expected_members() - names
    assert not missing, f"modules missing from the wheel: {sorted(missing)}"
    assert "bluestem/cli/__init__.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "bluestem = bluestem.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
