"""The PV groups' behaviour without Channel Access: writes go through the same caproto
entry point a CA put uses (``write_from_dbr``), in a private event loop."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from caproto import AlarmSeverity, AlarmStatus, ChannelType

from bluestem.ioc.instrument import Instrument, InstrumentConfig
from bluestem.ioc.validation import InvalidSetting


def make(tmp_path, **config) -> Instrument:
    return Instrument(prefix="T:", config=InstrumentConfig(data_dir=str(tmp_path), **config))


def put(ioc: Instrument, name: str, value):
    """A CA-style write of ``value`` to ``T:name``."""
    pv = ioc.pvdb["T:" + name]
    if isinstance(value, str):
        if pv.data_type == ChannelType.CHAR:
            data, dtype = np.frombuffer(value.encode() + b"\0", np.uint8), ChannelType.CHAR
        else:
            data, dtype = [value.encode()], ChannelType.STRING
    elif isinstance(value, float):
        data, dtype = np.array([value]), ChannelType.DOUBLE
    else:
        data, dtype = np.array([value], dtype=np.int32), ChannelType.LONG
    return asyncio.run(pv.write_from_dbr(data, dtype, None))


def value(ioc: Instrument, name: str):
    return ioc.pvdb["T:" + name].value


def test_setpoint_and_quantised_readback(tmp_path):
    ioc = make(tmp_path)
    put(ioc, "MIC:HighTension", 120.04)
    assert value(ioc, "MIC:HighTension") == pytest.approx(120.04)
    assert value(ioc, "MIC:HighTension_RBV") == pytest.approx(120.0)


@pytest.mark.parametrize("bad", ["Bogus", 2, 7])
def test_enum_refused_and_flagged(tmp_path, bad):
    ioc = make(tmp_path)
    with pytest.raises(InvalidSetting, match="allowed values"):
        put(ioc, "SCAN:Mode", bad)
    pv = ioc.pvdb["T:SCAN:Mode"]
    assert pv.value == "Fly"
    assert (pv.alarm.status, pv.alarm.severity) == (
        AlarmStatus.WRITE,
        AlarmSeverity.MINOR_ALARM,
    )
    assert value(ioc, "STATUS") == "WARN"
    assert "T:SCAN:Mode" in value(ioc, "STATUS:Message")
    assert "T:SCAN:Mode" in value(ioc, "SCAN:StatusMessage_RBV")
    # other PVs of the group keep their own (clear) alarm
    assert ioc.pvdb["T:SCAN:Dwell"].alarm.status == AlarmStatus.NO_ALARM
    put(ioc, "SCAN:Mode", "Step")
    assert value(ioc, "SCAN:Mode_RBV") == "Step"
    assert pv.alarm.status == AlarmStatus.NO_ALARM
    assert value(ioc, "STATUS") == "OK"


def test_enum_by_index(tmp_path):
    ioc = make(tmp_path)
    put(ioc, "DET:cam1:TriggerMode", 0)
    assert value(ioc, "DET:cam1:TriggerMode_RBV") == "Internal"


def test_fov_and_step_are_coupled(tmp_path):
    ioc = make(tmp_path)
    put(ioc, "SCAN:ShapeX", 32)
    put(ioc, "SCAN:FovX", 8.0)
    assert value(ioc, "SCAN:StepX_RBV") == pytest.approx(0.25)
    assert value(ioc, "SCAN:StepX") == pytest.approx(0.25)
    put(ioc, "SCAN:StepX", 0.5)
    assert value(ioc, "SCAN:FovX_RBV") == pytest.approx(16.0)
    put(ioc, "SCAN:ShapeX", 64)
    assert value(ioc, "SCAN:FovX_RBV") == pytest.approx(32.0)


def test_binning_is_square_and_sets_the_frame(tmp_path):
    ioc = make(tmp_path)
    put(ioc, "DET:cam1:SizeX", 64)
    put(ioc, "DET:cam1:BinY", 4)
    assert value(ioc, "DET:cam1:BinX_RBV") == 4
    assert value(ioc, "DET:cam1:ArraySizeX_RBV") == 16
    assert value(ioc, "DET:cam1:ArraySizeY_RBV") == 32
    with pytest.raises(InvalidSetting, match="allowed: 1, 2, 4"):
        put(ioc, "DET:cam1:BinX", 3)
    with pytest.raises(InvalidSetting, match="multiple of the binning 4"):
        put(ioc, "DET:cam1:SizeX", 66)


def test_acquire_period_not_shorter_than_acquire_time(tmp_path):
    ioc = make(tmp_path)
    put(ioc, "DET:cam1:AcquireTime", 0.01)
    assert value(ioc, "DET:cam1:AcquirePeriod_RBV") == pytest.approx(0.01)  # stretched
    with pytest.raises(InvalidSetting, match="shorter than AcquireTime"):
        put(ioc, "DET:cam1:AcquirePeriod", 0.005)


def test_stuck_setting_ignores_the_setpoint(tmp_path):
    ioc = make(tmp_path, stuck=frozenset({"StageX"}))
    put(ioc, "MIC:StageX", 5.0)
    put(ioc, "MIC:StageY", 5.0)
    assert value(ioc, "MIC:StageX") == pytest.approx(5.0)
    assert value(ioc, "MIC:StageX_RBV") == pytest.approx(0.0)
    assert value(ioc, "MIC:StageY_RBV") == pytest.approx(5.0)


def test_settings_locked_while_busy_except_beam_blank(tmp_path):
    ioc = make(tmp_path)
    ioc.hdf._writer = object()  # a file is open: the instrument is busy
    with pytest.raises(InvalidSetting, match="during an acquisition"):
        put(ioc, "MIC:HighTension", 150.0)
    assert ioc.pvdb["T:MIC:HighTension"].alarm.severity == AlarmSeverity.MAJOR_ALARM
    put(ioc, "MIC:HighTension", 200.0)  # the current value: no change, accepted
    put(ioc, "MIC:BeamBlank", "On")
    assert value(ioc, "MIC:BeamBlank_RBV") == "On"
    assert ioc.mic.dose_per_frame(1e-3) == 0.0


def test_dose_per_frame_is_current_times_dwell_over_e(tmp_path):
    ioc = make(tmp_path)
    put(ioc, "MIC:BeamCurrent", 50.0)
    assert ioc.mic.dose_per_frame(2e-3) == pytest.approx(50e-12 * 2e-3 / 1.602176634e-19)


def test_file_path_must_exist(tmp_path):
    ioc = make(tmp_path)
    with pytest.raises(InvalidSetting, match="does not exist"):
        put(ioc, "DET:HDF1:FilePath", str(tmp_path / "missing"))
    assert value(ioc, "DET:HDF1:FilePathExists_RBV") == 0
    put(ioc, "DET:HDF1:FilePath", str(tmp_path))
    assert value(ioc, "DET:HDF1:FilePathExists_RBV") == 1
    assert value(ioc, "DET:HDF1:FilePath_RBV") == str(tmp_path)


def test_twin_parameters_are_si_readbacks(tmp_path):
    ioc = make(tmp_path, seed=11)
    put(ioc, "MIC:HighTension", 300.0)
    put(ioc, "MIC:CameraLength", 200.0)
    put(ioc, "SCAN:StepY", 0.5)
    params = ioc._parameters(internal=False)
    assert params["optics"]["high_tension"] == pytest.approx(300e3)
    assert params["detector"]["camera_length"] == pytest.approx(0.2)
    assert params["scan"]["step"][0] == pytest.approx(0.5e-9)
    assert params["seed"] == 11


@pytest.mark.parametrize(
    ("settings", "rank"),
    [({"SCAN:ShapeY": 4, "SCAN:ShapeX": 8}, 4),
     ({"DET:cam1:TriggerMode": "Internal", "DET:HDF1:NumCapture": 10}, 3)],
)  # fmt: skip
def test_chunk_shape_is_published_before_capture_rbv(tmp_path, settings, rank):
    import h5py

    from bluestem.frames import FRAMES_PATH

    ioc = make(tmp_path)
    assert list(value(ioc, "DET:HDF1:ChunkShape_RBV")) == []
    put(ioc, "DET:HDF1:FilePath", str(tmp_path))
    put(ioc, "DET:cam1:SizeX", 32)
    put(ioc, "DET:cam1:SizeY", 16)
    for name, v in settings.items():
        put(ioc, name, v)
    capture_rbv = ioc.pvdb["T:DET:HDF1:Capture_RBV"]
    seen = []
    write = capture_rbv.write

    async def spy(v, **kw):
        seen.append((v, list(value(ioc, "DET:HDF1:ChunkShape_RBV"))))
        return await write(v, **kw)

    capture_rbv.write = spy
    put(ioc, "DET:HDF1:Capture", 1)
    chunks = [int(c) for c in ioc.hdf.writer.grid.chunk_shape]
    assert len(chunks) == rank and chunks[-2:] == [16, 32]
    assert seen == [(1, chunks)]  # already there when Capture_RBV became 1
    path = ioc.pvdb["T:DET:HDF1:FullFileName_RBV"].value
    put(ioc, "DET:HDF1:Capture", 0)
    assert value(ioc, "DET:HDF1:Capture_RBV") == 0
    assert list(value(ioc, "DET:HDF1:ChunkShape_RBV")) == chunks  # the last file's
    with h5py.File(path, "r") as f:
        assert list(f[FRAMES_PATH].chunks) == chunks
