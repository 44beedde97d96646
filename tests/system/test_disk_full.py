"""The data disk fills up in the middle of a scan (another process wrote to it), tested on
a small tmpfs: capture stops cleanly, WriteStatus/WriteMessage and STATUS name it, the file
is valid up to its last whole chunk, the IOC keeps serving, and once space is freed the
next capture works without restarting the IOC."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from ioc_client import twin_of
from sessions import inventory, set_frame

pytestmark = pytest.mark.system

SIZE_MB = 96  # the IOC keeps 64 MB free on top of a file: room for this scan, then full
FRAME = 32
SHAPE = (48, 48)  # 4.7 MB of frames


def _file_of(docs) -> str:
    """The file of the last StreamResource in ``docs``."""
    resource = [d for n, d in docs if n == "stream_resource"][-1]
    return resource["uri"].removeprefix("file://localhost")


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of SIZE_MB MB at tmp_path/disk (needs root, as a facility's CI has)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs",
                           str(mount)], capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path, leave: int = 0) -> None:
    """Write ``path`` until the disk has at most ``leave`` bytes free."""
    block = b"\xff" * 65536
    with open(path, "wb") as f:
        try:
            while True:
                f.write(block)
                f.flush()
                if leave and os.statvfs(path).f_bavail * os.statvfs(path).f_frsize <= leave:
                    break
        except OSError:
            pass


def test_a_disk_that_fills_mid_scan_fails_the_run_cleanly_and_recovers(
    sim_factory, small_disk, tmp_path
):
    from bluesky.utils import FailedStatus
    from caproto import AlarmSeverity

    from bluestem.frames import FRAMES_PATH, RECEIVED_PATH, verify_file
    from bluestem.plans import raster
    from bluestem.session import build_session

    ioc, ca, data = sim_factory("--seed", "21", data_dir=small_disk)
    set_frame(ca, FRAME)
    s = build_session(inventory(ioc, data, tmp_path / "journal"))
    docs = []
    s.RE.subscribe(lambda name, doc: docs.append((name, doc)))
    s.live.sinks.append(lambda name, doc: docs.append(("derived_" + name, doc)))
    filler = small_disk / "filler"

    def fill_when_capturing():
        deadline = time.monotonic() + 30
        while ca.get("DET:HDF1:NumCaptured_RBV") < 300:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        fill(filler)  # another process takes the rest of the disk
        filled.append(time.monotonic())

    filled = []
    thread = threading.Thread(target=fill_when_capturing, daemon=True)
    thread.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(FailedStatus) as info:
            s.RE(raster(s.det, s.scan, shape=SHAPE, dwell=1e-3, fov=2.0, microscope=s.mic))
        failed = time.monotonic()
        thread.join(10)
        print(f"disk full: the plan failed {failed - filled[0]:.2f} s after the disk "
              f"filled ({failed - t0:.2f} s after it started)")  # fmt: skip
        assert failed - filled[0] < 5

        # What the operator sees: the plan's error, the writer's PVs and the traffic light.
        why = str(info.value.__cause__)
        assert "No space left on device (ENOSPC)" in why, why
        (stop,) = [d for n, d in docs if n == "stop"]
        assert stop["exit_status"] == "fail"
        assert "No space left on device (ENOSPC)" in stop["reason"]
        assert ca.get("DET:HDF1:WriteStatus") == "Write error"
        message = ca.get_str("DET:HDF1:WriteMessage")
        assert "No space left on device (ENOSPC)" in message and "\n" not in message
        path = _file_of(docs)
        assert path in message
        assert ca.get("STATUS") == "FAULT"
        assert "No space left on device (ENOSPC)" in ca.get_str("STATUS:Message")
        assert ca.alarm("STATUS")[1] == AlarmSeverity.MAJOR_ALARM
        assert ca.get("DET:HDF1:Capture_RBV") == 0
        assert ioc.alive()

        # On disk: a closed file that verifies, its frames the twin's, up to a whole chunk.
        report = verify_file(path)
        assert report.ok and report.closed, report.summary()
        with h5py.File(path, "r") as f:
            received = f[RECEIVED_PATH][()].reshape(-1).astype(bool)
            frames = f[FRAMES_PATH][()].reshape(-1, FRAME, FRAME)
        held = np.flatnonzero(received)
        assert 0 < len(held) < received.size and report.frames_received == len(held)
        assert held.tolist() == list(range(len(held)))  # a prefix, nothing out of place
        expected = twin_of(path).render(0, len(held))
        np.testing.assert_array_equal(frames[held], expected)
        print(f"disk full: {len(held)} of {received.size} frames in the file")
        # The live reduction saw the unwritten frames as missing (at once, not after its
        # 10 s timeout for late chunks) and recorded its derived run with the failure.
        (derived_start,) = [d for n, d in docs if n == "derived_start"]
        (derived_stop,) = [d for n, d in docs if n == "derived_stop"]
        assert derived_stop["exit_status"] == "fail"
        assert derived_start["frames"]["reduced"] == len(held)

        # Recovery without a restart: free the space, acknowledge, scan again.
        filler.unlink()
        ca.put("STATUS:Acknowledge", 1)
        assert ca.get("STATUS") == "OK"
        assert ca.alarm("STATUS")[1] == AlarmSeverity.NO_ALARM
        t0 = time.monotonic()
        s.RE(raster(s.det, s.scan, shape=(8, 8), dwell=1e-3, fov=2.0, microscope=s.mic))
        print(f"after freeing space: a raster in {time.monotonic() - t0:.2f} s")
        stops = [d for n, d in docs if n == "stop"]
        assert stops[-1]["exit_status"] == "success"
        assert verify_file(_file_of(docs)).ok
        assert ca.get("STATUS") == "OK"
        assert ca.get("DET:HDF1:WriteStatus") == "Write OK"
    finally:
        s.close()
