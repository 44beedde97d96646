"""The simulated instrument's hidden state: options, effective optics, the specimen's
placement, the truth file, and a file's metadata that does not reveal it (no CA)."""

from __future__ import annotations

import asyncio
import json
import math

import h5py
import numpy as np
import pytest
from caproto import ChannelType

from bluestem.ioc.backend import twin_from_parameters, twin_parameters
from bluestem.ioc.hidden import (
    Column,
    HiddenState,
    TruthFile,
    effective_optics,
    parse_column,
    parse_drift,
    parse_tilt,
    place,
)
from bluestem.ioc.instrument import Instrument, InstrumentConfig
from bluestem.ioc.source import Readback
from bluestem.ioc.twin_source import TwinSource
from bluestem.ioc.validation import InvalidSetting
from bluestem.twin import Optics, ScanGeometry, aberration_function

NM = 1e-9


# -- options ---------------------------------------------------------------------------
def test_column_option_in_si_units():
    column = parse_column("C1=85e-9,A1=20e-9@30deg,C3=1.2e-3")
    assert column == Column(c1=85e-9, a1=20e-9, a1_angle=math.radians(30), c3=1.2e-3)
    assert parse_column("a1=5e-9@-45") == Column(a1=5e-9, a1_angle=math.radians(-45))
    assert parse_column("A1=5e-9") == Column(a1=5e-9)  # azimuth 0
    assert parse_column(" C1 = -3e-9 ") == Column(c1=-3e-9)
    assert not parse_column("C1=0")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("C1=85", ["'C1=85'", "85 m", "-1e-05 <= C1 <= 1e-05 m", "85e-9 is 85 nm"]),
        ("C3=1", ["'C3=1'", "-0.01 <= C3 <= 0.01 m"]),
        ("A1=2e-4@10deg", ["2e-4", "0.0002 m", "A1 <= 1e-05 m"]),
        ("A1=-1e-9@10deg", ["-1e-09 m is negative", "0 <= A1"]),
        ("A1=1e-9@200deg", ["200 deg", "-180 <= A1 azimuth <= 180 deg"]),
        ("A1=1e-9@northdeg", ["'north'", "A1=<m>@<deg>deg"]),
        ("C5=1e-3", ["'C5=1e-3'", "KEY C1, A1 or C3", "C1=85e-9,A1=20e-9@30deg,C3=1.2e-3"]),
        ("C1", ["'C1'", "KEY=VALUE"]),
        ("C1=1e-9,,C3=0", ["empty item"]),
        ("C1=1e-9,c1=2e-9", ["C1 is given twice"]),
        ("C1=nan", ["'nan' is not finite"]),
        ("C1=85nm", ["'85nm' is not a number", "SI units"]),
    ],
)
def test_bad_column_values_are_refused_naming_value_and_form(text, words):
    with pytest.raises(ValueError, match="--column") as info:
        parse_column(text)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_drift_and_tilt_options():
    assert parse_drift("0.5,-1") == pytest.approx((0.5e-9, -1e-9))
    assert parse_drift("2") == pytest.approx((0.0, 2e-9))  # one number: along x
    assert parse_tilt("-10") == pytest.approx(math.radians(-10))
    for text, word in [("1,2,3", "3 values"), ("fast", "'fast'"), ("2000", "-1000 <= vx")]:
        with pytest.raises(ValueError, match="--drift") as info:
            parse_drift(text)
        assert word in str(info.value)
    with pytest.raises(ValueError, match=r"--tilt: '85'.*-80 <= tilt <= 80 deg"):
        parse_tilt("85")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--column", "C1=85"], ["--column", "85 m", "nothing served"]),
        (["--drift", "x"], ["--drift", "'x'"]),
        (["--tilt", "100"], ["--tilt", "-80 <= tilt <= 80"]),
    ],
)
def test_the_command_refuses_bad_values_at_startup(args, words, capsys, tmp_path):
    from bluestem.cli import main

    code = main(["ioc", "sim", "--prefix", "T:", "--data-dir", str(tmp_path), *args])
    assert code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err


def test_the_command_refuses_an_unwritable_truth_file(capsys, tmp_path):
    from bluestem.cli import main

    bad = tmp_path / "missing" / "truth.json"
    code = main(["ioc", "sim", "--prefix", "T:", "--column", "C1=1e-9", "--truth", str(bad)])
    assert code == 2
    assert f"--truth {bad}" in capsys.readouterr().err


# -- effective optics --------------------------------------------------------------------
OPTICS = {"high_tension": 200e3, "convergence_semi_angle": 20e-3, "defocus": -10e-9,
          "astigmatism": 3e-9, "astigmatism_angle": math.radians(10), "cs": 1.2e-3}  # fmt: skip


