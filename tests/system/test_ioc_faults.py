"""Simulated hardware faults: dropped / late frames (--faults) and stuck readbacks."""

from __future__ import annotations

import numpy as np
import pytest
from ioc_client import configure_scan, frames_of, run_scan, twin_of

from bluestem.frames import verify_file

pytestmark = pytest.mark.system

DROPPED = [5, 17, 40, 41, 42]
LATE = {60: 0.3, 100: 0.1}


def test_dropped_and_late_frames_are_accounted(sim_factory):
    late = ",".join(f"{i}:{d}" for i, d in LATE.items())
    _, ca, _ = sim_factory("--faults", f"drop=5,17,40-42;late={late}")
    configure_scan(ca, shape=(16, 16), frame=32, name="faulty")
    path = run_scan(ca)

    assert ca.get("DET:HDF1:DroppedFrames_RBV") == len(DROPPED)
    assert ca.get("DET:HDF1:NumCaptured_RBV") == 256 - len(DROPPED)
    report = verify_file(path)
    assert report.ok, report.summary()  # dropped frames are reported, not corruption
    assert sorted(int(i) for i in report.dropped_indices) == DROPPED
    frames, received = frames_of(path)
    flat_received = received.reshape(-1)
    assert np.flatnonzero(flat_received == 0).tolist() == DROPPED
    flat = frames.reshape(256, 32, 32)
    assert not flat[DROPPED].any()  # zeros, never a neighbour shifted in
    expected = twin_of(path).render(0, 256)
    keep = np.setdiff1d(np.arange(256), DROPPED)
    np.testing.assert_array_equal(flat[keep], expected[keep])  # late frames in place too
    assert all(flat_received[i] for i in LATE)


def test_stuck_readback_does_not_follow(sim_factory):
    _, ca, _ = sim_factory("--stuck", "HighTension,StageX")
    ca.put("MIC:HighTension", 150.0)
    ca.put("MIC:StageX", 4.0)
    ca.put("MIC:StageY", 4.0)
    assert ca.get("MIC:HighTension") == pytest.approx(150.0)
    assert ca.get("MIC:HighTension_RBV") == pytest.approx(200.0)  # stuck at its old value
    assert ca.get("MIC:StageX_RBV") == pytest.approx(0.0)
    assert ca.get("MIC:StageY_RBV") == pytest.approx(4.0)
    # The file records what the instrument really did (the readback), not the request.
    configure_scan(ca, shape=(2, 2), frame=16, name="stuck")
    path = run_scan(ca)
    assert twin_of(path).optics.high_tension == pytest.approx(200e3)


def test_bad_command_line_is_refused(sim_factory):
    import subprocess
    import sys

    launch = "import sys; from bluestem.cli import main; sys.exit(main())"
    for args, word in (
        (["--stuck", "Warp"], "Warp"),
        (["--faults", "explode=3"], "explode"),
        (["--specimen", "cheese"], "cheese"),
        (["--sync-interval=-1"], "'-1': allowed a number of seconds in 0..3600"),
    ):
        result = subprocess.run(
            [sys.executable, "-P", "-c", launch, "ioc", "sim", "--prefix", "X:", *args],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 2
        assert word in result.stdout + result.stderr


def test_sync_interval_is_the_writers_and_on_record(sim_factory):
    """``--sync-interval``: the IOC's writer fsyncs (power-loss safety) and the file
    says how it was written; off by default."""
    import h5py

    _, ca, _ = sim_factory("--sync-interval", "0")
    configure_scan(ca, shape=(8, 8), frame=16, name="synced")
    path = run_scan(ca)
    assert verify_file(path).ok
    with h5py.File(path, "r") as f:
        assert f["writer"].attrs["sync_interval_s"] == 0.0
        np.testing.assert_array_equal(f["received"][()], 1)
    _, ca, _ = sim_factory()
    configure_scan(ca, shape=(2, 2), frame=16, name="unsynced")
    with h5py.File(run_scan(ca), "r") as f:
        assert f["writer"].attrs["sync_interval_s"] == -1.0  # never
