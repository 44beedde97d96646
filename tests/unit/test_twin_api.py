"""Twin API: scan geometry, fault schedules, the specimen registry and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

import bluestem.twin as twin_pkg
from bluestem.twin import (
    SPECIMENS,
    DetectorModel,
    FaultSchedule,
    Optics,
    ScanGeometry,
    Twin,
    make_specimen,
)

DET = DetectorModel(shape=(32, 32), pixel_size=55e-6, camera_length=0.055)


def make_twin(**kw):
    args = {"dose_per_frame": 100.0} | kw
    return Twin(Optics(), DET, ScanGeometry(shape=(4, 4)), make_specimen("vacuum"), **args)


def test_public_api_is_exported():
    for name in ("electron_wavelength", "interaction_constant", "Optics", "DetectorModel",
                 "ScanGeometry", "SPECIMENS", "make_specimen", "FaultSchedule",
                 "Twin"):  # fmt: skip
        assert name in twin_pkg.__all__


def test_scan_positions_are_centred_with_the_step():
    scan = ScanGeometry(shape=(3, 4), step=(2e-10, 1e-10))
    pos = scan.positions()
    assert pos.shape == (3, 4, 2) and pos.dtype == np.float64
    assert np.allclose(pos.mean((0, 1)), 0.0)
    assert np.allclose(np.diff(pos[:, 0, 0]), 2e-10)
    assert np.allclose(np.diff(pos[0, :, 1]), 1e-10)
    assert scan.size == 12


def test_scan_rotation_by_90_degrees_maps_x_to_y():
    scan = ScanGeometry(shape=(1, 3), step=(1e-10, 1e-10), rotation=math.pi / 2)
    pos = scan.positions()[0]
    assert np.allclose(pos[:, 0], [-1e-10, 0.0, 1e-10])
    assert np.allclose(pos[:, 1], 0.0, atol=1e-25)


def test_scan_from_fov():
    scan = ScanGeometry.from_fov((64, 32), (6.4e-9, 1.6e-9), rotation=0.1, flyback=1e-4)
    assert scan.step == pytest.approx((1e-10, 5e-11))
    assert scan.shape == (64, 32)
    assert scan.rotation == 0.1 and scan.flyback == 1e-4


@pytest.mark.parametrize(
    ("kw", "word"),
    [
        ({"shape": (0, 4)}, "shape"),
        ({"step": (1e-10, -1e-10)}, "step"),
        ({"flyback": -1.0}, "flyback"),
    ],
)
def test_scan_rejects_bad_input(kw, word):
    with pytest.raises(ValueError, match=word):
        ScanGeometry(**kw)


def test_fault_schedule_parse_and_round_trip():
    schedule = FaultSchedule.parse("drop=5,17,300-302; late=40:0.2,41:1.5")
    assert schedule.dropped == frozenset({5, 17, 300, 301, 302})
    assert dict(schedule.late) == {40: 0.2, 41: 1.5}
    assert FaultSchedule.parse(schedule.to_spec()) == schedule
    assert not FaultSchedule.parse("")
    assert FaultSchedule.parse("late=3:0") == FaultSchedule(late={3: 0.0})


@pytest.mark.parametrize(
    "spec",
    [
        "drop",
        "drop=",
        "drop=x",
        "drop=-3",
        "drop=9-2",
        "late=4",
        "late=4:-1",
        "late=4:abc",
        "stall=3",
    ],
)
def test_fault_schedule_rejects_bad_spec(spec):
    with pytest.raises(ValueError, match=r"fault|clause|delay|index"):
        FaultSchedule.parse(spec)


def test_twin_carries_the_fault_schedule():
    schedule = FaultSchedule.parse("drop=1")
    assert make_twin(faults=schedule).faults is schedule
    assert not make_twin().faults


def test_registry_lists_the_specimens():
    names = {"vacuum", "srtio3", "phase-ramp", "nanoparticles", "grains"}
    assert names <= set(SPECIMENS)
    for name in names:
        assert make_specimen(name).parameters()["name"] == name
    with pytest.raises(ValueError, match=r"'graphene'.*grains.*nanoparticles.*phase-ramp"):
        make_specimen("graphene")
    with pytest.raises(ValueError, match="stall"):
        FaultSchedule.parse("stall=3")
    with pytest.raises(ValueError, match="bad parameters"):
        make_specimen("srtio3", colour="blue")


def test_detector_properties():
    det = DetectorModel(shape=(256, 128), counter_depth=24, binning=4)
    assert det.frame_shape == (64, 32)
    assert det.dtype == np.uint32
    assert det.max_count == 2**24 - 1
    assert det.angle_per_pixel == pytest.approx(4 * 55e-6 / 0.1)


def test_negative_dose_is_rejected():
    with pytest.raises(ValueError, match=r"dose_per_frame.*\[0, 1e\+?12\].*-5"):
        make_twin(dose_per_frame=-5.0)


def test_bad_counter_depth_is_rejected():
    with pytest.raises(ValueError, match=r"counter_depth.*\[1, 6, 12, 24\].*7"):
        DetectorModel(counter_depth=7)


def test_binning_must_divide_the_shape():
    with pytest.raises(ValueError, match=r"binning 3.*\(128, 128\)"):
        DetectorModel(binning=3)


def test_bad_optics_are_rejected():
    with pytest.raises(ValueError, match="convergence_semi_angle"):
        Optics(convergence_semi_angle=0.0)
    with pytest.raises(ValueError, match="high_tension"):
        Optics(high_tension=-1.0)


def test_render_range_is_checked():
    tw = make_twin()
    assert tw.render(0, 16).shape == (16, 32, 32)
    assert tw.render(5, 0).shape == (0, 32, 32)
    with pytest.raises(ValueError, match=r"first \+ count <= 16"):
        tw.render(10, 7)
    with pytest.raises(ValueError, match="shape"):
        tw.render_at(np.zeros((3, 3)), np.arange(3))
    with pytest.raises(ValueError, match=">= 0"):
        tw.render_at(np.zeros((2, 2)), np.array([0, -1]))


def test_bad_specimen_parameters_name_the_value():
    with pytest.raises(ValueError, match=r"thickness.*-1"):
        make_specimen("srtio3", thickness=-1e-9)
    with pytest.raises(ValueError, match="deflection"):
        make_specimen("phase-ramp", deflection=(1.0,))
    with pytest.raises(ValueError, match="radius"):
        make_specimen("nanoparticles", radius=(3e-9, 1e-9))
    with pytest.raises(ValueError, match="strain"):
        make_specimen("grains", strain=0.9)
