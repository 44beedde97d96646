"""The issue's "done when": a 256 x 256 scan of 128 x 128 frames at --max-rate, nothing
dropped, the file verifies.  (About 2 GiB of frames: the slowest system test.)"""

from __future__ import annotations

import os

import numpy as np
import pytest
from ioc_client import configure_scan, run_scan, twin_of

from bluestem.frames import FRAMES_PATH, verify_file

pytestmark = pytest.mark.system


def test_256x256_scan_of_128x128_frames_at_max_rate(sim_factory):
    _, ca, _ = sim_factory("--max-rate", "--seed", "3")
    configure_scan(ca, shape=(256, 256), frame=128, dwell=1e-5, name="maxrate")
    path = run_scan(ca, timeout=300)

    assert ca.get("DET:HDF1:WriteStatus") == "Write OK", ca.get_str("DET:HDF1:WriteMessage")
    assert ca.get("DET:HDF1:NumCaptured_RBV") == 256 * 256
    assert ca.get("DET:HDF1:DroppedFrames_RBV") == 0
    assert ca.get("SCAN:State_RBV") == "Done"
    assert ca.get("DET:HDF1:WriteStatus") == "Write OK"
    report = verify_file(path)
    assert report.ok, report.summary()
    assert report.frames_received == 256 * 256 and len(report.dropped_indices) == 0

    # Spot-check rows against the twin (all of it would double the test's time).
    import h5py

    twin = twin_of(path)
    with h5py.File(path, "r") as f:
        data = f[FRAMES_PATH]
        for row in (0, 131, 255):
            np.testing.assert_array_equal(data[row], twin.render(row * 256, 256))
    # 2 GiB: unlinking drops its dirty pages, so the disk's write-back does not slow the
    # tests that follow.
    os.unlink(path)
