"""The detector IOC is killed mid-scan (power loss, OOM kill): the run is recorded as
failed with the reason naming the device that was lost first (not the baseline read that
fails after it), and the derived run inherits the failure."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from sessions import inventory, set_frame

pytestmark = pytest.mark.system

FRAME = 32
SHAPE = (40, 32)


def test_killed_ioc_fails_the_run_naming_the_detector(sim_factory, tmp_path):
    from bluesky.utils import FailedStatus

    from bluestem.devices import AcquisitionError
    from bluestem.plans import raster
    from bluestem.session import build_session

    ioc, ca, data = sim_factory("--seed", "11")
    set_frame(ca, FRAME)
    s = build_session(inventory(ioc, data, tmp_path / "journal"))
    docs = []
    s.RE.subscribe(lambda name, doc: docs.append((name, doc)))
    s.live.sinks.append(lambda name, doc: docs.append(("derived_" + name, doc)))

    def kill():
        deadline = time.monotonic() + 30
        while s.det.hdf.capture_rbv.get(use_monitor=False) != 1:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        # Killed once the run has announced some rows (and more frames are in the file).
        while sum(n == "stream_datum" for n, _ in docs) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        os.kill(ioc.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    try:
        t0 = time.monotonic()
        # Noticed by complete() (a failed status) or by a collect (the error itself).
        with pytest.raises((FailedStatus, AcquisitionError)):
            s.RE(raster(s.det, s.scan, shape=SHAPE, dwell=2e-3, fov=2.0, microscope=s.mic))
        assert time.monotonic() - t0 < 30
    finally:
        killer.join(5)
        s.close()
    ioc.process.wait(10)

    (stop,) = [d for n, d in docs if n == "stop"]
    assert stop["exit_status"] == "fail"
    # The first device that failed, the detector: not the microscope's baseline read.
    assert "det: lost the detector IOC" in stop["reason"]
    assert "mic_" not in stop["reason"]
    (derived_stop,) = [d for n, d in docs if n == "derived_stop"]
    assert derived_stop["exit_status"] == "fail"
    assert stop["run_start"] in derived_stop["reason"]
    assert "lost the detector IOC" in derived_stop["reason"]
    # The derived run holds only frames of rows the raw run announced.
    rows = {i for n, d in docs if n == "stream_datum"
            for i in range(d["indices"]["start"], d["indices"]["stop"])}  # fmt: skip
    (derived_start,) = [d for n, d in docs if n == "derived_start"]
    assert derived_start["frames"]["reduced"] <= len(rows) * SHAPE[1]
    assert derived_start["frames"]["announced"] == len(rows) * SHAPE[1]
