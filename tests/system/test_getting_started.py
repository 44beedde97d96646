"""docs/getting-started.md, steps 1-5, run as written, from a fresh directory.

The page's code blocks between its ``getting-started`` markers become one bash script:
``bash`` blocks as they are, the ``ipython`` block as the ``-c`` code of the ``bluestem
shell`` line before it, the ``python`` block as a script. Only what must differ on a
shared test machine is replaced: ``/tmp/bluestem`` by a temporary directory, port 8000 by
a free port, the prefix ``BST:`` by a random one, ``.venv/bin/activate`` by this
virtualenv's, and the uid prefix ``1a2b3c4d`` by the one the shell printed; the
Channel Access ports are private (environment).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from bluestem.procs import ca_environment, free_port

pytestmark = pytest.mark.system

PAGE = Path(__file__).resolve().parents[2] / "docs" / "getting-started.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def sequence() -> list[tuple[str, str]]:
    text = PAGE.read_text()
    begin = text.index("<!-- getting-started: begin -->")
    end = text.index("<!-- getting-started: end -->")
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(text[begin:end])]


def script(blocks, work: Path, replace) -> str:
    """The page's steps as one bash script writing its outputs under ``work``; every
    text goes through ``replace`` (the substitutions of the module docstring)."""
    # Not on the page: whatever happens, the servers the steps started in the background
    # are stopped when the script ends (a failing step must not leave them running).
    lines = ["set -eo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    shell_at = None
    for kind, body in blocks:
        if kind == "bash":
            for line in body.splitlines():
                if line.strip() == "bluestem shell":
                    shell_at = len(lines)
                lines.append(line)
        elif kind == "ipython":
            code = "\n".join(re.sub(r"^(In \[\d+\]:|\s*\.\.\.:) ?", "", line)
                             for line in body.splitlines() if line.strip())  # fmt: skip
            assert shell_at is not None, "an ipython block needs a `bluestem shell` before it"
            lines[shell_at] = (f"bluestem shell -- -c {shlex.quote(code)} > {work}/shell.out"
                               f" 2> {work}/shell.err")  # fmt: skip
            # The uid the shell printed, for the steps that name it.
            lines.insert(shell_at + 1, f"UID8=$(grep -o '^raster [0-9a-f]\\{{8\\}}' "
                                       f"{work}/shell.out | cut -c8-)")  # fmt: skip
        elif kind == "python":
            (work / "read.py").write_text(replace(body))
            lines.append(f"python {work}/read.py > {work}/read.out")
    return replace("\n".join(lines) + "\n")


def derived_image(journal: Path, parent: str, name: str) -> np.ndarray:
    """Image ``name`` of the derived run of ``parent``, from the session's journal."""
    from bluestem.callbacks import find_runs

    for run in find_runs(journal):
        docs = list(run.documents())
        if docs[0][1].get("parent_uid") == parent and docs[0][1]["reduction_mode"] == "live":
            (event,) = [d for n, d in docs if n == "event"]
            return np.asarray(event["data"][name], dtype=np.float64)
    raise AssertionError(f"no live derived run of {parent} in {journal}")


def test_the_getting_started_sequence_works_as_written(tmp_path, ca_env):
    blocks = sequence()
    assert [kind for kind, _ in blocks] == ["bash", "bash", "ipython", "bash", "python", "bash"]
    root, work = tmp_path / "bluestem", tmp_path / "out"
    work.mkdir()
    port, prefix = free_port(), f"gs{uuid.uuid4().hex[:6]}:"
    swaps = {
        "/tmp/bluestem": str(root),
        "8000": str(port),
        "BST:": prefix,
        ".venv/bin/activate": f"{sys.prefix}/bin/activate",
        "1a2b3c4d": "$UID8",
    }

    def replace(text: str) -> str:
        for old, new in swaps.items():
            text = text.replace(old, new)
        return text

    (work / "steps.sh").write_text(script(blocks, work, replace))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EPICS_", "BLUESTEM_"))}
    env.update(ca_environment())
    # profiles/sim.yml's defaults (BST:, /tmp/bluestem/...), replaced as on the page.
    env["BLUESTEM_PREFIX"] = prefix
    for name, sub in (("DATA_ROOT", "raw"), ("JOURNAL_DIR", "journal"), ("LIVE_DIR", "live")):
        env[f"BLUESTEM_{name}"] = str(root / sub)
    result = subprocess.run(["bash", str(work / "steps.sh")], cwd=fresh, env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    logs = "\n".join(p.read_text() for p in [*work.glob("*.out"), *work.glob("*.err"),
                                              *root.glob("*.log")] if p.exists())  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr + logs

    shell = (work / "shell.out").read_text()
    (line,) = [ln for ln in shell.splitlines() if ln.startswith("raster ")]
    uid = line.split()[1]
    assert f"raster {uid} success: 64 event(s) of frames in {root}/raw/" in line
    assert "derived run" in line
    pngs = sorted(p.name for p in (root / "png").glob("*.png"))
    assert f"bf-{uid[:8]}.png" in pngs and f"adf-{uid[:8]}.png" in pngs
    assert "derived run:" in result.stdout  # bluestem reduce said what it made
    read = (work / "read.out").read_text().splitlines()
    assert read[0] == "[64, 64] success"
    assert read[1].startswith("(64, 64, 128, 128) (128, 128) ") and int(read[1].split()[-1]) > 0
    # The page's first raster shows the lattice: the dark field's strongest spatial
    # frequency is a reciprocal-lattice vector of SrTiO3, (h, k) fov / a with
    # fov / a = 2 nm / 0.3905 nm = 5.12 cycles across the field, far above the noise.
    assert "warning" not in shell  # its step samples the lattice
    adf = derived_image(root / "journal", uid, "adf")
    power = np.abs(np.fft.fft2(adf - adf.mean())) ** 2
    peak = np.unravel_index(np.argmax(power), power.shape)
    cycles = np.array([k if k <= n // 2 else k - n for k, n in zip(peak, adf.shape,
                                                                    strict=True)])  # fmt: skip
    hk = cycles / (2.0 / 0.3905)
    assert np.abs(hk - np.round(hk)).max() * (2.0 / 0.3905) <= 1.0, cycles  # within a bin
    assert power.max() > 10 * np.median(power)
    # Both servers were stopped by the last step and exited cleanly.
    assert "bluestem catalogue stopped (SIGTERM)" in (root / "serve.log").read_text()
    assert (work / "shell.err").read_text().count("NOT in the catalogue") == 0
