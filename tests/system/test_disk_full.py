"""The data disk fills up in the middle of a scan (another process wrote to it), tested on
a small tmpfs: capture stops cleanly, WriteStatus/WriteMessage and STATUS name it, the file
is valid up to its last whole chunk, the IOC keeps serving, and once space is freed the
next capture works without restarting the IOC."""

from __future__ import annotations

import os
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
def small_disk(tmpfs):
    return tmpfs(SIZE_MB)


def fill(path: Path, leave: int = 0) -> None:
    """Write ``path`` until the disk has at most ``leave`` bytes free.

    Only ever on a small disk (one of the tests' tmpfs): it refuses a file system bigger
    than 256 MB, and never writes more than the file system's size, so that a filler that
    outlives its test (its tmpfs unmounted under it) cannot fill the machine's disk.
    """
    st = os.statvfs(path.parent)
    size = st.f_blocks * st.f_frsize
    if size > 256 * 1024**2:
        raise RuntimeError(f"{path.parent} is {size / 1e9:.1f} GB: fill() is for a small tmpfs")
    block = b"\xff" * 65536
    with open(path, "wb") as f:
        try:
            for _ in range(size // len(block) + 1):
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

    done = threading.Event()  # the test is over: the filler must not start after it

    def fill_when_capturing():
        deadline = time.monotonic() + 30
        while ca.get("DET:HDF1:NumCaptured_RBV") < 300:
            if done.is_set() or time.monotonic() > deadline:
                return
            time.sleep(0.01)
        fill(filler)  # another process takes the rest of the disk
        filled.append(time.monotonic())

    filled = []
    thread = threading.Thread(target=fill_when_capturing, daemon=True)
    thread.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(FailedStatus) as info:
            s.RE(raster(s.det, s.scan, shape=SHAPE, dwell=2e-3, fov=2.0, microscope=s.mic))
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
        rows = {i for n, d in docs if n == "stream_datum"
                for i in range(d["indices"]["start"], d["indices"]["stop"])}  # fmt: skip
        announced = np.zeros(received.size, dtype=bool)
        announced[: len(rows) * SHAPE[1]] = True
        assert derived_start["frames"]["reduced"] == int((received & announced).sum())

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
        done.set()
        thread.join(30)  # before the fixture unmounts the tmpfs
        s.close()


def _doc(i: int, descriptor: str, size: int) -> dict:
    return {"uid": f"e{i}", "descriptor": descriptor, "seq_num": i, "time": i,
            "data": {"x": "y" * size}, "timestamps": {"x": i}, "filled": {}}  # fmt: skip


def test_the_journal_on_a_full_disk_keeps_whole_lines_and_uses_its_reserve(tmpfs, caplog):
    """The journal's disk fills (the same disk as the frames): the reserve lets the run
    finish with its stop document; once that is gone too, the failing document is
    refused loudly and the file keeps every document before it, no torn line; and
    ``bluestem sync``'s reader reads it all."""
    from bluestem.journal import DocumentJournal, read_documents

    disk = tmpfs(1)
    journal = DocumentJournal(disk / "journal", reserve_bytes=128 * 1024)
    start = {"uid": "run-1", "time": 0.0, "scan_id": 1}
    journal("start", start)
    assert journal.reserve.stat().st_size == 128 * 1024
    journal("descriptor", {"uid": "d", "run_start": "run-1", "data_keys": {}, "time": 0})
    fill(disk / "filler")  # the rest of the disk is taken
    written = 2
    with caplog.at_level("ERROR", logger="bluestem.journal.writer"):
        for i in range(10):  # 10 x 4 kB fit in the reserve once it is given up
            journal("event", _doc(i, "d", 4000))
            written += 1
        journal("stop", {"uid": "s", "run_start": "run-1", "time": 1, "exit_status": "success"})
    assert "gave up the 131072-byte reserve" in caplog.text
    assert not journal.reserve.exists()
    path = journal.path_for(start)
    names = [n for n, _ in read_documents(path)]
    assert names == ["start", "descriptor"] + ["event"] * 10 + ["stop"]

    # A second run with no reserve left: the first document that does not fit is refused.
    start2 = {"uid": "run-2", "time": 0.0, "scan_id": 2}
    with pytest.raises(OSError) as info:
        journal("start", start2)
        journal("descriptor", {"uid": "d2", "run_start": "run-2", "data_keys": {}, "time": 0})
        for i in range(1000):
            journal("event", _doc(i, "d2", 4000))
    assert "was not written" in str(info.value) and "keeps the" in str(info.value)
    path2 = journal.path_for(start2)
    data = path2.read_bytes()
    assert data == b"" or data.endswith(b"\n")  # no torn last line
    kept = list(read_documents(path2))
    assert f"keeps the {len(kept)} before it" in str(info.value)
    journal.close()
