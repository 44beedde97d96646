"""PACBED thickness: the alignment, the fit of noisy twin patterns against a multislice
library, the agent, the library cache, the plan's refusals, and the IOC's specimen
parameters (the thickness is hidden state). No processes."""

from __future__ import annotations

import json
import math
import sys

import h5py
import numpy as np
import pytest

from bluestem.loop.pacbed_fit import (
    Alignment,
    PacbedThicknessAgent,
    align,
    fit_pacbed,
    warp,
)

A = 3.905e-10  # SrTiO3
NM = 1e-9
FRAME = 64


@pytest.fixture(scope="module")
def setup():
    from bluestem import twin as tw

    optics = tw.Optics(convergence_semi_angle=10e-3)
    detector = tw.DetectorModel(shape=(FRAME, FRAME), camera_length=0.06)
    return optics, detector


@pytest.fixture(scope="module")
def library(setup):
    """Every slice (a / 2) from 2 to 60 nm, 8 x 8 positions over the cell."""
    from bluestem import twin as tw

    optics, detector = setup
    return tw.pacbed_library(optics, detector, tw.make_specimen("srtio3"),
                             np.arange(11, 308) * A / 2, positions=8)  # fmt: skip


def transformed(pattern: np.ndarray, centre, scale: float, rotation: float) -> np.ndarray:
    """The pattern seen through the alignment's definition, written out pixel by pixel:
    measured pixel p sees the library at c_lib + scale R(rotation) (p - centre)."""
    fy, fx = pattern.shape
    out = np.zeros_like(pattern)
    c, s = math.cos(rotation), math.sin(rotation)
    for r in range(fy):
        for q in range(fx):
            dy, dx = r - centre[0], q - centre[1]
            y = fy // 2 + scale * (s * dx + c * dy)
            x = fx // 2 + scale * (c * dx - s * dy)
            y0, x0 = math.floor(y), math.floor(x)
            for yy, xx, w in ((y0, x0, (1 - (y - y0)) * (1 - (x - x0))),
                              (y0, x0 + 1, (1 - (y - y0)) * (x - x0)),
                              (y0 + 1, x0, (y - y0) * (1 - (x - x0))),
                              (y0 + 1, x0 + 1, (y - y0) * (x - x0))):  # fmt: skip
                if 0 <= yy < fy and 0 <= xx < fx:
                    out[r, q] += w * pattern[yy, xx]
    return out


def test_warp_is_the_alignments_definition(library):
    pattern = library.nearest(20 * NM)
    a = Alignment((30.4, 34.2), 1.07, math.radians(11.0))
    expected = transformed(pattern, a.centre, a.scale, a.rotation)
    assert np.allclose(warp(pattern, a, pattern.shape), expected, atol=1e-12)


@pytest.mark.parametrize(("centre", "scale", "deg"), [((33.6, 30.7), 1.0, 0.0),
                                                      ((30.3, 33.1), 1.08, 12.0),
                                                      ((32.5, 31.2), 0.93, -27.0)])  # fmt: skip
def test_alignment_recovers_a_known_shift_scale_and_rotation(library, centre, scale, deg):
    reference = library.nearest(20 * NM)
    measured = transformed(reference, centre, scale, math.radians(deg)) * 1e6
    found, ncc = align(measured, reference)
    assert ncc > 0.9999
    assert found.centre == pytest.approx(centre, abs=0.02)
    assert found.scale == pytest.approx(scale, rel=2e-3)
    # SrTiO3 [001] is four-fold: a rotation is known modulo 90 degrees
    err = (math.degrees(found.rotation) - deg + 45.0) % 90.0 - 45.0
    assert abs(err) < 0.2


def noisy_pacbed(setup, thickness: float, dose: float, seed: int) -> np.ndarray:
    """The sum of an 8 x 8 twin scan over one cell (multislice, Poisson counts)."""
    from bluestem import twin as tw

    optics, detector = setup
    scan = tw.ScanGeometry(shape=(8, 8), step=(A / 8, A / 8), rotation=0.0, flyback=0.0)
    spec = tw.make_specimen("srtio3", thickness=thickness, multislice=True)
    twin = tw.Twin(optics, detector, scan, spec, dose_per_frame=dose, seed=seed)
    return twin.render(0, 64).sum(axis=0, dtype=np.float64)


