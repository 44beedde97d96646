"""The real ``bluestem verify`` command: exit codes 0 and 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

from bluestem.frames import FRAMES_PATH, FrameWriter

BLUESTEM = Path(sys.executable).with_name("bluestem")


def make(path, skip=()):
    data = np.arange(6 * 4 * 4, dtype=np.uint16).reshape(6, 4, 4)
    with FrameWriter(path, scan_shape=(2, 3), frame_shape=(4, 4), dtype=np.uint16) as w:
        for i in range(6):
            if i not in skip:
                w.submit(i, data[i : i + 1])


def bluestem(*args):
    return subprocess.run(
        [str(BLUESTEM), "verify", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_verify_command_exit_codes(tmp_path):
    good, dropped, bad = tmp_path / "good.h5", tmp_path / "dropped.h5", tmp_path / "bad.h5"
    make(good)
    make(dropped, skip=(4,))
    make(bad)
    with h5py.File(bad, "r") as f:
        position = f[FRAMES_PATH].id.get_chunk_info(0).byte_offset + 5
    os.chmod(bad, 0o644)
    with open(bad, "r+b") as fh:
        fh.seek(position)
        value = fh.read(1)[0]
        fh.seek(position)
        fh.write(bytes([value ^ 1]))

    ok = bluestem(good, dropped)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "dropped frames: 4" in ok.stdout

    strict = bluestem("--strict", dropped)
    assert strict.returncode == 1

    corrupt = bluestem(good, bad)
    assert corrupt.returncode == 1
    assert "corrupt chunk" in corrupt.stdout

    missing = bluestem(tmp_path / "missing.h5")
    assert missing.returncode == 1
    assert "does not exist" in missing.stdout

    as_json = bluestem("--json", good)
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout)["ok"] is True
