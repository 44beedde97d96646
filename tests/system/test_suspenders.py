"""Suspenders against the real IOC: a condition that trips in the middle of a raster
pauses it at a row boundary instead of recording bad frames; when it clears, the scan
goes on, and the file is the one an uninterrupted scan writes (every frame in its place,
equal to the twin's render). The suspension and the resume are in the run's
``interruptions`` stream and the notification log."""

from __future__ import annotations

import threading
import time

import h5py
import numpy as np
import pytest
from ioc_client import CA, twin_of
from sessions import inventory, set_frame
from test_disk_full import fill

pytestmark = pytest.mark.system

FRAME = 32
SHAPE = (40, 32)  # 1,280 frames at 5 ms: ~6.4 s of scan, time for the trip to land mid-scan
DWELL = 5e-3


def _session(ioc, data, tmp_path, suspenders, **extra):
    from bluestem.session import build_session

    log = tmp_path / "notify.log"
    s = build_session(inventory(ioc, data, tmp_path / "journal", suspenders=suspenders,
                                notify={"log": str(log)}, **extra))  # fmt: skip
    s.docs = []
    s.RE.subscribe(lambda name, doc: s.docs.append((name, doc)))
    s.live.sinks.append(lambda name, doc: s.docs.append(("derived_" + name, doc)))
    return s, log


def _when_rows(s, rows: int, then, done: threading.Event) -> threading.Thread:
    """Call ``then()`` from another thread once ``rows`` rows of this run are written."""

    def wait():
        deadline = time.monotonic() + 30
        while s.det.hdf.capture_rbv.get(use_monitor=False) != 1 and not done.is_set():
            assert time.monotonic() < deadline
            time.sleep(0.005)
        while not done.is_set() and time.monotonic() < deadline:
            if s.det.hdf.num_captured.get(use_monitor=False) >= rows * SHAPE[1]:
                then()
                return
            time.sleep(0.005)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _run_and_check(s, log, trip, clear, name: str) -> dict:
    """A raster during which ``trip()`` fires after 4 rows and ``clear()`` once the scan
    is held; returns what the checks found."""
    from bluestem.frames import verify_file
    from bluestem.plans import raster

    done = threading.Event()
    seen = {}

    def trip_then_clear():
        try:
            trip()
            _wait(lambda: s.scan.state.get(use_monitor=False) == "Paused", 20, "never held")
            seen["held"] = s.det.hdf.num_captured.get(use_monitor=False)
            time.sleep(1.0)  # suspended: not one frame more
            seen["after"] = s.det.hdf.num_captured.get(use_monitor=False)
        except BaseException as exc:  # reported by the test, after the run
            seen["error"] = exc
        finally:
            clear()  # always: a suspended RunEngine would wait for ever

    thread = _when_rows(s, 4, trip_then_clear, done)
    try:
        s.RE(raster(s.det, s.scan, shape=SHAPE, dwell=DWELL, fov=2.0, microscope=s.mic))
    finally:
        done.set()
        thread.join(30)
    assert "error" not in seen, seen
    docs = s.docs
    stop = next(d for n, d in docs if n == "stop")
    assert stop["exit_status"] == "success", stop
    assert 0 < seen["held"] < SHAPE[0] * SHAPE[1] and seen["held"] == seen["after"]
    path = next(d for n, d in docs if n == "stream_resource")["uri"][len("file://localhost") :]
    report = verify_file(path)
    assert report.ok, report.summary()
    with h5py.File(path, "r") as f:
        received = f["received"][()].astype(bool)
        frames = f["frames"][()] if "frames" in f else None
    assert received.all()  # the received map complete: no frame lost to the suspension
    n = SHAPE[0] * SHAPE[1]
    if frames is None:
        from bluestem.frames import FrameReader

        with FrameReader(path) as reader:
            frames = reader.read(0, n)
    twin = twin_of(path)
    # the same file as an uninterrupted scan: each frame the twin's, in its place
    np.testing.assert_array_equal(np.asarray(frames).reshape(n, FRAME, FRAME), twin.render(0, n))
    # on record: the suspension with its reason, then the resume
    interruptions = [d for n_, d in docs if n_ == "descriptor" and d["name"] == "interruptions"]
    (desc,) = interruptions
    texts = [d["data"]["interruption"] for n_, d in docs
             if n_ == "event" and d["descriptor"] == desc["uid"]]  # fmt: skip
    assert texts[0].startswith(f"{name}: ") and texts[-1] == f"resume: {name} clear", texts
    # every position announced once, and the derived run reduced every frame
    rows = sorted({i for n_, d in docs if n_ == "stream_datum"
                   for i in range(d["indices"]["start"], d["indices"]["stop"])})  # fmt: skip
    assert rows == list(range(SHAPE[0]))
    derived = next(d for n_, d in docs if n_ == "derived_start")
    assert derived["frames"]["reduced"] == n
    text = log.read_text()
    assert "WARNING suspended:" in text and name in text and "INFO resumed:" in text
    return {"texts": texts, "seen": seen, "path": path}


def test_a_blanked_beam_suspends_the_scan_and_the_resumed_file_is_the_uninterrupted_one(
    sim, server, tmp_path
):
    ioc, ca, data = sim
    set_frame(ca, FRAME)
    s, log = _session(ioc, data, tmp_path, {"beam_blank": True, "sleep": 0.3}, server=server)
    try:
        out = _run_and_check(s, log, lambda: ca.put("MIC:BeamBlank", "On"),
                             lambda: ca.put("MIC:BeamBlank", "Off"), "beam_blank")  # fmt: skip
    finally:
        s.close()
        ca.put("MIC:BeamBlank", "Off")
    assert "BeamBlank_RBV is On" in out["texts"][0]
    # the IOC scanned the rows it had scanned blanked once more
    assert "taken again" in ca.get_str("SCAN:StatusMessage_RBV")


def test_a_disk_below_its_threshold_suspends_the_scan_until_space_is_freed(
    sim_factory, tmpfs, tmp_path
):
    disk = tmpfs(96)
    ioc, ca, data = sim_factory("--seed", "5", data_dir=disk)
    set_frame(ca, FRAME)
    s, log = _session(ioc, data, tmp_path, {"disk": {"below_mb": 40}, "sleep": 0.3})
    filler = disk / "filler"
    try:
        out = _run_and_check(s, log, lambda: fill(filler, leave=30 * 10**6),
                             filler.unlink, "disk")  # fmt: skip
    finally:
        s.close()
        filler.unlink(missing_ok=True)
    assert "FreeSpace_RBV" in out["texts"][0] and "below 40 MB" in out["texts"][0]
    # FreeSpace_RBV follows the disk: the IOC saw the filler go
    CA(ioc.prefix).wait("DET:HDF1:FreeSpace_RBV", lambda v: v > 48, timeout=5)
