"""Every PV answers; every writable PV takes a write; the caproto command-line tools and
``--list-pvs`` work against the IOC."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from caproto import ChannelType

pytestmark = pytest.mark.system

BIN = Path(sys.executable).parent


def list_pvs(prefix: str) -> list[list[str]]:
    out = subprocess.run(
        [sys.executable, "-P", "-c", "import sys; from bluestem.cli import main; sys.exit(main())",
         "ioc", "sim", "--prefix", prefix, "--list-pvs"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    return [line.split("\t") for line in out.splitlines()]


@pytest.fixture(scope="module")
def pvs(sim):
    return list_pvs(sim[0].prefix)


def test_list_pvs_names_type_access_and_doc(pvs, sim):
    prefix = sim[0].prefix
    names = [row[0] for row in pvs]
    assert len(names) == len(set(names)) > 100
    for row in pvs:
        assert len(row) == 5 and row[0].startswith(prefix) and row[4], row
    expected = ["MIC:HighTension", "MIC:BeamBlank_RBV", "SCAN:FovX", "SCAN:State_RBV",
                "DET:cam1:Acquire", "DET:cam1:DetectorState_RBV", "DET:HDF1:Capture",
                "DET:HDF1:NumCaptured_RBV", "DET:HDF1:FullFileName_RBV", "STATUS",
                "STATUS:Message"]  # fmt: skip
    for name in expected:
        assert prefix + name in names
    by_name = {row[0][len(prefix) :]: row for row in pvs}
    assert by_name["MIC:HighTension"][1:4] == ["DOUBLE", "RW", "kV"]
    assert by_name["SCAN:State_RBV"][2] == "RO"
    assert by_name["DET:HDF1:FilePath"][1].startswith("CHAR[")
    assert "20 <= x <= 300" in by_name["MIC:HighTension"][4]


def test_every_pv_is_readable(ca, pvs):
    for row in pvs:
        name = row[0][len(ca.prefix) :]
        response = ca.read(name, data_type="control")
        assert response.status.name == "ECA_NORMAL", name
        assert response.data is not None, name


# New values for the settings whose readback is checked to follow (the rest get their
# own value written back); ordered so that cross-checks (period >= time) hold.
NEW_VALUES = {
    "MIC:HighTension": 120.0, "MIC:Defocus": -12.5, "MIC:Astigmatism": 3.0,
    "MIC:AstigmatismAngle": 30.0, "MIC:ConvergenceAngle": 10.0, "MIC:CameraLength": 250.0,
    "MIC:BeamCurrent": 25.0, "MIC:BeamBlank": "On", "MIC:StageX": 1.5, "MIC:StageY": -2.5,
    "MIC:StageZ": 0.25, "MIC:StageAlpha": 10.0, "MIC:StageBeta": -5.0,
    "SCAN:ShapeX": 8, "SCAN:ShapeY": 4, "SCAN:StepX": 0.5, "SCAN:StepY": 0.25,
    "SCAN:Dwell": 2e-4, "SCAN:Rotation": 15.0, "SCAN:Flyback": 1e-3, "SCAN:Mode": "Step",
    "SCAN:BeamX": 0.5, "SCAN:BeamY": -0.5,
    "DET:cam1:AcquirePeriod": 4e-3, "DET:cam1:AcquireTime": 2e-3, "DET:cam1:NumImages": 3,
    "DET:cam1:ImageMode": "Continuous", "DET:cam1:TriggerMode": "Internal",
    "DET:cam1:CounterDepth": "6", "DET:cam1:SizeX": 32, "DET:cam1:SizeY": 48,
    "DET:cam1:BinX": 2,
    "DET:HDF1:FileName": "renamed", "DET:HDF1:FileTemplate": "%s%s-%4.4d.h5",
    "DET:HDF1:FileNumber": 40, "DET:HDF1:AutoIncrement": "No", "DET:HDF1:NumCapture": 9,
    "DET:HDF1:Compression": "bitshuffle-lz4",
}  # fmt: skip


def test_every_writable_pv_is_writable(ca, pvs):
    writable = [row[0][len(ca.prefix) :] for row in pvs if row[2] == "RW"]
    assert set(NEW_VALUES) <= set(writable)
    old = {name: _value(ca, name) for name in writable}
    try:
        for name in writable:  # the current value (or a no-op 0 for triggers)
            ca.put(name, old[name])
        for name, value in NEW_VALUES.items():
            ca.put(name, value)
            got = _value(ca, name + "_RBV")
            if isinstance(value, float):
                assert got == pytest.approx(value, abs=1e-9), name
            else:
                assert got == value, name
        # Coupled readbacks: Fov = Step x Shape; binning is square; frame size follows.
        assert ca.get("SCAN:FovX_RBV") == pytest.approx(8 * 0.5)
        assert ca.get("SCAN:FovY") == pytest.approx(4 * 0.25)
        assert ca.get("DET:cam1:BinY_RBV") == 2
        assert ca.get("DET:cam1:ArraySizeX_RBV") == 16
        assert ca.get("DET:cam1:ArraySizeY_RBV") == 24
        assert ca.get("DET:cam1:DataType_RBV") == "UInt8"
        ca.put("SCAN:FovX", 2.0)
        assert ca.get("SCAN:StepX_RBV") == pytest.approx(2.0 / 8)
    finally:
        for name in reversed(list(NEW_VALUES)):
            ca.put(name, old[name])
        for name in ("SCAN:FovX", "SCAN:FovY"):
            ca.put(name, old[name])
    assert ca.get("STATUS") == "OK"


def _value(ca, name):
    native = ca.read(name, data_type="native")
    if native.data_type == ChannelType.CHAR:
        return ca.get_str(name)
    return ca.get(name)


def test_caproto_command_line_tools(sim):
    prefix = sim[0].prefix
    env = {**os.environ, **sim[0].env}  # the IOC's own CA environment

    def tool(*args):
        result = subprocess.run(
            [str(BIN / args[0]), "--no-repeater", "-w", "5", *args[1:]],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    old = tool("caproto-get", "-t", prefix + "MIC:StageY")
    tool("caproto-put", prefix + "MIC:StageY", "12.3456")
    assert float(tool("caproto-get", "-t", prefix + "MIC:StageY_RBV")) == pytest.approx(12.346)
    tool("caproto-put", prefix + "MIC:StageY", old)
    assert tool("caproto-get", "-t", prefix + "SCAN:State_RBV") in ("Idle", "Done", "Aborted")
    path = tool("caproto-get", "-t", "-S", prefix + "DET:HDF1:FilePath")
    assert Path(path) == sim[2]
    name = tool("caproto-get", "-t", "-S", prefix + "DET:HDF1:FileName")
    tool("caproto-put", "-S", prefix + "DET:HDF1:FileName", "from_the_command_line")
    assert tool("caproto-get", "-t", "-S", prefix + "DET:HDF1:FileName_RBV") == (
        "from_the_command_line"
    )
    tool("caproto-put", "-S", prefix + "DET:HDF1:FileName", name)


def test_chunk_shape_rbv_is_the_files_chunk_shape(ca):
    import h5py
    from ioc_client import configure_scan

    from bluestem.frames import FRAMES_PATH

    configure_scan(ca, shape=(4, 8), frame=32, name="chunk_shape")
    ca.put("DET:HDF1:Capture", 1)
    try:
        assert ca.get("DET:HDF1:Capture_RBV") == 1
        chunks = [int(v) for v in ca.read("DET:HDF1:ChunkShape_RBV").data]
        path = ca.get_str("DET:HDF1:FullFileName_RBV")
    finally:
        ca.put("DET:HDF1:Capture", 0)
    ca.wait_idle()
    with h5py.File(path, "r") as f:
        assert list(f[FRAMES_PATH].chunks) == chunks
    assert len(chunks) == 4 and chunks[-2:] == [32, 32]
    assert [int(v) for v in ca.read("DET:HDF1:ChunkShape_RBV").data] == chunks  # the last file's
