"""The detector IOC is killed (SIGKILL: power loss, OOM kill) or hangs (SIGSTOP: a stuck
host) mid-scan: the plan fails within 5 s, the run is recorded as failed with the reason
naming the device that was lost first (not the baseline read that fails after it), the
derived run inherits the failure, and the file holds every frame written before the
signal, which ``bluestem verify`` lists."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from ioc_client import twin_of
from sessions import inventory, set_frame

pytestmark = pytest.mark.system

FRAME = 32
SHAPE = (40, 32)
BOUND = 5.0  # s from the signal to the plan's failure


def _when_rows(s, docs, n: int, then) -> threading.Thread:
    """Call ``then()`` from a thread once the file is open and ``n`` stream datums are out."""

    def wait():
        deadline = time.monotonic() + 30
        while s.det.hdf.capture_rbv.get(use_monitor=False) != 1:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        while sum(name == "stream_datum" for name, _ in docs) < n:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        then()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


def _webhook():
    """A real HTTP server on loopback that keeps the JSON bodies POSTed to it:
    ``(url, bodies, stop)``."""
    import json
    from http.server import BaseHTTPRequestHandler, HTTPServer

    bodies = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}/bluestem", bodies, server.shutdown


def _stall_session(sim_factory, tmp_path, seed: str):
    """A new IOC and a session on it whose detector has a 3 s stall timeout:
    ``(ioc, ca, session, docs)``, every raw document recorded in ``docs``."""
    from bluestem.session import build_session

    ioc, ca, data = sim_factory("--seed", seed)
    set_frame(ca, FRAME)
    inv = inventory(ioc, data, tmp_path / "journal")
    det = next(d for d in inv["devices"] if d["name"] == "det")
    det["stall_timeout"] = 3.0
    s = build_session(inv)
    docs = []
    s.RE.subscribe(lambda name, doc: docs.append((name, doc)))
    return ioc, ca, s, docs


def _file_of(docs) -> str:
    (resource,) = [d for n, d in docs if n == "stream_resource"]
    return resource["uri"].removeprefix("file://localhost")


def _check_file_holds_what_it_says(path: str, docs) -> dict:
    """Repair (the writer never closed it), then: verify's list of frames is exactly the
    received map, every listed frame is the twin's, every announced row is listed."""
    import h5py

    from bluestem.frames import FRAMES_PATH, RECEIVED_PATH, verify_file

    report = verify_file(path)
    assert not report.closed
    # What the operator runs after the crash: it says what it did, and the file verifies.
    bluestem = Path(sys.executable).with_name("bluestem")
    done = subprocess.run([str(bluestem), "recover", path], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{path}: repaired" in done.stdout and "status flags" in done.stdout
    assert f"{path}: OK" in done.stdout
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    after = verify_file(path)
    assert after.ok, after.summary()
    with h5py.File(path, "r") as f:
        received = f[RECEIVED_PATH][()].reshape(-1).astype(bool)
        held = np.flatnonzero(received)
        frames = f[FRAMES_PATH][()].reshape(-1, FRAME, FRAME)
    listed = [i for a, b in after.received_ranges for i in range(a, b + 1)]
    assert listed == held.tolist() == [i for a, b in report.received_ranges
                                       for i in range(a, b + 1)]  # fmt: skip
    assert after.frames_received == len(held) > 0
    expected = twin_of(path).render(0, len(received))
    np.testing.assert_array_equal(frames[held], expected[held])
    # A frame written after the map's last flush is not listed (verify vouches only for
    # what the map records), but it is never another frame or garbage: zeros or its own.
    for i in np.flatnonzero(~received):
        assert not frames[i].any() or np.array_equal(frames[i], expected[i]), i
    rows = {i for n, d in docs if n == "stream_datum"
            for i in range(d["indices"]["start"], d["indices"]["stop"])}  # fmt: skip
    announced = np.arange(len(rows) * SHAPE[1])
    assert received[announced].all()  # every announced frame is in the file
    return {"held": len(held), "announced": len(announced)}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "hung"])
