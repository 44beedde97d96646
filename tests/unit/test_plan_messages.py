"""The plans' messages and documents on fake devices (``fake_devices``: ophyd.sim fakes
behind a small in-process IOC that writes real raw files), run by a real RunEngine whose
``msg_hook`` records every message next to the documents."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
from fake_ioc import fake_instrument

from bluestem.devices import PutRefused

NY, NX = 4, 6
LONG = 16  # rows of a raster that is paused
MONITOR = "det_hdf_dropped_frames_monitor"
KEY = "det_hdf_dropped_frames"


class Trace:
    """Messages and documents in the order the RunEngine handled them."""

    def __init__(self, RE):
        self.items: list[tuple] = []
        self._lock = threading.Lock()
        RE.msg_hook = self._msg
        RE.subscribe(self._doc)

    def _msg(self, msg):
        with self._lock:
            self.items.append(("msg", msg.command, getattr(msg.obj, "name", None), msg))

    def _doc(self, name, doc):
        with self._lock:
            self.items.append(("doc", name, doc))

    def commands(self) -> list[str]:
        return [item[1] for item in self.items if item[0] == "msg"]

    def docs(self, name: str) -> list[dict]:
        return [item[2] for item in self.items if item[0] == "doc" and item[1] == name]

    def where(self, predicate) -> list[int]:
        return [i for i, item in enumerate(self.items) if predicate(item)]

    def msg_at(self, command: str, obj: str | None = None) -> list[int]:
        return self.where(lambda it: it[0] == "msg" and it[1] == command
                          and (obj is None or it[2] == obj))  # fmt: skip

    def monitor_events(self) -> list[tuple[int, int]]:
        (desc,) = [d for d in self.docs("descriptor") if d["name"] == MONITOR]
        return [(i, it[2]["data"][KEY]) for i, it in enumerate(self.items)
                if it[0] == "doc" and it[1] == "event"
                and it[2]["descriptor"] == desc["uid"]]  # fmt: skip


@pytest.fixture
def engine():
    from bluesky import RunEngine

    RE = RunEngine({}, call_returns_result=True)
    yield RE, Trace(RE)


def _raster(det, scan, mic, shape=(NY, NX), **kw):
    from bluestem.plans import raster

    return raster(det, scan, shape=shape, dwell=1e-3, microscope=mic, reductions=False, **kw)


def test_raster_message_order_and_start_document(tmp_path, engine):
    RE, trace = engine
    _, det, scan, mic = fake_instrument(tmp_path, drop=[3, 8])
    result = RE(_raster(det, scan, mic, fov=12.0, md={"sample": "SrTiO3"}))
    cmds = trace.commands()

    expected = ["stage", "set", "prepare", "open_run", "rewindable", "declare_stream",
                "kickoff", "collect", "monitor", "complete", "unmonitor", "close_run",
                "unstage"]  # fmt: skip
    first = {c: cmds.index(c) for c in expected}
    assert sorted(first, key=first.get) == expected
    # Both devices staged before anything is configured; the scan configured shape first
    # and its mode last, before the detector is prepared; the run opened after that.
    assert trace.msg_at("stage") == [trace.msg_at("stage", "scan")[0],
                                     trace.msg_at("stage", "det")[0]]  # fmt: skip
    sets = [it[2] for it in trace.items if it[0] == "msg" and it[1] == "set"]
    assert sets[:3] == ["scan_shape_y", "scan_shape_x", "scan_fov_y"]
    assert sets.index("scan_mode") < sets.index("scan_start")
    assert trace.msg_at("prepare", "det")[0] < trace.msg_at("open_run")[0]
    # The dropped-frame counter is monitored from before the scan starts to after the last
    # collect, then the run closes; the finalizer stops scan and detector.
    (start_scan,) = trace.msg_at("set", "scan_start")
    (monitor,) = trace.msg_at("monitor", KEY)
    (unmonitor,) = trace.msg_at("unmonitor", KEY)
    (close,) = trace.msg_at("close_run")
    assert monitor < start_scan < trace.msg_at("complete", "det")[0]
    assert trace.msg_at("collect", "det")[-1] < unmonitor < close
    after = [it[1] for it in trace.items[close:] if it[0] == "msg"]
    assert set(after) >= {"unstage", "stop"} and after[-1] == "rewindable"

    (start,) = trace.docs("start")
    assert start["plan_name"] == "raster" and start["sample"] == "SrTiO3"
    assert start["detectors"] == ["det"] and start["motors"] == ["scan"]
    assert {"scan", "detector", "microscope", "calibration", "raw_file_stem"} <= set(start)
    assert start["raw_file_stem"].startswith("det-") and "file_stem" not in start["plan_args"]
    assert start["scan"]["shape"] == [NY, NX] and start["scan"]["fov"] == [12.0, 12.0]
    assert start["calibration"]["angle_per_pixel_mrad"] == pytest.approx(55e-6 / 0.1 * 1e3)
    assert result.run_start_uids == (start["uid"],)
    (stop,) = trace.docs("stop")
    assert stop["exit_status"] == "success"
    assert stop["num_events"]["primary"] == NY


def test_dropped_frames_are_a_monitor_stream_ending_with_the_final_count(tmp_path, engine):
    RE, trace = engine
    _, det, scan, mic = fake_instrument(tmp_path, drop=[3, 8, 20])
    RE(_raster(det, scan, mic))
    events = trace.monitor_events()
    values = [v for _, v in events]
    assert values[0] == 0 and values[-1] == 3 and values == sorted(values)
    # Events while the scan runs (before the last rows are announced), the last one
    # before the unmonitor.
    datums = trace.where(lambda it: it[0] == "doc" and it[1] == "stream_datum")
    assert any(i < datums[-1] and v > 0 for i, v in events)
    assert events[-1][0] < trace.msg_at("unmonitor", KEY)[0]
    (stop,) = trace.docs("stop")
    assert stop["num_events"][MONITOR] == len(events)
    (desc,) = [d for d in trace.docs("descriptor") if d["name"] == MONITOR]
    assert list(desc["data_keys"]) == [KEY]


def test_a_late_final_count_is_waited_for(tmp_path, engine):
    """The IOC's last DroppedFrames_RBV update reaches the client after Capture_RBV went
    to 0 (the plan's complete() is done by then): the plan waits for it."""
    RE, trace = engine
    _, det, scan, mic = fake_instrument(tmp_path, drop=[1, 2], late_final_dropped=0.3)
    RE(_raster(det, scan, mic))
    events = trace.monitor_events()
    assert [v for _, v in events] == [0, 2]
    assert events[-1][0] < trace.msg_at("unmonitor", KEY)[0]


def test_pause_and_resume_keep_one_monitor(tmp_path, engine):
    from bluesky.utils import RunEngineInterrupted

    RE, trace = engine
    # Long enough that the pause lands while the scan runs, however loaded the machine.
    ioc, det, scan, mic = fake_instrument(tmp_path, drop=[1, 14], row_time=0.05)
    ioc.on_row = lambda row: row == 1 and RE.request_pause()
    with pytest.raises(RunEngineInterrupted):
        RE(_raster(det, scan, mic, shape=(LONG, NX)))
    assert RE.state == "paused"
    RE.resume()
    # Nothing replayed: one monitor, one unmonitor; the restored monitor reports at once.
    assert len(trace.msg_at("monitor", KEY)) == 1 and len(trace.msg_at("unmonitor", KEY)) == 1
    assert len(trace.msg_at("kickoff")) == 1
    values = [v for _, v in trace.monitor_events()]
    assert values[-1] == 2
    (stop,) = trace.docs("stop")
    assert stop["exit_status"] == "success" and stop["num_events"]["primary"] == LONG


def test_abort_while_paused_unmonitors_after_the_final_count(tmp_path, engine):
    from bluesky.utils import RunEngineInterrupted

    RE, trace = engine
    ioc, det, scan, mic = fake_instrument(tmp_path, drop=[2], row_time=0.05)
    ioc.on_row = lambda row: row == 1 and RE.request_pause()
    with pytest.raises(RunEngineInterrupted):
        RE(_raster(det, scan, mic, shape=(LONG, NX)))
    RE.abort("test")
    ioc.wait_idle()
    (stop,) = trace.docs("stop")
    assert stop["exit_status"] == "abort"
    (unmonitor,) = trace.msg_at("unmonitor", KEY)
    events = trace.monitor_events()
    final = int(det.hdf.dropped_frames.get())
    assert events[-1][1] == final >= 1 and events[-1][0] < unmonitor
    stop_at = trace.where(lambda it: it[0] == "doc" and it[1] == "stop")[0]
    assert unmonitor < stop_at
    # The rows the file holds are announced, no more.
    covered = [i for d in trace.docs("stream_datum")
               for i in range(d["indices"]["start"], d["indices"]["stop"])]  # fmt: skip
    assert covered == list(range(len(covered))) and 0 < len(covered) < LONG


def test_a_refused_setting_is_a_failed_run_without_a_file_name(tmp_path, engine):
    RE, trace = engine
    ioc, det, scan, mic = fake_instrument(tmp_path)
    RE(_raster(det, scan, mic))  # an earlier run prepared the detector
    ioc.refuse["FAKE:SCAN:Dwell"] = "dwell 0.001 s: allowed ..."
    trace.items.clear()
    with pytest.raises(Exception) as info:
        RE(_raster(det, scan, mic))
    assert isinstance(info.value.__cause__ or info.value, PutRefused)
    (start,) = trace.docs("start")
    assert "FAKE:SCAN:Dwell" in start["configuration_error"]
    assert "raw_file_stem" not in start  # the detector was not prepared for this run
    assert trace.commands().count("prepare") == 0
    (stop,) = trace.docs("stop")
    assert stop["exit_status"] == "fail" and "FAKE:SCAN:Dwell" in stop["reason"]


def test_step_plans_name_their_files_through_the_detector(tmp_path, engine):
    from bluestem.plans import dark_reference, series, step_raster

    RE, trace = engine
    _, det, scan, mic = fake_instrument(tmp_path)
    RE(step_raster(det, scan, shape=(2, 2), dwell=1e-3, step=1.0, reductions=False,
                   file_stem="mine"))  # fmt: skip
    (start,) = trace.docs("start")
    assert start["raw_file_stem"] == "mine" and start["plan_args"]["file_stem"] == "mine"
    uris = [d["uri"] for d in trace.docs("stream_resource")]
    assert [u.rsplit("/", 1)[1] for u in uris] == [f"mine-{k:06d}_000000.h5" for k in range(4)]
    assert not [d for d in trace.docs("descriptor") if d["name"] == MONITOR]

    trace.items.clear()
    RE(series(det, scan, mic, setting="defocus", values=[1.0, 2.0], dwell=1e-3))
    (start,) = trace.docs("start")
    assert start["raw_file_stem"].startswith("det-") and start["series"]["values"] == [1.0, 2.0]

    trace.items.clear()
    RE(dark_reference(det, mic, num_frames=2, acquire_time=1e-3))
    (start,) = trace.docs("start")
    assert start["raw_file_stem"].startswith("det-dark-")
    assert all("-dark-" in d["uri"] for d in trace.docs("stream_resource"))
    blank = [it[3].args[0] for it in trace.items if it[0] == "msg" and it[1] == "set"
             and it[2] == "mic_beam_blank"]  # fmt: skip
    assert blank == ["On", "Off"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": (4, 0), "dwell": 1e-3}, r"shape=\(4, 0\)"),
        ({"shape": (4, 4), "dwell": 2.0}, "dwell"),
        ({"shape": (4, 4), "dwell": 1e-3, "fov": 1.0, "step": 1.0}, "one of them"),
        ({"shape": (4, 4), "dwell": 1e-3, "file_stem": 3}, "file_stem=3"),
    ],
)
def test_a_bad_argument_is_refused_before_the_first_message(kwargs, match):
    from bluestem.plans import raster, step_raster

    for plan in (raster, step_raster):
        with pytest.raises(ValueError, match=match):
            next(plan(None, None, **kwargs))


def test_importing_the_plans_loads_no_numba():
    code = "import bluestem.plans, sys; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
