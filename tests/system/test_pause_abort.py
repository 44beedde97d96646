"""Pause, resume, abort and stop of a fly raster against the real IOC and catalogue.

A pause holds the scan generator at a row boundary with the file open; resume goes on;
abort and stop end the scan and the capture at once. Whatever happens, the raw run, the
file, the derived run and the catalogue agree on the frames, the file's ``received`` map
being the truth, and a run that does not succeed says why.
"""

from __future__ import annotations

import threading
import time

import h5py
import numpy as np
import pytest
from sessions import inventory, set_frame

pytestmark = pytest.mark.system

FRAME = 32
SHAPE = (40, 32)  # 1280 frames at 2 ms: ~2.6 s of scan, paced by the IOC
DWELL = 2e-3


@pytest.fixture(scope="module")
def session(sim, server, tmp_path_factory):
    from bluestem.session import build_session

    ioc, ca, data = sim
    set_frame(ca, FRAME)
    s = build_session(inventory(ioc, data, tmp_path_factory.mktemp("journal"), server=server))
    s.docs = []
    s.RE.subscribe(lambda name, doc: s.docs.append((name, doc)))
    s.live.sinks.append(lambda name, doc: s.docs.append(("derived_" + name, doc)))
    yield s
    s.close()


def _pause_after_rows(session, rows: int, *, defer: bool = False) -> threading.Thread:
    """Request a pause from another thread (as Ctrl-C does) once ``rows`` rows are in."""
    nx = SHAPE[1]

    def pause():
        deadline = time.monotonic() + 30
        _wait_capture(session, deadline)
        while time.monotonic() < deadline:
            if session.det.hdf.num_captured.get(use_monitor=False) >= rows * nx:
                session.RE.request_pause(defer=defer)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=pause, daemon=True)
    thread.start()
    return thread


def _wait_capture(session, deadline: float) -> None:
    # NumCaptured_RBV still shows the last run's count until this run's file opens.
    while session.det.hdf.capture_rbv.get(use_monitor=False) != 1:
        assert time.monotonic() < deadline, "the run's file never opened"
        time.sleep(0.005)


def _raster(session):
    from bluestem.plans import raster

    return raster(session.det, session.scan, shape=SHAPE, dwell=DWELL, fov=2.0,
                  microscope=session.mic)  # fmt: skip


def _wait_state(session, want, timeout=10.0) -> str:
    deadline = time.monotonic() + timeout
    while (state := session.scan.state.get(use_monitor=False)) not in want:
        assert time.monotonic() < deadline, f"scan state {state!r}, expected one of {want}"
        time.sleep(0.02)
    return state


def _records(session, server, start_at: int) -> dict:
    """Everything the run left: its documents, its derived run's, the file, the
    catalogue copies."""
    from tiled.client import from_uri

    docs = session.docs[start_at:]
    start = next(d for n, d in docs if n == "start")
    uid = start["uid"]
    rows = sorted({i for n, d in docs if n == "stream_datum"
                   for i in range(d["indices"]["start"], d["indices"]["stop"])})  # fmt: skip
    (resource,) = [d for n, d in docs if n == "stream_resource"]
    path = resource["uri"][len("file://localhost") :]
    with h5py.File(path, "r") as f:
        received = f["received"][()].astype(bool)
    assert session.writer.flush(60) and uid in session.writer.synced
    catalog = from_uri(server.uri, api_key=server.api_key)
    derived_uid = next(d["uid"] for n, d in docs if n == "derived_start")
    assert derived_uid in session.writer.synced
    return {
        "uid": uid,
        "stop": next(d for n, d in docs if n == "stop"),
        "rows": rows,
        "received": received,
        "path": path,
        "derived_start": next(d for n, d in docs if n == "derived_start"),
        "derived_stop": next(d for n, d in docs if n == "derived_stop"),
        "raw": catalog[uid],
        "derived": catalog[derived_uid],
    }


def _check_agreement(rec: dict) -> None:
    """The file's received map is the truth; everything else must say the same."""
    received = rec["received"]
    visited = int(np.flatnonzero(received.any(axis=1)).max()) + 1
    assert not received[visited:].any()
    # The raw run announces exactly the visited rows: none missing, none empty.
    assert rec["rows"] == list(range(visited))
    assert rec["stop"]["num_events"]["primary"] == visited
    # The catalogue holds the same rows, served from the file.
    frames = rec["raw"]["primary"]["det_image"]
    assert frames.shape == (visited, SHAPE[1], FRAME, FRAME)
    assert rec["raw"].metadata["stop"]["exit_status"] == rec["stop"]["exit_status"]
    # The derived run reduced exactly the received frames, and ended as its parent did.
    assert rec["derived_start"]["frames"]["reduced"] == int(received.sum())
    bf = rec["derived"]["primary"]["bf"][0]
    np.testing.assert_array_equal(np.isfinite(bf), received)
    assert rec["derived"].metadata["stop"]["exit_status"] == rec["stop"]["exit_status"]