@pytest.mark.parametrize("thickness_nm", [5.0, 12.3, 20.0, 31.7, 40.0])
def test_a_noisy_twin_pacbed_gives_the_thickness_within_1_nm(setup, library, thickness_nm):
    # 20,000 electrons a frame (3 pA for 1 ms), 64 frames: 1.3 million in the pattern
    measured = noisy_pacbed(setup, thickness_nm * NM, 2e4, seed=int(thickness_nm * 10))
    fit = fit_pacbed(measured, library.patterns, library.thicknesses,
                     slice_thickness=library.record["slice_thickness"])  # fmt: skip
    assert fit.thickness == pytest.approx(thickness_nm * NM, abs=1 * NM)
    assert 0 < fit.uncertainty < 1 * NM
    assert not fit.at_edge and 0.5 < fit.reduced_chi2[fit.best_index] < 1.5
    assert fit.alignment.centre == pytest.approx((FRAME // 2, FRAME // 2), abs=0.1)
    assert fit.alignment.scale == pytest.approx(1.0, abs=2e-3)
    record = fit.to_json()
    json.dumps(record)  # JSON-able
    assert len(record["reduced_chi2"]) == len(library.thicknesses)
    assert record["goodness"] == "reduced Pearson chi2"


def test_a_best_entry_at_the_edge_is_reported_and_the_agent_moves_the_library(setup, library):
    measured = noisy_pacbed(setup, 40 * NM, 2e4, seed=3)
    t = library.thicknesses
    thin = slice(int(np.searchsorted(t, 33 * NM)), int(np.searchsorted(t, 38.5 * NM)))
    n = thin.stop - thin.start  # 33..38.5 nm: 40 nm lies beyond
    fit = fit_pacbed(measured, library.patterns[thin], t[thin])
    assert fit.at_edge and fit.best_index == n - 1
    agent = PacbedThicknessAgent(t[thin].tolist())
    assert agent.suggest(1) == [{}]
    agent.ingest({}, {"fit": fit.to_json()})
    report = agent.report()
    assert report["converged"] is False and report["decision"].startswith("refine")
    moved = agent.library_thicknesses()
    assert moved[0] == pytest.approx(t[thin.stop - 4]) and len(moved) == n
    assert moved[-1] > 40 * NM
    inside = fit_pacbed(measured, library.patterns, library.thicknesses)
    agent.ingest({}, {"fit": inside.to_json()})
    assert agent.report()["converged"] is True
    assert agent.report()["thickness"] == pytest.approx(40 * NM, abs=1 * NM)


def test_the_agent_converges_at_the_thinnest_possible_entry():
    agent = PacbedThicknessAgent([1e-10, 2e-10, 3e-10])
    agent.ingest({}, {"fit": {"library_thicknesses": [1e-10, 2e-10, 3e-10], "best_index": 0,
                              "at_edge": True, "thickness": 1e-10, "uncertainty": 1e-10,
                              "reduced_chi2_min": 1.0}})  # fmt: skip
    assert agent.report()["converged"] is True


@pytest.mark.parametrize(("args", "words"), [
    ({"measured": np.zeros((4, 4))}, "at least 8 x 8"),
    ({"measured": -np.ones((64, 64))}, "non-negative"),
    ({"measured": np.full((64, 64), np.nan)}, "finite"),
    ({"thicknesses": [3e-9, 2e-9, 1e-9]}, "ascending"),
    ({"patterns": np.ones((2, 64, 64)), "thicknesses": [1e-9, 2e-9]}, "at least 3"),
    ({"rounds": 0}, "1..10"),
])  # fmt: skip
def test_bad_inputs_are_refused(args, words):
    kw = {"measured": np.ones((64, 64)), "patterns": np.ones((3, 64, 64)),
          "thicknesses": [1e-9, 2e-9, 3e-9], **args}  # fmt: skip
    with pytest.raises(ValueError, match=words):
        fit_pacbed(kw.pop("measured"), kw.pop("patterns"), kw.pop("thicknesses"), **kw)
    with pytest.raises(ValueError, match="ascending"):
        PacbedThicknessAgent([2e-9, 1e-9, 3e-9])


def test_the_library_is_cached_on_disk_by_its_parameters(tmp_path):
    from bluestem import twin as tw
    from bluestem.plans import pacbed as plan

    optics, detector = (
        tw.Optics(convergence_semi_angle=10e-3),
        tw.DetectorModel(shape=(32, 32), camera_length=0.03),
    )
    spec = tw.make_specimen("srtio3")
    args = (optics, detector, spec, [1e-9, 2e-9, 3e-9])
    lib, cache = plan.library_for(*args, positions=2, cache_dir=tmp_path)
    assert cache["source"] == "computed" and (tmp_path / f"pacbed-{cache['key']}.npz").exists()
    plan._MEMORY.clear()
    again, cache2 = plan.library_for(*args, positions=2, cache_dir=tmp_path)
    assert cache2["source"] == "disk" and cache2["key"] == cache["key"]
    assert np.array_equal(again.patterns, lib.patterns) and again.record == lib.record
    assert plan.library_for(*args, positions=2)[1]["source"] == "memory"
    other = plan.library_for(tw.Optics(convergence_semi_angle=11e-3), *args[1:], positions=2)
    assert other[1]["key"] != cache["key"]


# -- the plan refuses bad arguments before anything moves -----------------------------
@pytest.fixture
def devices(tmp_path):
    from fake_devices import PREFIX, fake_detector, instantiate

    from bluestem.devices import Microscope, ScanGenerator

    mic = instantiate(Microscope, prefix=PREFIX + "MIC:", name="mic")
    scan = instantiate(ScanGenerator, prefix=PREFIX + "SCAN:", name="scan")
    return fake_detector(tmp_path), scan, mic


@pytest.mark.parametrize(("kw", "words"), [
    ({"shape": (1, 8)}, "2..256"),
    ({"dwell": 0}, "dwell=0"),
    ({"fov": 0.2}, "at least one unit cell"),
    ({"thicknesses": [5, 10, 20]}, "1e-06 m"),
    ({"thicknesses": [1e-9, 2e-9]}, "3..2000"),
    ({"positions": 0}, "1..32"),
    ({"max_iterations": 9}, "1..5"),
    ({"specimen": 3}, "specimen name"),
    ({"specimen": "quartz"}, "unknown specimen"),
    ({"library": object()}, "PacbedLibrary"),
    ({"md": "x"}, "mapping"),
])  # fmt: skip
def test_the_plan_refuses_bad_arguments(devices, kw, words):
    from bluestem.plans import pacbed_thickness

    det, scan, mic = devices
    with pytest.raises(ValueError, match=words):
        pacbed_thickness(det, scan, mic, **kw)
    with pytest.raises(ValueError, match="Microscope"):
        pacbed_thickness(det, scan, det)


def test_importing_the_fit_loads_no_numba():
    import subprocess

    code = "import sys, bluestem.loop.pacbed_fit; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)  # fmt: skip
    assert out.stdout.strip() == "False"


# -- the IOC: specimen parameters, the thickness hidden --------------------------------
def test_specimen_parameters_are_typed_and_refused_with_the_allowed_range():
    from bluestem.ioc.backend import parse_specimen_parameters

    params = parse_specimen_parameters("srtio3", ["thickness=20e-9", "multislice=true",
                                                  "tilt=0.001,0"])  # fmt: skip
    assert params == {"thickness": 20e-9, "multislice": True, "tilt": (0.001, 0.0)}
    for items, words in ((["thickness=20"], "1e-10 <= thickness <= 1e-06 m"),
                         (["depth=1"], "allowed keys: atom_width, lattice, multislice"),
                         (["multislice=maybe"], "true or false"),
                         (["slices_per_cell=3"], "slices_per_cell must be 1")):  # fmt: skip
        with pytest.raises(ValueError, match=words):
            parse_specimen_parameters("srtio3", items)


def test_twin_parameters_with_a_plain_name_rebuild_as_before():
    from bluestem.ioc.backend import specimen_of, twin_from_parameters, twin_parameters

    base = {"optics": {"high_tension": 200e3, "convergence_semi_angle": 0.01},
            "detector": {"shape": [16, 16], "pixel_size": 55e-6, "camera_length": 0.02,
                         "counter_depth": 12, "binning": 1},
            "scan": {"shape": [2, 2], "step": [1e-10, 1e-10], "rotation": 0.0,
                     "flyback": 0.0}, "dose_per_frame": 10.0, "seed": 1}  # fmt: skip
    old = twin_parameters(specimen="srtio3", **base)
    assert old["specimen"] == "srtio3"  # what every earlier file holds
    assert twin_parameters(specimen={"name": "srtio3", "parameters": {}}, **base) == old
    assert twin_from_parameters(json.dumps(old)).specimen.thickness == 1.6e-9
    new = twin_parameters(
        specimen={
            "name": "srtio3",
            "parameters": {"thickness": 2e-8, "multislice": True, "tilt": (0.0, 0.001)},
        },
        **base,
    )
    assert new["specimen"]["parameters"]["tilt"] == [0.0, 0.001]
    spec = twin_from_parameters(json.dumps(new)).specimen
    assert (spec.thickness, spec.multislice, spec.tilt) == (2e-8, True, (0.0, 0.001))
    assert specimen_of("vacuum").name == "vacuum"


def test_the_file_does_not_reveal_a_hidden_thickness(tmp_path):
    from test_ioc_hidden_state import capture, make

    from bluestem.ioc.instrument import Instrument, InstrumentConfig
    from bluestem.ioc.twin_source import TwinSource

    truth = tmp_path / "truth.json"
    source = TwinSource(
        "srtio3", specimen_parameters={"thickness": 23.4e-9, "multislice": True}, truth=str(truth)
    )
    ioc = Instrument(prefix="T:", config=InstrumentConfig(data_dir=str(tmp_path)),
                     source=source)  # fmt: skip
    path = capture(ioc)
    with h5py.File(path, "r") as f:
        sim = dict(f["metadata/simulation"].attrs)
        text = []
        f["metadata"].visititems(lambda name, obj: text.extend(map(str, obj.attrs.values())))
    assert int(sim["hidden_state"]) == 1 and sim["hidden_specimen_parameters"] == "thickness"
    described = json.loads(sim["twin_parameters"])
    assert described["specimen"] == {"name": "srtio3", "parameters": {"multislice": True}}
    for secret in ("23.4", "2.34e-08", "2.343"):  # the thickness, given or rendered
        assert not any(secret in t for t in text), secret
    doc = json.loads(truth.read_text())
    assert doc["specimen"]["parameters"]["thickness"] == 23.4e-9
    assert doc["specimen"]["hidden"] == ["thickness"] and doc["hidden_state"] == 1
    assert doc["specimen"]["rendered_thickness"] == pytest.approx(120 * A / 2)
    entry = doc["acquisitions"]["0"]
    assert entry["twin_parameters"]["specimen"]["parameters"]["thickness"] == 23.4e-9
    (tmp_path / "plain").mkdir()
    plain = make(tmp_path / "plain")
    sim = dict(h5py.File(capture(plain), "r")["metadata/simulation"].attrs)
    assert "hidden_specimen_parameters" not in sim and int(sim["hidden_state"]) == 0
    assert json.loads(sim["twin_parameters"])["specimen"] == "srtio3"


def test_the_command_refuses_bad_specimen_parameters(capsys, tmp_path):
    from bluestem.cli import main

    code = main(["ioc", "sim", "--prefix", "PB:", "--data-dir", str(tmp_path),
                 "--specimen-param", "thickness=20", "multislice=true"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "thickness = 20 m is out of range" in err and "nothing served" in err