def test_c1_is_setpoint_plus_residual_minus_height():
    column = Column(c1=50e-9, c3=0.3e-3)
    out = effective_optics(OPTICS, column, dz=20e-9)
    assert out["defocus"] == pytest.approx(-10e-9 + 50e-9 - 20e-9)
    assert out["cs"] == pytest.approx(1.5e-3)  # C3 adds to Cs_RBV
    # no A1 residual: the setpoint's astigmatism exactly
    assert (out["astigmatism"], out["astigmatism_angle"]) == (3e-9, math.radians(10))
    # nothing hidden: exactly the readbacks
    assert effective_optics(OPTICS, Column(), 0.0) == OPTICS


def test_a1_adds_as_a_complex_two_fold_term():
    column = Column(a1=5e-9, a1_angle=math.radians(-35))
    out = effective_optics(OPTICS, column, dz=0.0)
    z = 3e-9 * np.exp(2j * math.radians(10)) + 5e-9 * np.exp(2j * math.radians(-35))
    assert out["astigmatism"] == pytest.approx(abs(z))
    assert out["astigmatism_angle"] == pytest.approx(np.angle(z) / 2)
    # The textbook aberration function: the two cos 2(phi - phi_i) terms add.
    k = np.linspace(-2e10, 2e10, 41)
    ky, kx = np.meshgrid(k, k, indexing="ij")
    lam = 2.5e-12

    def chi(a1, phi):
        return aberration_function(ky, kx, lam, Optics(defocus=0, cs=0, astigmatism=a1,
                                                       astigmatism_angle=phi))  # fmt: skip

    total = chi(out["astigmatism"], out["astigmatism_angle"])
    np.testing.assert_allclose(
        total, chi(3e-9, math.radians(10)) + chi(5e-9, math.radians(-35)), atol=1e-9
    )
    # ... which is not the sum of the magnitudes at the residual's angle
    assert not np.allclose(total, chi(8e-9, math.radians(-35)), atol=1e-3)


# -- the scan geometry's offset ----------------------------------------------------------
def test_scan_offset_shifts_every_position_and_is_not_rotated():
    plain = ScanGeometry(shape=(3, 4), step=(2e-10, 1e-10), rotation=0.3)
    shifted = ScanGeometry(shape=(3, 4), step=(2e-10, 1e-10), rotation=0.3, offset=(1e-9, -2e-9))
    assert plain.offset == (0.0, 0.0)
    np.testing.assert_array_equal(shifted.positions(), plain.positions() + np.array([1e-9, -2e-9]))
    assert shifted.positions().mean((0, 1)) == pytest.approx([1e-9, -2e-9])
    fov = ScanGeometry.from_fov((4, 4), (4e-9, 4e-9), offset=[0.0, 5e-9])
    assert fov.offset == (0.0, 5e-9)
    for bad in [(1e-9,), (float("nan"), 0.0), "ab"]:
        with pytest.raises(ValueError, match="offset"):
            ScanGeometry(offset=bad)


def _base(**scan):
    return {
        "optics": dict(OPTICS),
        "detector": {
            "shape": (32, 32),
            "pixel_size": 55e-6,
            "camera_length": 0.1,
            "counter_depth": 12,
            "binning": 1,
        },
        "scan": {
            "shape": (2, 3),
            "step": (1e-10, 1e-10),
            "rotation": 0.0,
            "flyback": 0.0,
            **scan,
        },
        "specimen": "vacuum",
        "dose_per_frame": 100.0,
        "seed": 1,
    }


def test_twin_parameters_carry_the_offset_only_when_it_is_not_zero():
    assert "offset" not in twin_parameters(**_base())["scan"]
    assert "offset" not in twin_parameters(**_base(offset=(0.0, 0.0)))["scan"]
    params = twin_parameters(**_base(offset=(0.0, 3e-9)))
    assert params["scan"]["offset"] == [0.0, 3e-9]
    twin = twin_from_parameters(json.dumps(params))
    assert twin.scan.offset == (0.0, 3e-9)


# -- where the specimen sits -------------------------------------------------------------
def readback(*, offset=(0.0, 0.0), stage=None, **optics) -> Readback:
    return Readback.of(
        optics={**OPTICS, **optics},
        detector=_base()["detector"],
        scan={**_base()["scan"], "offset": offset},
        dose_per_frame=100.0,
        stage=stage,
    )


