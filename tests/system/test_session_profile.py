"""The IPython profile's startup file and ``bluestem shell`` against a real IOC."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
STARTUP = ROOT / "profiles" / "profile_bluestem" / "startup" / "00-bluestem.py"
PROBE = (
    "print('NAMES', sorted(k for k in ('RE', 'session', 'catalog', 'mic', 'scan', 'det', "
    "'raster', 'series') if k in globals())); "
    "print('HT', mic.high_tension.get()); print('MD', RE.md['sample'], RE.md['operator']); "
    "session.close()"
)


def _env(sim, tmp_path) -> dict:
    ioc, _ca, data = sim
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLUESTEM_")}
    env.update(
        BLUESTEM_PREFIX=ioc.prefix,
        BLUESTEM_DATA_ROOT=str(data),
        BLUESTEM_JOURNAL_DIR=str(tmp_path / "journal"),
        BLUESTEM_LIVE_DIR=str(tmp_path / "live"),
        BLUESTEM_SAMPLE="Si",
        USER="ada",
        EPICS_CA_SERVER_PORT=ioc.env["EPICS_CA_SERVER_PORT"],
    )
    return env


def _check(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("NAMES ['RE', 'catalog', 'det', 'mic', 'raster', 'scan', 'series', 'session']"
            in result.stdout)  # fmt: skip
    assert "MD Si ada" in result.stdout
    (ht,) = [line for line in result.stdout.splitlines() if line.startswith("HT ")]
    assert float(ht.split()[1]) > 0  # read over CA from the IOC


def test_startup_file_builds_the_session_from_sim_yml(sim, tmp_path):
    code = f"import runpy; globals().update(runpy.run_path({str(STARTUP)!r})); {PROBE}"
    result = subprocess.run([sys.executable, "-P", "-c", code], env=_env(sim, tmp_path),
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    _check(result)


def test_bluestem_shell_runs_the_profile(sim, tmp_path):
    pytest.importorskip("IPython")
    config = tmp_path / "inv.yml"
    config.write_text((ROOT / "profiles" / "sim.yml").read_text())
    # A copy of the profile: IPython writes log/, pid/, security/ into its profile dir.
    profile = tmp_path / "profile_bluestem"
    shutil.copytree(STARTUP.parent.parent, profile)
    (profile / "startup" / "00-bluestem.py").write_text(
        STARTUP.read_text().replace(
            '_Path(__file__).resolve().parents[2] / "sim.yml"',
            repr(str(ROOT / "profiles" / "sim.yml")),
        )
    )
    cmd = [sys.executable, "-P", "-c",
           "import sys; from bluestem.cli import main; sys.exit(main())",
           "shell", "--config", str(config), "--profile-dir", str(profile), "--", "--no-banner",
           "--HistoryManager.hist_file=:memory:", "-c", PROBE]  # fmt: skip
    env = {**_env(sim, tmp_path), "IPYTHONDIR": str(tmp_path / "ipython")}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    _check(result)
