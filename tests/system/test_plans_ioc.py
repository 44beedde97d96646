"""Devices and plans against the real simulated-instrument IOC, in a real RunEngine."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from event_model import DocumentNames, schema_validators
from ioc_client import control_layer

pytestmark = pytest.mark.system

FRAME = 64


@pytest.fixture(scope="module")
def ophyd_caproto(ca_env):
    import ophyd

    ophyd.set_cl(control_layer())
    return ophyd


def _devices(prefix: str, root):
    from bluestem.devices import Microscope, PixelatedDetector, ScanGenerator

    mic = Microscope(prefix + "MIC:", name="mic")
    scan = ScanGenerator(prefix + "SCAN:", name="scan")
    det = PixelatedDetector(prefix + "DET:", name="det", root_path=root)
    for d in (mic, scan, det):
        d.wait_for_connection(timeout=30)
    return mic, scan, det


@pytest.fixture(scope="module")
def inst(sim, ophyd_caproto):
    ioc, ca, data = sim
    ca.put("DET:cam1:SizeX", FRAME)
    ca.put("DET:cam1:SizeY", FRAME)
    ca.put("DET:cam1:BinX", 1)
    return (*_devices(ioc.prefix, data), ca, data)


class Recorder:
    def __init__(self):
        self.docs: list[tuple[str, dict]] = []

    def __call__(self, name, doc):
        schema_validators[DocumentNames[name]].validate(doc)
        self.docs.append((name, doc))

    def of(self, name):
        return [d for n, d in self.docs if n == name]


@pytest.fixture
def run_engine(inst):
    from bluesky import RunEngine

    from bluestem.plans import baseline

    RE = RunEngine({}, call_returns_result=True)
    RE.preprocessors.append(baseline(inst[0]))
    rec = Recorder()
    RE.subscribe(rec)
    return RE, rec


def _path(uri: str) -> str:
    assert uri.startswith("file://localhost/")
    return uri[len("file://localhost") :]


def test_raster_documents_file_and_readback_state(inst, run_engine):
    from bluestem.plans import raster

    mic, scan, det, _ca, _ = inst
    RE, rec = run_engine
    mic.defocus.set(12.34).wait(10)  # quantised by the IOC to 0.1 nm
    RE(raster(det, scan, shape=(16, 16), dwell=1e-4, microscope=mic, md={"sample": "SrTiO3"}))

    (start,) = rec.of("start")
    assert start["plan_name"] == "raster" and start["sample"] == "SrTiO3"
    assert start["microscope"]["defocus"] == pytest.approx(12.3)  # read back, not requested
    assert start["scan"]["shape"] == [16, 16] and start["scan"]["dwell"] == pytest.approx(1e-4)
    cal = start["calibration"]
    assert cal["angle_per_pixel_mrad"] == pytest.approx(
        55e-6 / (start["microscope"]["camera_length"] * 1e-3) * 1e3
    )
    (stop,) = rec.of("stop")
    assert stop["exit_status"] == "success"
    descs = {d["name"]: d for d in rec.of("descriptor")}
    baseline = descs["baseline"]["uid"]
    # baseline before and after (the dropped-frame monitor has a stream of its own)
    assert len([d for d in rec.of("event") if d["descriptor"] == baseline]) == 2
    key = descs["primary"]["data_keys"]["det_image"]
    assert key["shape"] == [16, FRAME, FRAME] and key["external"] == "STREAM:"

    (sres,) = rec.of("stream_resource")
    assert sres["mimetype"] == "application/x-hdf5"
    datums = rec.of("stream_datum")
    covered = [i for d in datums for i in range(d["indices"]["start"], d["indices"]["stop"])]
    assert covered == list(range(16))
    assert stop["num_events"]["primary"] == 16
    with h5py.File(_path(sres["uri"]), "r") as f:
        data = f[sres["parameters"]["dataset"]]
        assert list(data.chunks) == sres["parameters"]["chunk_shape"]
        rows = np.concatenate([data[d["indices"]["start"] : d["indices"]["stop"]] for d in datums])
        assert rows.shape == (16, 16, FRAME, FRAME)
        np.testing.assert_array_equal(rows, data[()])
        assert rows.sum() > 0 and f["received"][()].all()


def test_stuck_setting_is_a_failed_run(sim_factory, ophyd_caproto):
    from bluesky import RunEngine
    from bluesky.utils import FailedStatus

    from bluestem.devices import Microscope, ReadbackMismatch
    from bluestem.plans import raster, series

    ioc, _ca, data = sim_factory("--stuck", "Defocus", "--seed", "3")
    from bluestem.devices import PixelatedDetector, ScanGenerator

    mic = Microscope(ioc.prefix + "MIC:", name="mic")
    scan = ScanGenerator(ioc.prefix + "SCAN:", name="scan")
    det = PixelatedDetector(ioc.prefix + "DET:", name="det", root_path=data)
    for d in (mic, scan, det):
        d.wait_for_connection(timeout=30)
    mic.high_tension.set(200).wait(10)  # a normal setting succeeds
    with pytest.raises(ReadbackMismatch, match=r"MIC:Defocus: requested 50\.0"):
        mic.defocus.set(50.0).wait(10)

    RE = RunEngine({})
    rec = Recorder()
    RE.subscribe(rec)
    with pytest.raises(FailedStatus) as info:
        RE(series(det, scan, mic, setting="defocus", values=[80.0], dwell=1e-3))
    assert isinstance(info.value.__cause__, ReadbackMismatch)
    (stop,) = rec.of("stop")
    assert stop["exit_status"] == "fail"
    assert "MIC:Defocus: requested 80.0, read back 0.0" in stop["reason"]

    # A stuck setting in a raster's configuration is a failed run too, recorded with the
    # state as read back.
    rec.docs.clear()
    with pytest.raises(FailedStatus):
        RE(raster(det, scan, shape=(4, 4), dwell=1e-4, microscope=mic,
                  settings=[(mic.defocus, 30.0)]))  # fmt: skip
    (start,) = rec.of("start")
    assert start["microscope"]["defocus"] == 0.0
    (stop,) = rec.of("stop")
    assert stop["exit_status"] == "fail" and "MIC:Defocus" in stop["reason"]


def _frames(rec: Recorder) -> np.ndarray:
    """Every frame the stream documents point at, read from the files."""
    resources = {d["uid"]: d for d in rec.of("stream_resource")}
    out = []
    for datum in rec.of("stream_datum"):
        res = resources[datum["stream_resource"]]
        with h5py.File(_path(res["uri"]), "r") as f:
            data = f[res["parameters"]["dataset"]]
            out.append(data[datum["indices"]["start"] : datum["indices"]["stop"]])
    return np.concatenate(out)


def test_step_raster(inst, run_engine):
    from bluestem.plans import step_raster

    mic, scan, det, _ca, _ = inst
    RE, rec = run_engine
    RE(step_raster(det, scan, shape=(4, 4), dwell=1e-3, step=0.5, microscope=mic))
    (stop,) = rec.of("stop")
    assert stop["exit_status"] == "success" and stop["num_events"]["primary"] == 16
    events = [e for e in rec.of("event") if "scan_beam_x" in e["data"]]
    xs = [e["data"]["scan_beam_x"] for e in events]
    assert xs[:4] == pytest.approx([-0.75, -0.25, 0.25, 0.75])
    frames = _frames(rec)
    assert frames.shape == (16, FRAME, FRAME) and frames.sum() > 0
    assert rec.of("start")[0]["scan"]["mode"] == "Step"


def test_focal_series_two_runs(inst, run_engine):
    from bluestem.plans import series

    mic, scan, det, _ca, _ = inst
    RE, rec = run_engine
    uids = RE(series(det, scan, mic, setting="defocus", values=[-20.0, 20.0], shape=(4, 4),
                     dwell=1e-4))  # fmt: skip
    starts = rec.of("start")
    assert [s["uid"] for s in starts] == list(uids.plan_result)
    assert [s["microscope"]["defocus"] for s in starts] == [-20.0, 20.0]
    assert starts[0]["series"]["uid"] == starts[1]["series"]["uid"]
    assert [s["exit_status"] for s in rec.of("stop")] == ["success", "success"]
    assert len(rec.of("stream_resource")) == 2


def test_dark_reference_is_dark_and_unblanks(inst, run_engine):
    from bluestem.plans import dark_reference

    mic, _scan, det, ca, _ = inst
    RE, rec = run_engine
    RE(dark_reference(det, mic, num_frames=3, acquire_time=1e-3))
    frames = _frames(rec)
    assert frames.shape == (3, FRAME, FRAME) and not frames.any()
    assert ca.get("MIC:BeamBlank_RBV") == "Off"
    assert rec.of("stop")[0]["exit_status"] == "success"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shape": (0, 16), "dwell": 1e-4}, r"shape=\(0, 16\): allowed 2 integers"),
        ({"shape": (16, 5000), "dwell": 1e-4}, r"each 1\.\.4096"),
        ({"shape": (16, 16), "dwell": 0.0}, r"dwell=0.0: allowed \(0, 1\]"),
        ({"shape": (16, 16), "dwell": 1e-4, "fov": 10, "step": 1}, "one of them"),
    ],
)
def test_bad_arguments_touch_nothing(inst, run_engine, kwargs, message):
    from bluestem.plans import raster

    mic, scan, det, ca, _ = inst
    RE, rec = run_engine
    before = (ca.get("DET:HDF1:FileNumber_RBV"), ca.get("SCAN:State_RBV"),
              ca.get("SCAN:ShapeX_RBV"), ca.get("SCAN:Dwell_RBV"))  # fmt: skip
    with pytest.raises(ValueError, match=message):
        RE(raster(det, scan, microscope=mic, **kwargs))
    after = (ca.get("DET:HDF1:FileNumber_RBV"), ca.get("SCAN:State_RBV"),
             ca.get("SCAN:ShapeX_RBV"), ca.get("SCAN:Dwell_RBV"))  # fmt: skip
    assert after == before and rec.docs == []