def test_placement_signs_of_offset_stage_drift_and_tilt():
    hidden = HiddenState(drift=(1e-9, 2e-9), tilt=math.radians(30))
    rb = readback(offset=(4e-9, 5e-9), stage={"x": 1e-9, "y": -1e-9, "z": 7e-9})
    p = place(rb, hidden, elapsed=3.0)
    assert p.drift == pytest.approx((3e-9, 6e-9))
    # scan offset - stage - drift: the specimen moved +x by stage and drift
    assert p.centre == pytest.approx((4e-9 + 1e-9 - 3e-9, 5e-9 - 1e-9 - 6e-9))
    assert p.height == pytest.approx(p.centre[1] * math.tan(math.radians(30)))
    assert p.dz == pytest.approx(7e-9 + p.height)
    nothing = place(rb, HiddenState(), elapsed=3.0)
    assert nothing.centre == pytest.approx((5e-9, 4e-9)) and nothing.dz == pytest.approx(7e-9)


def test_the_source_renders_the_truth_and_records_the_described_twin(tmp_path):
    now = [100.0]
    truth = tmp_path / "truth.json"
    hidden = HiddenState(column=Column(c1=50e-9), drift=(0.0, 1e-9))
    source = TwinSource("vacuum", seed=4, hidden=hidden, truth=str(truth), clock=lambda: now[0])
    now[0] += 2.5
    rb = readback(offset=(0.0, 6e-9), stage={"x": 1e-9, "y": 0.0, "z": 10e-9})
    recipe = source.recipe(rb, number=3)
    described = json.loads(recipe.metadata["simulation"]["twin_parameters"])
    assert recipe.metadata["simulation"]["hidden_state"] == 1
    assert described == recipe.parameters
    assert described["optics"]["defocus"] == pytest.approx(-10e-9 - 10e-9)  # StageZ only
    assert described["scan"]["offset"] == pytest.approx([0.0, 5e-9])  # offset - stage
    assert not truth.exists()  # written when the acquisition starts
    recipe.started("/data/f_000001.h5")
    doc = json.loads(truth.read_text())
    entry = doc["acquisitions"]["3"]
    assert doc["files"] == {"/data/f_000001.h5": 3}
    assert doc["hidden"]["column"]["C1"] == 50e-9
    assert entry["elapsed"] == 2.5
    assert entry["effective"]["C1"] == pytest.approx(-10e-9 + 50e-9 - 10e-9)
    assert entry["displacement"]["drift"] == pytest.approx([0.0, 2.5e-9])
    assert entry["displacement"]["scan_centre"] == pytest.approx([0.0, 6e-9 - 1e-9 - 2.5e-9])
    true = entry["twin_parameters"]
    assert true["optics"]["defocus"] == entry["effective"]["C1"]
    assert true["scan"]["offset"] == entry["displacement"]["scan_centre"]
    assert twin_from_parameters(true).scan.offset == tuple(true["scan"]["offset"])


def test_truth_file_is_replaced_atomically(tmp_path):
    path = tmp_path / "truth.json"
    truth = TruthFile(str(path), HiddenState(tilt=0.1))
    truth.write()
    first = path.stat().st_ino
    truth.record(0, {"file": "", "number": 0})
    assert path.stat().st_ino != first  # a new file renamed over the old one
    assert [p.name for p in tmp_path.iterdir()] == ["truth.json"]  # no temporary left
    doc = json.loads(path.read_text())
    assert doc["format"] == "bluestem-ioc-truth" and doc["hidden_state"] == 1
    assert doc["acquisitions"]["0"]["number"] == 0 and doc["files"] == {}


# -- the instrument: PVs and the file hold only what the PVs say ------------------------
def make(tmp_path, **config) -> Instrument:
    return Instrument(prefix="T:", config=InstrumentConfig(data_dir=str(tmp_path), **config))


def put(ioc: Instrument, name: str, value):
    pv = ioc.pvdb["T:" + name]
    if isinstance(value, str):
        data, dtype = np.frombuffer(value.encode() + b"\0", np.uint8), ChannelType.CHAR
    elif isinstance(value, float):
        data, dtype = np.array([value]), ChannelType.DOUBLE
    else:
        data, dtype = np.array([value], dtype=np.int32), ChannelType.LONG
    return asyncio.run(pv.write_from_dbr(data, dtype, None))


def value(ioc: Instrument, name: str):
    return ioc.pvdb["T:" + name].value


