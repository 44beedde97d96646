"""Acquisitions through the sim IOC, checked against the real writer's verifier and the
real twin rebuilt from the file's metadata."""

from __future__ import annotations

import numpy as np
import pytest
from ioc_client import configure_scan, frames_of, run_scan, twin_of

from bluestem.frames import verify_file

pytestmark = pytest.mark.system


def test_external_scan_16x16_matches_the_twin(ca):
    configure_scan(ca, shape=(16, 16), frame=64, name="ext16")
    path = run_scan(ca)

    report = verify_file(path)
    assert report.ok, report.summary()
    assert report.frames_expected == 256 and report.frames_received == 256
    assert len(report.dropped_indices) == 0
    assert ca.get("DET:HDF1:NumCaptured_RBV") == 256
    assert ca.get("DET:HDF1:DroppedFrames_RBV") == 0
    assert ca.get("SCAN:State_RBV") == "Done"
    assert ca.get("SCAN:FramesDone_RBV") == 256
    assert ca.get("SCAN:Progress_RBV") == pytest.approx(100.0)
    assert ca.get("DET:HDF1:WriteStatus") == "Write OK"
    assert ca.get("DET:cam1:ArrayCounter_RBV") == 256

    frames, received = frames_of(path)
    assert frames.shape == (16, 16, 64, 64) and frames.dtype == np.uint16
    assert received.all()
    twin = twin_of(path)
    expected = twin.render(0, 256).reshape(16, 16, 64, 64)
    np.testing.assert_array_equal(frames, expected)
    assert frames.sum() > 0  # the beam was on: dose = current x dwell / e


def test_file_metadata_records_the_readbacks(ca):
    import h5py

    ca.put("MIC:HighTension", 80.04)  # quantised to 0.1 kV by the simulated hardware
    try:
        configure_scan(ca, shape=(2, 3), frame=32, name="meta")
        path = run_scan(ca)
        with h5py.File(path, "r") as f:
            mic = dict(f["metadata/microscope"].attrs)
            scan = dict(f["metadata/scan"].attrs)
            sim = dict(f["metadata/simulation"].attrs)
            cal = dict(f["metadata/calibration"].attrs)
        assert mic["HighTension"] == pytest.approx(80.0)
        assert list(scan["shape"]) == [2, 3]
        assert cal["angle_per_pixel"] == pytest.approx(55e-6 / 0.1)
        assert int(sim["seed"]) >= 7
        twin = twin_of(path)
        assert twin.optics.high_tension == pytest.approx(80e3)
        dose = 10e-12 * 1e-4 / 1.602176634e-19  # BeamCurrent 10 pA x dwell 1e-4 s / e
        assert twin.dose_per_frame == pytest.approx(dose)
    finally:
        ca.put("MIC:HighTension", 200.0)


def test_internal_trigger_series(ca):
    ca.put("DET:cam1:TriggerMode", "Internal")
    try:
        ca.put("DET:cam1:SizeX", 32)
        ca.put("DET:cam1:SizeY", 32)
        ca.put("DET:cam1:ImageMode", "Multiple")
        ca.put("DET:cam1:AcquireTime", 1e-4)
        ca.put("DET:cam1:AcquirePeriod", 1e-3)
        ca.put("DET:cam1:NumImages", 20)
        ca.put("DET:HDF1:NumCapture", 20)
        ca.put("SCAN:BeamX", 0.3)
        ca.put("SCAN:BeamY", -0.2)
        ca.put("DET:HDF1:FileName", "series")
        ca.put("DET:HDF1:Capture", 1)
        path = ca.get_str("DET:HDF1:FullFileName_RBV")
        ca.put("DET:cam1:Acquire", 1)
        ca.wait_idle()
        report = verify_file(path)
        assert report.ok, report.summary()
        assert report.frames_received == 20
        assert ca.get("DET:HDF1:NumCaptured_RBV") == 20
        frames, received = frames_of(path)
        assert frames.shape == (20, 32, 32) and received.all()
        twin = twin_of(path)
        positions = np.tile([[-0.2e-9, 0.3e-9]], (20, 1))
        np.testing.assert_array_equal(frames, twin.render_at(positions, np.arange(20)))
    finally:
        ca.put("SCAN:BeamX", 0.0)
        ca.put("SCAN:BeamY", 0.0)
        ca.put("DET:cam1:TriggerMode", "External")


@pytest.mark.parametrize("how, state", [("Stop", "Done"), ("Abort", "Aborted")])
def test_stop_mid_scan_keeps_a_valid_partial_file(ca, how, state):
    # 256 x 64 positions at 2 ms: ~33 s if left alone; stopped after a few rows. (At 64 x 64,
    # ~8 s, a loaded CI machine once let the whole scan finish before the stop arrived.)
    ny, nx = 256, 64
    configure_scan(ca, shape=(ny, nx), frame=16, dwell=2e-3, name=f"partial{how}")
    ca.put("DET:HDF1:Capture", 1)
    path = ca.get_str("DET:HDF1:FullFileName_RBV")
    ca.put("DET:cam1:Acquire", 1)
    ca.put("SCAN:Start", 1)
    ca.wait("SCAN:FramesDone_RBV", lambda n: n >= 128, timeout=30)
    ca.put(f"SCAN:{how}", 1)
    ca.wait_idle()
    assert ca.get("SCAN:State_RBV") == state
    written = ca.get("DET:HDF1:NumCaptured_RBV")
    assert 128 <= written < ny * nx
    report = verify_file(path)
    assert report.ok, report.summary()  # missing frames are not corruption
    assert report.frames_received == written
    frames, received = frames_of(path)
    flat = received.reshape(-1).astype(bool)
    assert flat[:written].all() and not flat[written:].any()  # never shifted
    twin = twin_of(path)
    np.testing.assert_array_equal(frames.reshape(-1, 16, 16)[:written], twin.render(0, written))


def test_terminated_ioc_closes_its_file(sim_factory):
    from ioc_client import stop_and_check

    ioc, ca, _ = sim_factory()
    configure_scan(ca, shape=(64, 64), frame=16, dwell=2e-3, name="terminated")
    ca.put("DET:HDF1:Capture", 1)
    path = ca.get_str("DET:HDF1:FullFileName_RBV")
    ca.put("DET:cam1:Acquire", 1)
    ca.put("SCAN:Start", 1)
    ca.wait("DET:HDF1:NumCaptured_RBV", lambda n: n >= 64, timeout=30)
    stop_and_check(ioc)  # SIGTERM by PID
    assert ioc.process.returncode == 0
    report = verify_file(path)
    assert report.ok, report.summary()
    assert 64 <= report.frames_received < 64 * 64
    import os

    assert os.stat(path).st_mode & 0o222 == 0  # closed read-only