def test_lost_ioc_fails_the_run_within_5_s_and_the_file_says_what_it_holds(
    sim_factory, tmp_path, sig
):
    from bluesky.utils import FailedStatus

    from bluestem.devices import AcquisitionError
    from bluestem.plans import raster
    from bluestem.session import build_session

    ioc, ca, data = sim_factory("--seed", "11")
    set_frame(ca, FRAME)
    hook_url, posted, stop_hook = _webhook()
    notify = {"log": str(tmp_path / "notify.log"), "webhook": {"url": hook_url}}
    s = build_session(inventory(ioc, data, tmp_path / "journal", notify=notify))
    docs = []
    s.RE.subscribe(lambda name, doc: docs.append((name, doc)))
    s.live.sinks.append(lambda name, doc: docs.append(("derived_" + name, doc)))
    signalled = []

    def send():
        signalled.append(time.monotonic())
        os.kill(ioc.pid, sig)

    thread = _when_rows(s, docs, 2, send)  # some rows announced, more frames in the file
    try:
        # Noticed by complete() (a failed status) or by a collect (the error itself).
        with pytest.raises((FailedStatus, AcquisitionError)):
            s.RE(raster(s.det, s.scan, shape=SHAPE, dwell=2e-3, fov=2.0, microscope=s.mic))
        stops = [d.get("reason") for n, d in docs if n == "stop"]
        assert signalled, f"the run ended before the signal: {stops}"
        took = time.monotonic() - signalled[0]
        print(f"{sig.name}: the plan failed {took:.2f} s after the signal")
        assert took < BOUND
    finally:
        thread.join(5)
        s.close()
        stop_hook()
        if sig == signal.SIGSTOP:
            ioc.process.kill()
    ioc.process.wait(10)
    # The operator was told: the notification log and the webhook name the lost detector.
    told = (tmp_path / "notify.log").read_text()
    assert "ERROR run_failed: raster" in told and "lost the detector IOC" in told
    (body,) = [b for b in posted if b["kind"] == "run_failed"]
    assert body["severity"] == "error" and "lost the detector IOC" in body["message"]

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
    counts = _check_file_holds_what_it_says(_file_of(docs), docs)
    (derived_start,) = [d for n, d in docs if n == "derived_start"]
    assert derived_start["frames"]["reduced"] <= counts["announced"]
    assert derived_start["frames"]["announced"] == counts["announced"]
    print(f"{sig.name}: {counts['held']} frames in the file, {counts['announced']} announced")


def test_an_acquisition_that_stops_delivering_trips_the_watchdog(sim_factory, tmp_path):
    """The IOC answers, but no frame comes: another client holds the scan (SCAN:Pause)
    behind the RunEngine's back. The plan fails after ``stall_timeout``, not never."""
    from bluesky.utils import FailedStatus

    from bluestem.plans import raster

    ioc, ca, s, docs = _stall_session(sim_factory, tmp_path, "12")
    held = []

    def hold():
        ca.put("SCAN:Pause", 1)
        held.append(time.monotonic())

    thread = _when_rows(s, docs, 2, hold)
    try:
        with pytest.raises(FailedStatus) as info:
            s.RE(raster(s.det, s.scan, shape=SHAPE, dwell=2e-3, fov=2.0, microscope=s.mic))
        took = time.monotonic() - held[0]
        print(f"stalled scan: the plan failed {took:.2f} s after the hold")
        assert 3.0 < took < 3.0 + BOUND
    finally:
        thread.join(5)
        s.close()
    assert "no frame for 3 s" in str(info.value.__cause__)
    (stop,) = [d for n, d in docs if n == "stop"]
    assert stop["exit_status"] == "fail"
    assert "no frame for 3 s" in stop["reason"] and "stall_timeout" in stop["reason"]
    assert ioc.alive()
    ca.wait_idle(30)  # the plan's clean-up stopped the scan and closed the file
    assert ca.get("SCAN:Pause") == 0


def test_a_pause_longer_than_the_stall_timeout_is_not_a_stall(sim_factory, tmp_path):
    from bluesky.utils import RunEngineInterrupted

    from bluestem.plans import raster

    _ioc, _ca, s, docs = _stall_session(sim_factory, tmp_path, "13")
    thread = _when_rows(s, docs, 2, s.RE.request_pause)
    try:
        with pytest.raises(RunEngineInterrupted):
            s.RE(raster(s.det, s.scan, shape=SHAPE, dwell=2e-3, fov=2.0, microscope=s.mic))
        assert s.RE.state == "paused"
        time.sleep(4.5)  # paused for longer than stall_timeout
        s.RE.resume()
    finally:
        thread.join(5)
        s.close()
    (stop,) = [d for n, d in docs if n == "stop"]
    assert stop["exit_status"] == "success", stop.get("reason")


def test_a_plan_against_a_dead_ioc_is_on_record(sim_factory, tmp_path):
    """The IOC died between two plans: the attempt fails quickly, and the journal's
    attempts file says which plan was tried, when, and why it failed, although no run
    document may exist."""
    import json

    from bluestem.plans import raster
    from bluestem.session import build_session

    ioc, ca, data = sim_factory("--seed", "14")
    set_frame(ca, FRAME)
    s = build_session(inventory(ioc, data, tmp_path / "journal"))
    try:
        s.RE(raster(s.det, s.scan, shape=(2, 2), dwell=1e-3, fov=1.0))
        os.kill(ioc.pid, signal.SIGKILL)
        ioc.process.wait(10)
        t0 = time.monotonic()
        with pytest.raises(Exception) as info:
            s.RE(raster(s.det, s.scan, shape=(4, 4), dwell=1e-3, fov=1.0))
        took = time.monotonic() - t0
        print(f"dead IOC: the plan failed after {took:.2f} s: {info.value!r}")
        assert took < 30
    finally:
        s.close()
    lines = (tmp_path / "journal" / "attempts.log").read_text().splitlines()
    good, dead = (json.loads(line) for line in lines)
    assert good["plan"] == "raster" and good["outcome"] == "finished" and good["runs"]
    assert dead["plan"] == "raster" and dead["outcome"] == "failed"
    assert dead["error"] and dead["time"] > good["time"]
    assert ioc.prefix in dead["error"] or "connect" in dead["error"].lower(), dead
    # The scan's configuration is read back before the run opens: no run documents.
    assert dead["runs"] == [] and "before any run opened" in dead["note"]