def capture(ioc: Instrument) -> str:
    put(ioc, "DET:HDF1:FilePath", ioc.config.data_dir)
    put(ioc, "DET:cam1:SizeX", 16)
    put(ioc, "DET:cam1:SizeY", 16)
    put(ioc, "SCAN:ShapeX", 2)
    put(ioc, "SCAN:ShapeY", 2)
    put(ioc, "DET:HDF1:Capture", 1)
    path = value(ioc, "DET:HDF1:FullFileName_RBV")
    put(ioc, "DET:HDF1:Capture", 0)
    return path


def test_file_metadata_does_not_reveal_the_residual(tmp_path):
    truth = tmp_path / "truth.json"
    hidden = HiddenState(column=Column(c1=85e-9, a1=20e-9, a1_angle=math.radians(30)),
                         tilt=math.radians(5))  # fmt: skip
    ioc = make(tmp_path, hidden=hidden, truth=str(truth))
    put(ioc, "MIC:Defocus", -12.0)
    put(ioc, "SCAN:OffsetX", 40.0)
    put(ioc, "MIC:StageX", 0.01)  # 10 nm
    put(ioc, "MIC:StageZ", 0.002)  # 2 nm
    assert value(ioc, "MIC:Defocus_RBV") == pytest.approx(-12.0)
    assert value(ioc, "SCAN:OffsetX_RBV") == pytest.approx(40.0)
    path = capture(ioc)
    with h5py.File(path, "r") as f:
        mic = dict(f["metadata/microscope"].attrs)
        scan = dict(f["metadata/scan"].attrs)
        sim = dict(f["metadata/simulation"].attrs)
    assert mic["Defocus"] == pytest.approx(-12.0) and mic["Astigmatism"] == 0.0
    assert list(scan["offset"]) == pytest.approx([0.0, 40e-9])  # SCAN:OffsetY/X
    assert int(sim["hidden_state"]) == 1
    described = json.loads(sim["twin_parameters"])
    assert described["optics"]["defocus"] == pytest.approx(-12e-9 - 2e-9)
    assert described["optics"]["astigmatism"] == 0.0
    assert described["scan"]["offset"] == pytest.approx([0.0, 30e-9])
    entry = json.loads(truth.read_text())["acquisitions"]["0"]
    assert entry["file"] == path
    height = 30e-9 * math.tan(math.radians(5))
    assert entry["dz"]["height"] == pytest.approx(height)
    assert entry["effective"]["C1"] == pytest.approx(-12e-9 + 85e-9 - 2e-9 - height)
    assert entry["effective"]["A1"] == pytest.approx(20e-9)  # the setpoint is 0
    # Nothing of the truth is anywhere in the file's metadata.
    with h5py.File(path, "r") as f:
        text = []
        f["metadata"].visititems(lambda name, obj: text.extend(map(str, obj.attrs.values())))
    for secret in (entry["effective"]["C1"], entry["effective"]["A1"], 85e-9, 85.0):
        assert not any(repr(secret) in t or f"{secret:g}" in t for t in text), secret


def test_without_hidden_state_the_file_holds_the_exact_twin(tmp_path):
    ioc = make(tmp_path, seed=2)
    path = capture(ioc)
    params = ioc._parameters(internal=False)  # of the next acquisition (seed 3)
    assert "offset" not in params["scan"]
    with h5py.File(path, "r") as f:
        sim = dict(f["metadata/simulation"].attrs)
    assert int(sim["hidden_state"]) == 0
    assert json.loads(sim["twin_parameters"]) == {**params, "seed": 2}
    assert not list(tmp_path.glob("*.json"))


def test_scan_offset_pvs_are_validated_and_locked(tmp_path):
    ioc = make(tmp_path)
    with pytest.raises(InvalidSetting, match=r"T:SCAN:OffsetY: 2e\+07 nm is out of range "
                       r"\(allowed -1e\+07 <= x <= 1e\+07 nm\)"):  # fmt: skip
        put(ioc, "SCAN:OffsetY", 2e7)
    assert "T:SCAN:OffsetY" in value(ioc, "SCAN:StatusMessage_RBV")
    put(ioc, "SCAN:OffsetY", -1.23456)
    assert value(ioc, "SCAN:OffsetY_RBV") == pytest.approx(-1.235)  # 1 pm quantum
    put(ioc, "DET:HDF1:FilePath", str(tmp_path))
    put(ioc, "DET:HDF1:Capture", 1)
    with pytest.raises(InvalidSetting, match="during an acquisition"):
        put(ioc, "SCAN:OffsetX", 3.0)
    put(ioc, "DET:HDF1:Capture", 0)
    for pv in ("T:SCAN:OffsetX", "T:SCAN:OffsetY", "T:SCAN:OffsetX_RBV"):
        assert ioc.pvdb[pv].__doc__