def test_pause_holds_at_a_row_boundary_and_resume_completes(session, server, ca):
    from bluesky.utils import RunEngineInterrupted
    from caproto import AlarmSeverity

    first = len(session.docs)
    _pause_after_rows(session, 4)
    with pytest.raises(RunEngineInterrupted):
        session.RE(_raster(session))
    assert session.RE.state == "paused"
    _wait_state(session, ("Paused",))
    held = session.det.hdf.num_captured.get(use_monitor=False)
    time.sleep(0.5)  # held: not one frame more, and a whole number of rows
    assert session.det.hdf.num_captured.get(use_monitor=False) == held
    assert held % SHAPE[1] == 0 and 0 < held < SHAPE[0] * SHAPE[1]
    assert session.det.hdf.capture_rbv.get(use_monitor=False) == 1  # the file stays open
    # The traffic light is blue: operator action, with where the scan is held.
    ca.wait("STATUS", lambda v: v == "PAUSED", timeout=5)
    assert ca.alarm("STATUS")[1] == AlarmSeverity.MINOR_ALARM
    message = ca.get_str("STATUS:Message")
    assert f"scan held after {held} of {SHAPE[0] * SHAPE[1]} positions" in message

    session.RE.resume()
    rec = _records(session, server, first)
    assert ca.get("STATUS") == "OK"
    assert rec["stop"]["exit_status"] == "success"
    assert rec["received"].all()  # every frame, none lost across the pause
    _check_agreement(rec)
    # The pause and the resume are on record in the run itself (bluesky's stream).
    interruptions = [d for n, d in session.docs[first:]
                     if n == "descriptor" and d["name"] == "interruptions"]  # fmt: skip
    assert len(interruptions) == 1


def test_one_ctrl_c_deferred_pause_takes_effect_during_the_scan(session, server):
    from bluesky.utils import RunEngineInterrupted

    first = len(session.docs)
    _pause_after_rows(session, 4, defer=True)
    t0 = time.monotonic()
    with pytest.raises(RunEngineInterrupted):
        session.RE(_raster(session))
    # Paused during the scan, not at its end (a whole scan is ~2.6 s).
    assert session.det.hdf.num_captured.get(use_monitor=False) < SHAPE[0] * SHAPE[1]
    _wait_state(session, ("Paused",))
    assert time.monotonic() - t0 < 10
    session.RE.resume()
    rec = _records(session, server, first)
    assert rec["stop"]["exit_status"] == "success" and rec["received"].all()
    _check_agreement(rec)


@pytest.mark.parametrize(
    ("end", "status", "reason"),
    [("abort", "abort", "aborted by the operator"), ("stop", "success", "stopped early")],
)
def test_abort_or_stop_while_paused_ends_the_scan_and_the_records_agree(
    session, server, end, status, reason
):
    from bluesky.utils import RunEngineInterrupted

    first = len(session.docs)
    _pause_after_rows(session, 6)
    with pytest.raises(RunEngineInterrupted):
        session.RE(_raster(session))
    _wait_state(session, ("Paused",))
    t0 = time.monotonic()
    getattr(session.RE, end)()  # from the paused state, as an operator would
    # The scan and the capture end at once, not after the remaining rows.
    assert session.det.hdf.capture_rbv.get(use_monitor=False) == 0
    assert session.scan.state.get(use_monitor=False) not in ("Running", "Paused")
    assert time.monotonic() - t0 < 5
    captured = session.det.hdf.num_captured.get(use_monitor=False)
    time.sleep(0.3)
    assert session.det.hdf.num_captured.get(use_monitor=False) == captured
    rec = _records(session, server, first)
    assert rec["stop"]["exit_status"] == status
    assert reason in rec["stop"]["reason"]
    assert 0 < rec["received"].sum() < SHAPE[0] * SHAPE[1]
    _check_agreement(rec)
    if status != "success":
        assert rec["uid"] in rec["derived_stop"]["reason"]
        assert reason in rec["derived_stop"]["reason"]


def test_abort_while_running_mid_row(session, server):
    """Aborted from another thread while frames flow: may end mid-row; still agrees."""
    from bluesky.utils import RunEngineInterrupted

    first = len(session.docs)
    nx = SHAPE[1]

    def abort():
        _wait_capture(session, time.monotonic() + 30)
        while session.det.hdf.num_captured.get(use_monitor=False) < 5 * nx + nx // 2:
            time.sleep(0.005)
        session.RE.abort("operator saw a drift")

    threading.Thread(target=abort, daemon=True).start()
    with pytest.raises(RunEngineInterrupted):
        session.RE(_raster(session))
    rec = _records(session, server, first)
    assert rec["stop"]["exit_status"] == "abort"
    assert rec["stop"]["reason"] == "operator saw a drift"
    _check_agreement(rec)
